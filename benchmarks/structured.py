"""The structured path (issue 18 stage 3), measured: ``python -m benchmarks.structured`` (or ``python -m benchmarks
structured``) writes benchmarks/STRUCTURED.md and .json.

Models written with the vector notation: ICA log cosh −Σ_k log cosh((Wx)_k) (W d × d) at d = 8, 32, 64, 128, 256
(N = 1e6 for d ≤ 64, 1e5 beyond) and the full Gaussian −(x − μ)ᵀP(x − μ)/2 (P symmetric) at d = 32, N = 1e6.
For each: value_and_grad of symsm's structured path (the LLVM block executor), symsm's scalar path (path="graph",
where its derivation is feasible), JAX (float64, jit) with the score and ∂ᵢ² log f written by hand in the same
process, and the roofline 10·d²·N flops / the peak matrix-product throughput measured in the same run (the
larger of numpy's 1024² GEMM and symsm's FMA loop on all threads, wall; per core for the CPU-time roofline).
Wall and CPU time (process CPU, all threads) are both medians, with the load average before each measurement:
the machine is shared. Then, in new processes: model → first value_and_grad on an empty cache (d = 128, 256),
the same warm (d = 128), and the peak extra memory of one call at d = 256 (VmHWM after clear_refs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .block_kernels import fma_peak, jax_ica, load, paired_roofline, timed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

ICA = ((8, 1_000_000), (32, 1_000_000), (64, 1_000_000), (128, 100_000), (256, 100_000))
GAUSS = ((32, 1_000_000),)
SCALAR_MAX_D = 32  # the scalar derivation beyond this takes minutes


def ica_model(d: int) -> Any:
    import symsm

    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    return symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name=f"ica_vec_{d}")


def gauss_model(d: int) -> Any:
    import symsm

    x = symsm.data_vector("x", d)
    P = symsm.param_symmetric("P", d)
    mu = symsm.param_vector("mu", d)
    return symsm.Model(-(x - mu).T @ P @ (x - mu) / 2, x, [P, mu], name=f"gauss_vec_{d}")


def ica_theta(d: int) -> np.ndarray:
    rng = np.random.default_rng(d)
    return (np.eye(d) + 0.05 * rng.standard_normal((d, d))).ravel()


def gauss_theta(d: int) -> np.ndarray:
    rng = np.random.default_rng(d)
    A = 0.1 * rng.standard_normal((d, d)) / np.sqrt(d)
    P = np.eye(d) + (A + A.T) / 2
    return np.concatenate([P[np.triu_indices(d)], 0.1 * rng.standard_normal(d)])


def jax_gauss(d: int, n: int) -> Any:
    import jax.numpy as jnp

    from .baselines import jax_value_and_grad

    iu = np.triu_indices(d)
    m = len(iu[0])

    def integrand(th: Any, X: Any) -> Any:  # score −P(x − μ), ∂ᵢ² log f = −P_ii
        U = jnp.zeros((d, d)).at[iu].set(th[:m])
        P = U + U.T - jnp.diag(jnp.diagonal(U))
        S = -(X - th[m:]) @ P
        return -jnp.trace(P) + 0.5 * jnp.sum(S * S, axis=1)

    return jax_value_and_grad(None, d, n, "hand", integrand)


def _rel(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> float:
    ga, gb = np.asarray(a[1], dtype=float), np.asarray(b[1], dtype=float)
    return max(abs(a[0] - b[0]) / max(abs(b[0]), 1e-300), float(np.max(np.abs(ga - gb)) / np.max(np.abs(gb))))


def peak() -> dict[str, float]:
    """Matrix-product throughput: numpy's GEMM (1024², wall and CPU) and symsm's FMA loop (all threads, per core)."""
    A = np.random.default_rng(0).standard_normal((1024, 1024))
    wall, cpu, ld = timed(lambda: A @ A, 5)
    flops = 2 * 1024**3
    fma = fma_peak("float64")
    return {
        "numpy_gflops": flops / wall / 1e9, "numpy_gflops_cpu": flops / cpu / 1e9, "load": ld,
        "fma_all_threads_gflops": fma["all_threads"], "fma_per_core_gflops": fma["per_core"],
        "wall_gflops": max(flops / wall / 1e9, fma["all_threads"]),
        "core_gflops": max(fma["per_core"], flops / cpu / 1e9),
    }  # fmt: skip


def _program_flops(model: Any) -> int:
    """Flops a row in the matrix products of the value_and_grad program symsm runs (after its rewrites)."""
    from symsm.derive.derivation import Derivation
    from symsm.ir.blocks import build_block_programs, flops_per_row

    programs = build_block_programs(Derivation(model, path="structured").structured, model)
    return flops_per_row(programs["value_and_grad"])["matmul"]


def measure(family: str, d: int, n: int, repeat: int, pk: dict[str, float], jax_on: bool) -> dict[str, Any]:
    import jax

    model = ica_model(d) if family == "ica" else gauss_model(d)
    theta = ica_theta(d) if family == "ica" else gauss_theta(d)
    X = np.random.default_rng(1).standard_normal((n, d))
    flops = 10 * d * d * n
    row: dict[str, Any] = {"model": family, "d": d, "N": n, "P": model.n_params}
    t = time.perf_counter()
    structured = model.compile(path="structured")
    ref = structured.value_and_grad(theta, X)
    row["structured_first_s"] = time.perf_counter() - t
    wall, cpu, ld = timed(lambda: structured.value_and_grad(theta, X), repeat)
    row.update(ms=1e3 * wall, cpu_ms=1e3 * cpu, load=ld)
    row["roofline_ms"] = 1e3 * flops / (pk["wall_gflops"] * 1e9)
    row["roofline_cpu_ms"] = 1e3 * flops / (pk["core_gflops"] * 1e9)
    row["program_flops_per_row"] = _program_flops(model)  # the rewritten program's products (symsm/ir/block_passes)
    if family == "ica" and d >= 32:  # the roofline target: each call against the FMA peak measured right after it
        row["paired"] = paired_roofline(lambda: structured.value_and_grad(theta, X), flops, repeat)
    numpy_ref = model.compile(path="structured", backend="numba-python")
    small = X[:20_000]
    row["numpy_executor_rel"] = _rel(structured.value_and_grad(theta, small), numpy_ref.value_and_grad(theta, small))
    if d <= SCALAR_MAX_D:
        t = time.perf_counter()
        scalar = model.compile(path="graph")
        sv = scalar.value_and_grad(theta, X)
        row["scalar_first_s"] = time.perf_counter() - t
        sw, sc, sl = timed(lambda: scalar.value_and_grad(theta, X), repeat)
        row.update(scalar_ms=1e3 * sw, scalar_cpu_ms=1e3 * sc, scalar_load=sl, scalar_rel=_rel(ref, sv))
    print(row, flush=True)
    if jax_on:
        vg = jax_ica(d, n) if family == "ica" else jax_gauss(d, n)
        th, Xj = jax.numpy.asarray(theta), jax.numpy.asarray(X)
        jv = vg(th, Xj)
        jax.block_until_ready(jv)
        jw, jc, jl = timed(lambda: jax.block_until_ready(vg(th, Xj)), repeat)
        row.update(jax_ms=1e3 * jw, jax_cpu_ms=1e3 * jc, jax_load=jl)
        row["jax_rel"] = _rel(ref, (float(jv[0]), np.asarray(jv[1])))
        row["speedup_wall"], row["speedup_cpu"] = jw / wall, jc / cpu
    print(row, flush=True)
    return row


_CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
c0 = time.process_time()
import numpy as np
import symsm
from symsm.core import cache
sys.path.insert(0, {root!r})
from benchmarks.structured import ica_model, ica_theta
d, n, mode = {d}, {n}, {mode!r}
t1 = time.perf_counter()
model = ica_model(d)
loss = model.compile()
X = np.random.default_rng(1).standard_normal((n, d))
theta = ica_theta(d)
out = {{"path": loss.derivation_path, "import_s": t1 - t0}}
if mode == "memory":
    loss.value_and_grad(theta, X[:1000])
    from benchmarks.subproc import _reset_peak, _status_kib
    exact = _reset_peak()
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    loss.value_and_grad(theta, X)
    out["call_s"] = time.perf_counter() - t
    out["extra_bytes"] = (_status_kib("VmHWM") - before) * 1024
    out["exact"] = exact
    out["input_bytes"] = X.nbytes
else:
    t2 = time.perf_counter()
    loss.value_and_grad(theta, X)
    t3 = time.perf_counter()
    out.update(model_to_first_s=t3 - t1, first_call_s=t3 - t2, total_with_import_s=t3 - t0,
               cpu_s=time.process_time() - c0, events=[e.kind for e in cache.events()])
print("RESULT " + json.dumps(out))
"""


def child(d: int, n: int, mode: str, cache_dir: str) -> dict[str, Any]:
    env = dict(os.environ, SYMSM_CACHE_DIR=cache_dir, PYTHONPATH=str(ROOT))
    code = _CHILD.format(root=str(ROOT), d=d, n=n, mode=mode)
    ld = load()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[7:])
            res.update(d=d, N=n, mode=mode, load=ld)
            print(res, flush=True)
            return res
    raise RuntimeError(f"child failed: {proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N / 10, 2 repeats")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--no-child", action="store_true", help="skip the new-process measurements")
    parser.add_argument("--dims", help="ICA dimensions (default 8,32,64,128,256)")
    parser.add_argument("--out", default=str(HERE / "STRUCTURED.md"))
    parser.add_argument("--from-json", help="only re-render the Markdown from a results JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        Path(args.out).write_text(report(json.loads(Path(args.from_json).read_text())))
        return 0
    repeat = 2 if args.quick else args.repeat
    scale = 10 if args.quick else 1
    import jax

    jax.config.update("jax_enable_x64", True)
    from symsm.core.threads import threads

    dims = [int(v) for v in args.dims.split(",")] if args.dims else [d for d, _ in ICA]
    res: dict[str, Any] = {"threads": threads(), "cpus": os.cpu_count(), "load_start": load(), "quick": args.quick}
    res["uptime_start"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    res["peak"] = peak()
    print(res["peak"], flush=True)
    res["rows"] = []
    for d, n in ICA:
        if d in dims:
            res["rows"].append(measure("ica", d, n // scale, repeat, res["peak"], not args.no_jax))
    for d, n in GAUSS:
        res["rows"].append(measure("gauss", d, n // scale, repeat, res["peak"], not args.no_jax))
    res["children"] = []
    if not args.no_child:
        for d in (128, 256):
            with tempfile.TemporaryDirectory() as cache_dir:
                res["children"].append(child(d, 1000, "cold", cache_dir))
                if d == 128:
                    res["children"].append(child(d, 1000, "warm", cache_dir))
                else:
                    res["children"].append(child(d, 100_000, "memory", cache_dir))
    res["load_end"] = load()
    res["uptime_end"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    Path(args.out).with_suffix(".json").write_text(json.dumps(res, indent=1))
    Path(args.out).write_text(report(res))
    print(f"wrote {args.out}")
    return 0


def _f(v: Any, fmt: str = ".0f") -> str:
    return "—" if v is None else format(v, fmt)


def report(res: dict[str, Any]) -> str:
    pk = res["peak"]
    lines = [
        "# The structured path, measured (issue 18 stage 3)",
        "",
        "`python -m benchmarks.structured` (this file and STRUCTURED.json). value_and_grad, float64, "
        f"{res['threads']} symsm threads on {res['cpus']} CPUs. The machine is shared: `uptime` at the start: "
        f"`{res['uptime_start']}`, at the end: `{res['uptime_end']}`. Times are medians; *CPU* is the process's "
        "CPU time (all threads), which other processes' load does not inflate; wall time does. Everything below "
        "was measured in this run; nothing is projected.",
        "",
        f"Peak matrix-product throughput (same run): numpy 1024² GEMM {pk['numpy_gflops']:.1f} GFLOP/s wall "
        f"({pk['numpy_gflops_cpu']:.1f} per CPU-second), symsm's FMA loop {pk['fma_all_threads_gflops']:.1f} "
        f"GFLOP/s on all threads, {pk['fma_per_core_gflops']:.1f} per core. Roofline = 10·d²·N / the larger "
        "(wall) or / the per-core peak (CPU).",
        "",
        "| model | d | N | structured ms (CPU ms) | scalar ms (CPU ms) | JAX hand ms (CPU ms) | vs JAX wall / CPU "
        "| roofline ms (CPU ms) | × roofline wall / CPU | load | rel. diff scalar / JAX / numpy exec. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        scalar = f"{_f(r.get('scalar_ms'))} ({_f(r.get('scalar_cpu_ms'))})" if "scalar_ms" in r else "not run"
        jax = f"{_f(r.get('jax_ms'))} ({_f(r.get('jax_cpu_ms'))})" if "jax_ms" in r else "not run"
        sp = f"{_f(r.get('speedup_wall'), '.1f')}× / {_f(r.get('speedup_cpu'), '.1f')}×" if "jax_ms" in r else "—"
        rel = " / ".join(_f(r.get(k), ".0e") for k in ("scalar_rel", "jax_rel", "numpy_executor_rel"))
        lines.append(
            f"| {'ICA' if r['model'] == 'ica' else 'Gaussian (full P)'} | {r['d']} | {r['N']:.0e} "
            f"| {r['ms']:.0f} ({r['cpu_ms']:.0f}) | {scalar} | {jax} | {sp} "
            f"| {r['roofline_ms']:.0f} ({r['roofline_cpu_ms']:.0f}) "
            f"| {r['ms'] / r['roofline_ms']:.1f} / {r['cpu_ms'] / r['roofline_cpu_ms']:.1f} "
            f"| {r['load']:.1f} | {rel} |"
        )
    lines += ["", "First calls in the same process (compile + first value_and_grad on the full N):", ""]
    for r in res["rows"]:
        extra = f", scalar path {r['scalar_first_s']:.1f} s" if "scalar_first_s" in r else ""
        lines.append(f"* {r['model']} d = {r['d']}: structured {r['structured_first_s']:.1f} s{extra}")
    if res.get("children"):
        lines += ["", "New processes (N = 1000 rows unless noted; `model.compile()` with the default path):", ""]
        lines.append("| d | what | path | model → first value_and_grad s | import s | load | events |")
        lines.append("|---|---|---|---|---|---|---|")
        for c in res["children"]:
            if c["mode"] == "memory":
                lines.append(
                    f"| {c['d']} | peak extra memory of one call, N = {c['N']:.0e} "
                    f"(input {c['input_bytes'] / 2**20:.0f} MiB) | {c['path']} "
                    f"| {c['extra_bytes'] / 2**20:.1f} MiB (call {c['call_s']:.2f} s) | "
                    f"{c['import_s']:.2f} | {c['load']:.1f} | — |"
                )
            else:
                events = ", ".join(sorted(set(c["events"])))
                lines.append(
                    f"| {c['d']} | {c['mode']} cache | {c['path']} | {c['model_to_first_s']:.2f} "
                    f"| {c['import_s']:.2f} | {c['load']:.1f} | {events} |"
                )
    lines += ["", *targets(res), "", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "Notes:",
    "",
    "* The full Gaussian's integrand is quadratic in x, so both symsm paths replace the rows by 2d moment-matching "
    "points (one pass of moments, symsm/runtime/moments.py): that is why it beats the 10·d²·N roofline, which "
    "assumes a full pass of the block program.",
    "* Wall time swings with the other processes on the machine: the load average is in the header and each "
    "table row; CPU time and the roofline ratios paired with a peak measured right after each call move less. "
    "benchmarks/STRUCTURED_QUIET.md and STRUCTURED_RUN2.md are earlier runs (before the rewrite passes).",
    "* JAX runs its own thread pool (XLA); its CPU time includes it. symsm's CPU time is the process's, all threads.",
    "* The scalar path (path='graph') is not run for d > 32: its derivation and compilation take minutes there "
    "(README, Scale in dimension: 255 s at d = 128).",
    "* The derived ICA program, after the rewrite passes of symsm/ir/block_passes.py, computes 7d² + d flops a row "
    "in products (X·Wᵀ, e0·(W·Wᵀ), the symmetric Gram of e0, e7ᵀ·X) where the lowered program and the "
    "hand-assembled one of BLOCKS.md compute five products, 10d²; the roofline keeps the issue's 10d².",
    "* The block kernels and the FMA loop use 512-bit vectors where the host has AVX-512 (else 256-bit): the roofline "
    "is the peak of the vectors the kernels use. numpy's GEMM counts too: the larger of the two is the roofline.",
]


def targets(res: dict[str, Any]) -> list[str]:
    """The issue's targets, judged on this run's numbers."""
    rows = {(r["model"], r["d"]): r for r in res["rows"]}
    out = ["Targets (issue 18), judged on this run:", ""]

    def speed(key: tuple[str, int], goal: float, label: str) -> None:
        r = rows.get(key)
        if r is None or "speedup_wall" not in r:
            out.append(f"* {label}: not measured")
            return
        ok = "holds" if min(r["speedup_wall"], r["speedup_cpu"]) >= goal else "missed"
        out.append(f"* {label}: {r['speedup_wall']:.1f}× wall, {r['speedup_cpu']:.1f}× CPU — {ok}")

    speed(("ica", 32), 3, "≥ 3× hand JAX, ICA d = 32 (N = 1e6)")
    speed(("gauss", 32), 3, "≥ 3× hand JAX, full Gaussian d = 32 (N = 1e6)")
    speed(("ica", 128), 3, "≥ 3× hand JAX, ICA d = 128 (N = 1e5)")
    speed(("ica", 8), 3, "d = 8 stays ≥ 3× hand JAX")
    for (model, d), r in sorted(rows.items()):
        if d >= 32 and model == "ica":
            ratio = r["cpu_ms"] / r["roofline_cpu_ms"]
            wall = r["ms"] / r["roofline_ms"]
            paired = r.get("paired")
            if paired:  # each call against the peak measured right after it (benchmarks/block_kernels.py)
                ok = "holds" if paired["cpu"] <= 2 else "missed"
                used = f"{paired['cores_used']:.2f} of {paired['threads']} cores"
                walls = (
                    f"{paired['wall_paired']:.2f}× (best {paired['wall_paired_best']:.2f}×)"
                    if "wall_paired" in paired
                    else "—"
                )
                out.append(
                    f"* within 2× of the roofline, ICA d = {d}: {paired['cpu']:.2f}× (CPU, median of calls each "
                    f"against the FMA peak measured right after it; best {paired['cpu_best']:.2f}×); wall against the "
                    f"all-threads peak right after each call {walls}; wall × threads against the one-thread peak "
                    f"{paired['wall']:.2f}× (the calls got {used}: on a quiet machine ≈ CPU) — {ok}; "
                    f"against the run's best peak: {ratio:.2f}× (CPU), {wall:.2f}× (wall)"
                )
                ratio = paired["cpu"]
            else:
                ok = "holds" if ratio <= 2 else "missed"
                out.append(f"* within 2× of the roofline, ICA d = {d}: {ratio:.1f}× (CPU), {wall:.1f}× (wall) — {ok}")
            own = r.get("program_flops_per_row")
            if own:  # the program's own flop count: the roofline of the products it actually computes
                frac = own / (10 * d * d)
                out.append(
                    f"  (the program computes {own / (d * d):.2f}d² flops a row in products: {ratio / frac:.1f}× (CPU) "
                    "the roofline of its own flops)"
                )
    worst = max(max(r.get(k, 0.0) or 0.0 for k in ("scalar_rel", "jax_rel", "numpy_executor_rel")) for r in res["rows"])
    out.append(
        f"* values/gradients equal to 1e-10 relative: worst {worst:.0e} — {'holds' if worst <= 1e-10 else 'missed'}"
    )
    for c in res.get("children", []):
        if c["mode"] == "cold":
            goal = 30 if c["d"] == 128 else 90
            ok = "holds" if c["model_to_first_s"] <= goal else "missed"
            out.append(
                f"* empty cache, model → first value_and_grad, d = {c['d']}: {c['model_to_first_s']:.1f} s "
                f"(+ {c['import_s']:.1f} s import) ≤ {goal} s — {ok}"
            )
        elif c["mode"] == "warm":
            ok = "holds" if c["model_to_first_s"] <= 2 else "missed"
            out.append(
                f"* warm, new process, d = 128: {c['model_to_first_s']:.1f} s (+ {c['import_s']:.1f} s import; "
                f"{c['total_with_import_s']:.1f} s in all) ≤ 2 s — {ok} (without the import)"
            )
        else:
            mib = c["extra_bytes"] / 2**20
            out.append(
                f"* peak extra memory of a call at d = 256: {mib:.1f} MiB ≤ 64 MB — "
                f"{'holds' if mib <= 61 else 'missed'}"
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
