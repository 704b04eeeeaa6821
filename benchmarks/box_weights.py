"""What a box and a capped weight cost per pass of value_and_grad, against the same model on [0, ∞)ᵈ.

    python -m benchmarks.box_weights [--d 10] [--n 200000] [--repeat 15] [--backend llvm]

A Gaussian graphical model log f = −½ xᵀKx + ηᵀx (d coordinates, P = d(d+1)/2 + d parameters) is compiled four
times, on the default derivation path:

* nonnegative: domain "nonnegative", h(t) = t² (the baseline: hᵢ = xᵢ²);
* box_lower: Box(0, ∞), the same domain written as a box (the same expressions: a check that a box costs nothing
  by itself);
* box_two_sided: Box(0, 3), hᵢ = min(xᵢ, 3 − xᵢ)² (one min and a step per coordinate);
* box_capped: Box(0, 3) with h(t) = min(t², 1) (two mins and two steps per coordinate).

Every model sees the same data (|N(0, 1)| clipped into [0, 3]) and θ. The passes are interleaved (one call of each
model in turn, --repeat rounds, after one warm-up call each), so a change in the machine's load hits all of them
alike; the table gives the median wall time, the median process CPU time and the ratio of medians to the baseline,
with the load average (os.getloadavg) before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _models(d: int) -> dict:
    import sympy as sp

    import symsm

    x = sp.symbols(f"x0:{d}", real=True)
    K = symsm.symmetric("K", d)
    eta = sp.symbols(f"eta0:{d}", real=True)
    xv = sp.Matrix(x)
    log_f = -(xv.T * K * xv)[0, 0] / 2 + sum(e * xi for e, xi in zip(eta, x, strict=True))
    params = {"K": K, "eta": list(eta)}

    def model(name: str, domain: object, weight: object = None) -> symsm.Model:
        return symsm.Model(log_f, list(x), params, name=f"bench_{name}_{d}", domain=domain, weight=weight)

    return {
        "nonnegative": model("nonnegative", "nonnegative"),
        "box_lower": model("box_lower", symsm.Box(0, math.inf)),
        "box_two_sided": model("box_two_sided", symsm.Box(0, 3)),
        "box_capped": model("box_capped", symsm.Box(0, 3), "min(t**2, 1)"),
    }


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", default="llvm")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    X = np.clip(np.abs(rng.standard_normal((args.n, args.d))), 0.0, 3.0)
    models = _models(args.d)
    losses = {name: m.compile(backend=args.backend) for name, m in models.items()}
    first = next(iter(models.values()))
    K = np.eye(args.d) + 0.1
    theta = first.pack({"K": (K + K.T) / 2, "eta": np.full(args.d, 0.2)})
    for loss in losses.values():
        loss.value_and_grad(theta, X)  # compile the kernel, fault the pages in
    load_before = os.getloadavg()
    wall: dict[str, list[float]] = {name: [] for name in losses}
    cpu: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.repeat):
        for name, loss in losses.items():
            w0, c0 = time.perf_counter(), time.process_time()
            loss.value_and_grad(theta, X)
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    load_after = os.getloadavg()
    base = statistics.median(wall["nonnegative"])
    base_cpu = statistics.median(cpu["nonnegative"])
    print(
        f"value_and_grad, backend {args.backend}, d = {args.d}, P = {first.n_params}, N = {args.n}, "
        f"{args.repeat} interleaved rounds; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print("| model | wall (ms, median) | CPU (ms, median) | wall / nonnegative | CPU / nonnegative |")
    print("|---|---:|---:|---:|---:|")
    for name in losses:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"| {name} | {1e3 * w:.2f} | {1e3 * c:.2f} | {w / base:.2f} | {c / base_cpu:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
