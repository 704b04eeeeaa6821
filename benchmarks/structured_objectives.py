"""The structured path's other objectives and domains, measured: ``python -m benchmarks.structured_objectives``.

ICA −Σ_k 2 log cosh((Wx)_k) (W d × d) written with vectors, objectives sliced (one Rademacher direction a row) and
denoising (σ = 0.1, one draw a row) on Rᵈ, the exact objective on [0, ∞)ᵈ ("nonnegative": weighted by h(t) = t²)
and on the sphere (rows normalised), at d = 16 and 32, N = 1e5 rows |N(0, 1)|, float64: value_and_grad — on X,
and on X bound once (`loss.bind(X)`: checked, as a fit's optimiser calls it) — of the structured path
(path="structured", the LLVM block executor) against the scalar path (path="graph", the expression-graph kernels
of the same model's scalar expansion), on the same rows and draws. The warm calls are interleaved A/B rounds in
one process (medians of wall and process CPU time, all threads, with the load average before the rounds); the
model → first value_and_grad times (derivation, code generation, machine code) run each in a new process on an
empty cache. Prints a markdown table (and --json PATH writes the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = {"sliced": {}, "denoising": {"noise_scale": 0.1}, "nonnegative": {}, "sphere": {}}


def _objective(case: str) -> str:
    return "exact" if case in ("nonnegative", "sphere") else case


def _domain(case: str) -> str:
    return case if case in ("nonnegative", "sphere") else "real"


def _rows(n: int, d: int, case: str) -> np.ndarray:
    X = np.abs(np.random.default_rng(1).standard_normal((n, d)))  # (on Rᵈ too: the same rows for every case)
    return X / np.linalg.norm(X, axis=1, keepdims=True) if case == "sphere" else X


_FIRST_CALL = """
import time, numpy as np, symsm
t0 = time.perf_counter(); c0 = time.process_time()
x = symsm.data_vector("x", {d})
W = symsm.param_matrix("W", {d}, {d})
model = symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(W @ x))), x, [W], name="ica_vec_{d}", domain={domain!r})
loss = model.compile(path={path!r}, objective={objective!r}, **{options!r})
X = np.abs(np.random.default_rng(1).standard_normal((1000, {d})))
X = X / np.linalg.norm(X, axis=1, keepdims=True) if {sphere!r} else X
loss.value_and_grad(np.eye({d}).ravel(), X)
print(time.perf_counter() - t0, time.process_time() - c0)
"""


def ica_model(d: int, domain: str = "real") -> Any:
    import symsm

    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    return symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(W @ x))), x, [W], name=f"ica_vec_{d}", domain=domain)


def first_call(d: int, path: str, case: str) -> tuple[float, float]:
    """(wall, CPU) seconds from building the model to its first value_and_grad, in a new process, empty cache."""
    code = _FIRST_CALL.format(
        d=d, path=path, objective=_objective(case), options=OPTIONS[case], domain=_domain(case), sphere=case == "sphere"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "SYMSM_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    wall, cpu = out.stdout.split()[-2:]
    return float(wall), float(cpu)


def measure(d: int, n: int, case: str, repeat: int) -> dict[str, Any]:
    from symsm.derive.objectives import make_objective
    from symsm.derive.structured import derive_structured
    from symsm.ir.blocks import build_block_programs, flops_per_row

    model = ica_model(d, _domain(case))
    objective = _objective(case)
    rng = np.random.default_rng(d)
    theta = (np.eye(d) + 0.05 * rng.standard_normal((d, d))).ravel()
    X = _rows(n, d, case)
    losses = {p: model.compile(path=p, objective=objective, **OPTIONS[case]) for p in ("structured", "graph")}
    results = {p: loss.value_and_grad(theta, X) for p, loss in losses.items()}  # warm-up (machine code)
    ref = results["graph"]
    rel = max(
        abs(results["structured"][0] - ref[0]) / abs(ref[0]),
        float(np.max(np.abs(results["structured"][1] - ref[1])) / np.max(np.abs(ref[1]))),
    )
    # the call on X, and on X bound once (loss.bind: checked, with the draws appended, as a fit's optimiser calls)
    calls = {p: loss.value_and_grad for p, loss in losses.items()}
    bound = {p: loss.bind(X) for p, loss in losses.items()}
    for b in bound.values():
        b.value_and_grad(theta)
    times: dict[str, tuple[list[float], list[float]]] = {
        p: ([], []) for p in [*losses, "bound_structured", "bound_graph"]
    }
    load = os.getloadavg()[0]
    for _ in range(repeat):  # interleaved A/B rounds
        for p in losses:
            for key, fn in (
                (p, lambda p=p: calls[p](theta, X)),
                (f"bound_{p}", lambda p=p: bound[p].value_and_grad(theta)),
            ):
                c, t = time.process_time(), time.perf_counter()
                fn()
                times[key][0].append(time.perf_counter() - t)
                times[key][1].append(time.process_time() - c)
    program = build_block_programs(derive_structured(model, make_objective(objective, **OPTIONS[case])), model)
    flops = flops_per_row(program["value_and_grad"])
    row: dict[str, Any] = {"objective": case, "d": d, "N": n, "load": load, "rel": rel}
    for p in times:
        row[f"{p}_wall_ms"] = 1e3 * statistics.median(times[p][0])
        row[f"{p}_cpu_ms"] = 1e3 * statistics.median(times[p][1])
    row["program_matmul_flops_per_row"] = flops["matmul"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="16,32")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--objectives", default="sliced,denoising,nonnegative,sphere")
    parser.add_argument("--no-first-call", action="store_true", help="skip the model → first call processes")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    for objective in args.objectives.split(","):
        for d in (int(s) for s in args.dims.split(",")):
            row = measure(d, args.n, objective, args.repeat)
            if not args.no_first_call:
                for p in ("structured", "graph"):
                    row[f"{p}_first_wall_s"], row[f"{p}_first_cpu_s"] = first_call(d, p, objective)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"uptime load after: {os.getloadavg()}")
    print(
        "| objective | d | N | structured wall / CPU ms | graph wall / CPU ms | × (CPU) | bound: structured "
        "| bound: graph | × (CPU) | rel. diff | model → first call, structured / graph: wall s (CPU s) | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = (
            f"{r['structured_first_wall_s']:.1f} ({r['structured_first_cpu_s']:.1f}) / "
            f"{r['graph_first_wall_s']:.1f} ({r['graph_first_cpu_s']:.1f})"
            if "graph_first_wall_s" in r
            else "—"
        )
        print(
            f"| {r['objective']} | {r['d']} | {r['N']:.0e} "
            f"| {r['structured_wall_ms']:.1f} / {r['structured_cpu_ms']:.1f} "
            f"| {r['graph_wall_ms']:.1f} / {r['graph_cpu_ms']:.1f} | {r['graph_cpu_ms'] / r['structured_cpu_ms']:.2f} "
            f"| {r['bound_structured_wall_ms']:.1f} / {r['bound_structured_cpu_ms']:.1f} "
            f"| {r['bound_graph_wall_ms']:.1f} / {r['bound_graph_cpu_ms']:.1f} "
            f"| {r['bound_graph_cpu_ms'] / r['bound_structured_cpu_ms']:.2f} "
            f"| {r['rel']:.1e} | {first} | {r['load']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
