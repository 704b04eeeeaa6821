"""The structured path's start-up at large d: model → first value_and_grad on an empty cache, ICA log cosh.

    python -m benchmarks.structured_start                       # d = 128 and 256
    python -m benchmarks.structured_start --d 32 --n 1e5 --repeat 3

The model is log f = −2 Σₖ log cosh((W x)ₖ + bₖ), W a d × d parameter matrix, written with vectors
(symsm.data_vector, symsm.param_matrix): nothing is expanded into scalars. Stages, each timed on a fresh
private cache directory: construction, the structured derivation (forward Laplacian and reverse mode), the
block programs, compile (generation of the module through the cache), the first value_and_grad on N rows,
and then the median of `--repeat` more calls (the numpy reference executor: exact, not fast). The flop
count is the block program's per row (matrix products and the rest) against the ≈ 10·d² of the minimal
work (5 matrix products of d × d per row). The scalar path took 255 s to the first value at d = 128.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def run(d: int, n: int, repeat: int) -> dict[str, float | int]:
    import symsm
    from symsm.ir.blocks import build_block_programs, flops_per_row

    out: dict[str, float | int] = {"d": d, "N": n}
    t = time.perf_counter()
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    b = symsm.param_vector("b", d)
    model = symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(W @ x + b))), x, [W, b], name=f"ica_{d}")
    out["construction_s"] = time.perf_counter() - t
    t = time.perf_counter()
    der = model.derive(path="structured")
    out["derivation_s"] = time.perf_counter() - t
    t = time.perf_counter()
    programs = build_block_programs(der.structured, model)
    out["block_programs_s"] = time.perf_counter() - t
    flops = flops_per_row(programs["value_and_grad"])
    out["matmul_flops_per_row"] = flops["matmul"]
    out["other_flops_per_row"] = flops["other"]
    out["matmul_flops_over_10d2"] = flops["matmul"] / (10 * d * d)
    t = time.perf_counter()
    loss = model.compile(path="structured", derivation=der)
    out["compile_s"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    theta = model.pack({"W": np.eye(d) + 0.01 * rng.standard_normal((d, d)), "b": np.zeros(d)})
    t = time.perf_counter()
    loss.value_and_grad(theta, X)
    out["first_value_and_grad_s"] = time.perf_counter() - t
    out["model_to_first_value_s"] = sum(
        float(out[k])
        for k in ("construction_s", "derivation_s", "block_programs_s", "compile_s", "first_value_and_grad_s")
    )
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        loss.value_and_grad(theta, X)
        times.append(time.perf_counter() - t)
    out["value_and_grad_median_s"] = float(np.median(times)) if times else float("nan")
    out["expanded"] = int(model.expanded)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--n", type=float, default=1e4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="symsm-structured-") as cache:
        os.environ["SYMSM_CACHE_DIR"] = cache  # an empty cache: generation is part of the start
        for d in args.d:
            r = run(d, int(args.n), args.repeat)
            results.append(r)
            print(
                f"d = {d:4d}  construction {r['construction_s'] * 1e3:7.2f} ms  derivation {r['derivation_s']:.3f} s  "
                f"programs {r['block_programs_s']:.3f} s  compile {r['compile_s']:.3f} s  "
                f"first value_and_grad (N = {r['N']}) {r['first_value_and_grad_s']:.3f} s  "
                f"→ total {r['model_to_first_value_s']:.2f} s; "
                f"median value_and_grad {r['value_and_grad_median_s']:.3f} s; "
                f"matmul flops/row {r['matmul_flops_per_row']} = {r['matmul_flops_over_10d2']:.2f} × 10·d², "
                f"other {r['other_flops_per_row']}; expanded: {bool(r['expanded'])}"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
