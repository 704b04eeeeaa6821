"""Time a 50-λ ℓ1 path with eBIC selection on a Gaussian graphical model on ℝᵈ or a truncated one on [0, ∞)ᵈ.

    python benchmarks/path_timing.py [d ...]                       (truncated, d = 20 30 50; n = 1000)
    python benchmarks/path_timing.py --model gaussian --d 500      (the d = 500 Gaussian graphical model)

Stages: building the sympy model (d(d+3)/2 parameters, written out scalar by scalar: the benchmark's own cost,
reported apart); the first path in the process from the Model (score, sparse quadratic-form pieces, its
generated kernel — compiled once, then cached on disk — and the path: coordinate descent on the blocks of A
with warm starts and strong rules, eBIC with refits); the quadratic form alone; the path on the already
derived loss; for d < 300 also the same Model again and the peak Python allocation of a path (tracemalloc);
the peak resident memory of the process (ru_maxrss) and the largest KKT residual. Every line is one JSON row;
`uptime`'s load is recorded with it (the machine is shared: times are wall clock under that load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc

import numpy as np
import sympy as sp

REPEAT_BELOW = 300  # at larger d the repeated paths (same Model again, tracemalloc) are left out


def sample(d: int, n: int, seed: int, truncated: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A chain graph (K tridiagonal, 0.35 off the diagonal). Gaussian: exact draws of N(0, K⁻¹). Truncated:
    mean 0.5 and |x| of the normal (rejection on [0, ∞)ᵈ is slow for large d; the path's timing does not
    depend on the data's law)."""
    rng = np.random.default_rng(seed)
    K = np.eye(d) + 0.35 * (np.eye(d, k=1) + np.eye(d, k=-1))
    L = np.linalg.cholesky(np.linalg.inv(K))
    Z = rng.standard_normal((n, d)) @ L.T
    return (np.abs(0.5 + Z) if truncated else Z), K


def graphical_model(d: int, truncated: bool) -> object:
    """log f = −½ xᵀKx + ηᵀx with K symmetric (each x_i x_j once: −K_ij x_i x_j for i < j)."""
    import symsm

    x = sp.symbols(f"x0:{d}", real=True)
    K = symsm.symmetric("K", d)
    eta = symsm.matrix("eta", d, 1)
    terms = [-K[i, i] * x[i] ** 2 / 2 for i in range(d)]
    terms += [-K[i, j] * x[i] * x[j] for i in range(d) for j in range(i + 1, d)]
    terms += [eta[i] * x[i] for i in range(d)]
    kind = "trunc_ggm" if truncated else "ggm"
    return symsm.Model(
        sp.Add(*terms), list(x), {"K": K, "eta": eta}, domain="nonnegative" if truncated else "real",
        name=f"{kind}_{d}",
    )  # fmt: skip


def main(dims: list[int], n: int = 1000, truncated: bool = True, n_lambdas: int = 50) -> list[dict]:
    import symsm
    from symsm.fitting.penalized import _loss_of
    from symsm.runtime.sparse import block_quadratic_form

    out = []
    for d in dims:
        row: dict = {"model": "truncated" if truncated else "gaussian", "d": d, "n": n, "P": d * (d + 3) // 2}
        row["load_before"] = os.getloadavg()[0]
        t = time.perf_counter()
        model = graphical_model(d, truncated)
        row["model_s"] = time.perf_counter() - t
        X, _ = sample(d, n, 0, truncated)
        # First path in the process: the score (sympy), the sparse quadratic form's pieces, its generated
        # kernel (made and compiled once, then cached on disk), numba's coordinate descent (cached) and the path.
        # The loss's own kernels are not needed (symsm.fitting.penalized.QuadraticOnly).
        t = time.perf_counter()
        res = symsm.path(model, X, n_lambdas=n_lambdas, select="ebic")
        row["first_path_s"] = time.perf_counter() - t
        if d < REPEAT_BELOW:  # warm: the same Model again (its derivation is redone; kernels from the caches)
            t = time.perf_counter()
            res = symsm.path(model, X, n_lambdas=n_lambdas, select="ebic")
            row["path_s"] = time.perf_counter() - t
        loss = _loss_of(model, "numba", quadratic_only=True)
        t = time.perf_counter()
        A, _, _ = block_quadratic_form(loss, X)
        row["quadratic_form_s"] = time.perf_counter() - t
        row["A_stored"] = A.stored  # numbers held for A
        row["A_block_entries"] = A.nnz_blocks  # what a sparse matrix of the blocks would hold
        del A
        t = time.perf_counter()
        res = symsm.path(loss, X, n_lambdas=n_lambdas, select="ebic")
        row["path_on_loss_s"] = time.perf_counter() - t  # derivation and pieces already in hand
        if d < REPEAT_BELOW:
            tracemalloc.start()
            symsm.path(loss, X, n_lambdas=n_lambdas, select="ebic")
            row["path_peak_python_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        row["max_kkt"] = float(res.kkt.max())
        row["selected_edges"] = len(res.edges)
        row["edges_at_smallest_lambda"] = int(res.df[-1])
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["cpu_s"] = time.process_time()
        row["load_after"] = os.getloadavg()[0]
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dims", nargs="*", type=int)
    parser.add_argument("--d", type=int, action="append", default=[], help="dimension (repeatable)")
    parser.add_argument("--model", choices=("truncated", "gaussian"), default="truncated")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n-lambdas", type=int, default=50)
    args = parser.parse_args()
    main(args.dims + args.d or [20, 30, 50], args.n, args.model == "truncated", args.n_lambdas)
