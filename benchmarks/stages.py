"""Stage timings from model to compiled kernel, and how each stage grows with the dimension d.

    python -m benchmarks.stages                      # ICA log cosh and full Gaussian, d = 4, 8, 16, 32
    python -m benchmarks.stages --d 4 8 --path sympy # the pre-graph pipeline, for comparison
    python -m benchmarks.stages --d 128 --models ica --timeout 1800

Each (model, d) runs in a fresh process with an empty cache directory (a cold start), timing: model
construction; derivatives (score, ∂ᵢ² log f, integrand); kernel IR (θ-gradient, hoisting, CSE / hash-consing,
invariant motion); printing (three-address tables); rendering (template); importing the generated module;
building the LLVM IR of value_and_grad (symsm/backends/llvm/kernels.py) and compiling it to machine code
(symsm/backends/llvm/native.py); the first value_and_grad on N = 1000 rows; and then a warm start (a new process,
cache filled: import, cache hit, machine code loaded, first value_and_grad). Growth exponents are
least-squares slopes of log time against log d. `--path` chooses how kernels are built: "auto" (what
symsm does), "sympy" or "graph". Results go to benchmarks/STAGES.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The model of size d (`kind`, `d` defined) and the rows of the first call, shared by the cold and warm
# children: `_with_shared` puts them where the children say # <MODEL> and # <ROWS>.
MODEL = r"""
if kind == "ica":
    x = sp.symbols(f"x0:{d}", real=True); W = symsm.matrix("W", d, d); y = W * sp.Matrix(x)
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), x, {"W": W}, name=f"ica_{d}")
else:
    xv = sp.Matrix(sp.symbols(f"x0:{d}", real=True)); mu = sp.Matrix(sp.symbols(f"mu0:{d}", real=True))
    M = symsm.symmetric("M", d)
    model = symsm.Model(-((xv - mu).T * M * (xv - mu))[0, 0] / 2, list(xv), {"mu": mu, "M": M}, name=f"gauss_{d}")
"""
ROWS = r"""
rng = np.random.default_rng(0)
X = rng.standard_normal((1000, d)); theta = model.default_theta() + 0.1 * rng.standard_normal(model.n_params)
"""

CHILD = r"""
import json, sys, time
t_start = time.perf_counter()
import numpy as np, sympy as sp
import symsm
from symsm.core import cache
t_import = time.perf_counter()
kind, d, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {"import": t_import - t_start}
t = time.perf_counter()
# <MODEL>
out["construct"] = time.perf_counter() - t
from symsm.ir import kernels as K
from symsm.ir.graph_kernels import ModelGraph, build_graph_kernels
der = model.derive()
t = time.perf_counter()
mg = ModelGraph(model)
use_sympy = path == "sympy" or (path == "auto" and len(mg.graph.reachable([mg.log_f])) * d <= K.SYMPY_BUDGET)
if use_sympy:
    der.score; der.hessian_diag; der.objective
out["derivatives"] = time.perf_counter() - t
out["built_with"] = "sympy" if use_sympy else "graph"
t = time.perf_counter()
kernels = K.build_kernels_sympy(der) if use_sympy else build_graph_kernels(model, mg)
kernels.data_degree = mg.degree_in_data()
out["kernel_ir"] = time.perf_counter() - t
from symsm.backends.llvm import generate as numba_llvm
from symsm.runtime.loader import generator_digest
calls = {"render": 0.0}
real_render = numba_llvm.render
def timed_render(*a, **k):
    s = time.perf_counter(); r = real_render(*a, **k); calls["render"] += time.perf_counter() - s; return r
numba_llvm.render = timed_render
from symsm.runtime.compiled import cache_key_for
from symsm.derive.objectives import Exact
# the key model.compile() uses, so the warm run below is a real cache hit ("auto" only; others get their own)
key = cache_key_for(model, "llvm", np.dtype(np.float64), Exact()) if path == "auto" else cache.cache_key(
    stage_probe=model.canonical(), path=path, generator=generator_digest())
t = time.perf_counter()
src = numba_llvm.generate_llvm_source(der, kernels, dtype=np.float64, cache_key=key)
out["printing"] = time.perf_counter() - t - calls["render"]
out["rendering"] = calls["render"]
t = time.perf_counter()
module, _, _ = cache.load_or_generate(key, lambda: src)
out["import_module"] = time.perf_counter() - t
# <ROWS>
module.value_and_grad.functions()  # LLVM IR, machine code, loading: timed by the kernel itself
out["llvm_ir"] = module.value_and_grad.timings["llvm_ir"]
out["machine_code"] = module.value_and_grad.timings["machine_code"]
t = time.perf_counter()
module.value_and_grad(theta, X)
out["first_call"] = time.perf_counter() - t
# What a user's first call needs beyond the value_and_grad module: loss.value_and_grad may route through other
# generated modules (the moments pass of models quadratic in x), generated and compiled here on first use.
t = time.perf_counter()
model.compile().value_and_grad(theta, X)
out["other_modules"] = time.perf_counter() - t
out["total"] = time.perf_counter() - t_start
out["body_ops"] = module.value_and_grad.ops
out["P"] = model.n_params
print("RESULT " + json.dumps(out))
"""

WARM = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, sympy as sp, symsm
from symsm.core import cache
t_import = time.perf_counter() - t0
kind, d = sys.argv[1], int(sys.argv[2])
# <MODEL>
loss = model.compile()
# <ROWS>
loss.value_and_grad(theta, X)
kinds = [e.kind for e in cache.events()]
total = time.perf_counter() - t0
print("RESULT " + json.dumps({"warm_total": total, "warm_after_import": total - t_import, "events": kinds}))
"""


def _with_shared(code: str) -> str:
    return code.replace("# <MODEL>\n", MODEL.lstrip("\n")).replace("# <ROWS>\n", ROWS.lstrip("\n"))


CHILD, WARM = _with_shared(CHILD), _with_shared(WARM)

STAGES = [
    "construct",
    "derivatives",
    "kernel_ir",
    "printing",
    "rendering",
    "import_module",
    "llvm_ir",
    "machine_code",
    "first_call",
    "other_modules",
]


def run_child(code: str, args: list[str], cache_dir: str, timeout: float) -> dict:
    env = {**os.environ, "SYMSM_CACHE_DIR": cache_dir}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}


def slope(ds: list[int], ts: list[float]) -> float | None:
    pts = [(math.log(d), math.log(t)) for d, t in zip(ds, ts, strict=True) if t and t > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / den if den else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ica", "gauss"], choices=["ica", "gauss"])
    parser.add_argument("--d", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--path", default="auto", choices=["auto", "sympy", "graph"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per (model, d) (default 900)")
    parser.add_argument("--out", default=str(HERE / "STAGES.md"))
    args = parser.parse_args(argv)
    rows = []
    for kind in args.models:
        for d in args.d:
            with tempfile.TemporaryDirectory(prefix="symsm-stages-") as cache_dir:
                cold = run_child(CHILD, [kind, str(d), args.path], cache_dir, args.timeout)
                warm = run_child(WARM, [kind, str(d)], cache_dir, args.timeout) if "error" not in cold else {}
            rows.append({"model": kind, "d": d, **cold, **warm})
            print(json.dumps(rows[-1]), flush=True)
    lines = [
        f"# Stage timings (path: {args.path})",
        "",
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end of the run; "
        f"python {sys.version.split()[0]}. Seconds, cold cache, fresh process per row; cold total includes "
        "importing symsm; warm: a new process with the cache filled, from import (or from model construction) to the "
        "first value_and_grad; its cache events should all be loads ('loaded': the generated module, 'machine code "
        "loaded': a kernel's object file).",
        "",
        "| model | d | P | built with | " + " | ".join(STAGES) + " | cold total | warm total | warm after import "
        "| warm cache events | body ops |",
        "|---|---|---|---|" + "---|" * len(STAGES) + "---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['d']} | | | {r['error']} |")
            continue
        cells = " | ".join(f"{r.get(s, float('nan')):.2f}" for s in STAGES)
        lines.append(
            f"| {r['model']} | {r['d']} | {r['P']} | {r['built_with']} | {cells} | {r['total']:.2f} | "
            f"{r.get('warm_total', float('nan')):.2f} | {r.get('warm_after_import', float('nan')):.2f} | "
            f"{' '.join(r.get('events', [])) or '—'} | {r['body_ops']} |"
        )
    lines += ["", "Growth exponents (slope of log time against log d):", ""]
    lines.append("| model | " + " | ".join(STAGES) + " |")
    lines.append("|---|" + "---|" * len(STAGES))
    for kind in args.models:
        sel = [r for r in rows if r["model"] == kind and "error" not in r]
        ds = [r["d"] for r in sel]
        exps = []
        for s in STAGES:
            k = slope(ds, [r[s] for r in sel])
            exps.append("—" if k is None else f"{k:.1f}")
        lines.append(f"| {kind} | " + " | ".join(exps) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"done in {time.perf_counter() - t0:.0f} s")
    raise SystemExit(code)
