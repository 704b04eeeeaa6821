"""Time a 50-λ ℓ1 path with eBIC selection on a truncated Gaussian graphical model on [0, ∞)ᵈ.

    python benchmarks/path_timing.py [d ...]      (default: 20 30 50; n = 1000)

Stages: building the sympy model (d(d+3)/2 parameters, written out scalar by scalar); the first path in
the process from the Model (score, sparse quadratic-form pieces, its generated kernel — compiled once, then
cached on disk — and the path: coordinate descent on the sparse A with warm starts and strong rules, eBIC
with refits); the same again warm; the quadratic form alone; the path on the already derived loss; the peak
Python allocation of a path (tracemalloc) and of the process (ru_maxrss); the largest KKT residual.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc

import numpy as np
import sympy as sp


def sample(d: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A chain graph (K tridiagonal, 0.35 off the diagonal), mean 0.5, rows kept when all coordinates are ≥ 0
    (rejection on a few coordinates at a time is slow for large d: a Gibbs-free shortcut — |x| of a normal
    with the same K — is used instead; the path's timing does not depend on the data's law)."""
    rng = np.random.default_rng(seed)
    K = np.eye(d) + 0.35 * (np.eye(d, k=1) + np.eye(d, k=-1))
    L = np.linalg.cholesky(np.linalg.inv(K))
    X = np.abs(0.5 + rng.standard_normal((n, d)) @ L.T)
    return X, K


def main(dims: list[int], n: int = 1000) -> list[dict]:
    import symsm
    from symsm.fitting.penalized import _loss_of
    from symsm.runtime.sparse import sparse_quadratic_form

    out = []
    for d in dims:
        row: dict = {"d": d, "n": n, "P": d * (d + 3) // 2}
        t = time.perf_counter()
        x = sp.symbols(f"x0:{d}", real=True)
        K = symsm.symmetric("K", d)
        eta = symsm.matrix("eta", d, 1)
        log_f = sp.Add(*[-K[i, j] * x[i] * x[j] / 2 for i in range(d) for j in range(d)]) + sp.Add(
            *[eta[i] * x[i] for i in range(d)]
        )
        model = symsm.Model(log_f, list(x), {"K": K, "eta": eta}, domain="nonnegative", name=f"trunc_ggm_{d}")
        row["model_s"] = time.perf_counter() - t
        X, _ = sample(d, n, 0)
        # First path in the process: the score (sympy), the sparse quadratic form's pieces, its generated
        # kernel (made and compiled once, then cached on disk), numba's coordinate descent (cached) and the path.
        # The loss's own kernels are not needed (symsm.fitting.penalized.QuadraticOnly).
        t = time.perf_counter()
        res = symsm.path(model, X, n_lambdas=50, select="ebic")
        row["first_path_s"] = time.perf_counter() - t
        # Warm: the same Model again (its derivation is redone; the kernels come from the caches).
        t = time.perf_counter()
        res = symsm.path(model, X, n_lambdas=50, select="ebic")
        row["path_s"] = time.perf_counter() - t
        loss = _loss_of(model, "numba", quadratic_only=True)
        t = time.perf_counter()
        A, _, _ = sparse_quadratic_form(loss, X)
        row["quadratic_form_s"] = time.perf_counter() - t
        row["nnz_A"] = int(A.nnz)
        t = time.perf_counter()
        res = symsm.path(loss, X, n_lambdas=50, select="ebic")
        row["path_on_loss_s"] = time.perf_counter() - t  # derivation and pieces already in hand
        tracemalloc.start()
        symsm.path(loss, X, n_lambdas=50, select="ebic")
        row["path_peak_python_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        row["max_kkt"] = float(res.kkt.max())
        row["selected_edges"] = len(res.edges)
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [20, 30, 50])
