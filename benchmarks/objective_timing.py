"""Time per pass of value_and_grad for each score-matching objective, and what it costs to compile.

    python -m benchmarks.objective_timing [--model ica32] [--n 100000] [--repeat 5]
                                          [--objectives exact,sliced,sliced_vr,denoising] [--warm-cache]

For each objective (sliced and sliced_vr with M = 1 Rademacher direction per row, denoising with σ = 0.3 and one
noise draw per row) the model is compiled with `model.compile(objective=...)` into a fresh temporary cache (unless
--warm-cache: then the usual cache, and the numbers are load times), then:

* generate: `compile_model` — derivation on the expression graph, kernel IR, code generation, import;
* first call: the first `value_and_grad(θ, X)`, which includes numba's compilation of that kernel (and the draws:
  N × M·d or N × d numbers from numpy.random.default_rng, made once per N and seed and kept);
* pass: median and min over --repeat further calls (the draws are already made: an optimiser's inner loop).

The data come from the model's own generator in benchmarks/models.py (ICA: Laplace sources, a random mixing
matrix). The machine's load (os.getloadavg) is printed with the table: on a shared machine the numbers are only
as quiet as it is.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPTIONS = {
    "exact": {},
    "sliced": {"n_directions": 1},
    "sliced_vr": {"n_directions": 1},
    "denoising": {"noise_scale": 0.3},
}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} CPUs)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ica32")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--objectives", default=",".join(OPTIONS))
    parser.add_argument("--warm-cache", action="store_true", help="use the usual kernel cache (load, not compile)")
    args = parser.parse_args(argv)
    names = args.objectives.split(",")
    unknown = [n for n in names if n not in OPTIONS]
    if unknown:
        parser.error(f"unknown objectives {unknown}; choose from {list(OPTIONS)}")
    tmp = None
    if not args.warm_cache:
        tmp = tempfile.TemporaryDirectory(prefix="symsm-objective-timing-")
        os.environ["SYMSM_CACHE_DIR"] = tmp.name  # before symsm is imported: every kernel is generated here

    from benchmarks.models import make_model

    bench = make_model(args.model)
    model, theta = bench.model, bench.theta
    X = bench.make_data(args.n, 0)
    cpu = platform.processor() or platform.machine()
    print(f"# {bench.name}: d = {model.dim}, P = {model.n_params}, N = {args.n}, {cpu}")
    print(f"# cache: {'warm (usual location)' if args.warm_cache else 'fresh temporary directory (cold compile)'}")
    print(f"# {_load()} at start")
    rows = []
    for name in names:
        t0 = time.perf_counter()
        loss = model.compile(objective=name, seed=0, **OPTIONS[name])
        generate = time.perf_counter() - t0
        t0 = time.perf_counter()
        value, _ = loss.value_and_grad(theta, X)
        first = time.perf_counter() - t0
        passes = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            loss.value_and_grad(theta, X)
            passes.append(time.perf_counter() - t0)
        rows.append((name, OPTIONS[name], generate, first, statistics.median(passes), min(passes), value))
        print(f"# done {name}: {_load()}", flush=True)
    print()
    print("| objective | options | generate (s) | first call (s) | pass median (ms) | pass min (ms) | J̃(θ) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, options, generate, first, median, best, value in rows:
        opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "—"
        timings = f"{generate:.1f} | {first:.1f} | {median * 1e3:.1f} | {best * 1e3:.1f}"
        print(f"| {name} | {opts} | {timings} | {value:.4f} |")
    print(f"\n# {_load()} at the end")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
