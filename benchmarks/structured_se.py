"""What the sandwich standard errors cost on the structured path, for ICA at d (P = d² parameters).

    python -m benchmarks.structured_se [--d 32] [--n 20000] [--repeat 3]

log f = −Σ_k log cosh(w_kᵀx), compiled on the structured path (LLVM block executor, float64), on Laplace data
through a random mixing matrix, at θ = I + 0.1·noise. Timed, interleaved --repeat rounds after one warm-up each:

* pass: one value_and_grad pass over X (the unit everything else is measured in);
* V (blocks): the covariance of the per-row θ-gradients from the block program (symsm/runtime/accumulate.py);
* V (numpy): the same V from hand-written numpy per-row gradients (N × P at once; the independent reference,
  also checked to agree);
* H: central differences of the block gradient (2P passes: what `symsm.fit` does beyond P = 30).

The table gives median wall and process CPU seconds, the ratio to one pass, and the load average before/after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _row_gradients(theta, X):
    """∂θ of the integrand per row by hand (see tests/test_structured_se.py)."""
    import numpy as np

    d = X.shape[1]
    W = theta.reshape(d, d)
    t = np.tanh(X @ W.T)
    c = 1 - t**2
    s = t @ W
    n = (W**2).sum(axis=1)
    G = -2 * W[None] * c[:, :, None]
    G += ((2 * n * t * c + (s @ W.T) * c)[:, :, None]) * X[:, None, :]
    G += t[:, :, None] * s[:, None, :]
    return G.reshape(X.shape[0], d * d)


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    import symsm
    from symsm.runtime.accumulate import central_difference_hessian, gradient_moments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    d, n = args.d, args.n
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    model = symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name=f"se_bench_ica_{d}")
    loss = model.compile(path="structured")
    rng = np.random.default_rng(0)
    X = rng.laplace(size=(n, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    theta = np.eye(d).ravel() + 0.1 * rng.standard_normal(d * d)

    def v_numpy():
        G = _row_gradients(theta, X)
        return np.cov(G.T, bias=True)

    jobs = {
        "pass": lambda: loss.value_and_grad(theta, X),
        "V (blocks)": lambda: gradient_moments(loss, theta, X)[1],
        "V (numpy)": v_numpy,
        "H (2P passes)": lambda: central_difference_hessian(loss, theta, X),
    }
    for job in jobs.values():  # warm-up: compiled code loaded, buffers touched
        job()
    V1, V2 = jobs["V (blocks)"](), jobs["V (numpy)"]()
    err = float(np.abs(V1 - V2).max() / np.abs(V2).max())
    load0 = os.getloadavg()
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeat):
        for k, job in jobs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            job()
            wall[k].append(time.perf_counter() - w0)
            cpu[k].append(time.process_time() - c0)
    load1 = os.getloadavg()
    unit = statistics.median(wall["pass"])
    print(f"ICA d = {d}, P = {d * d}, N = {n}, structured path (float64), {args.repeat} rounds interleaved")
    print(f"load average before {load0[0]:.1f}, after {load1[0]:.1f}; V (blocks) vs V (numpy): max rel diff {err:.1e}")
    print("| job | wall s (median) | CPU s (median) | × one pass (wall) |")
    print("|---|---|---|---|")
    for k in jobs:
        w, c = statistics.median(wall[k]), statistics.median(cpu[k])
        print(f"| {k} | {w:.3f} | {c:.3f} | {w / unit:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
