"""A/B of symsm.path on a d-dimensional (truncated) Gaussian graphical model, public API only, so the same
script runs against any checkout: PYTHONPATH=<checkout> python benchmarks/path_ab.py 100 truncated|gaussian
(benchmarks/PATH.md). One JSON row: model build, first and second path (wall and process CPU), peak RSS."""

import json
import os
import resource
import sys
import time

import numpy as np
import sympy as sp


def main() -> None:
    import symsm

    d = int(sys.argv[1])
    truncated = sys.argv[2] == "truncated"
    rng = np.random.default_rng(0)
    K = np.eye(d) + 0.35 * (np.eye(d, k=1) + np.eye(d, k=-1))
    Z = rng.standard_normal((1000, d)) @ np.linalg.cholesky(np.linalg.inv(K)).T
    X = np.abs(0.5 + Z) if truncated else Z
    t = time.perf_counter()
    x = sp.symbols(f"x0:{d}", real=True)
    Ks = symsm.symmetric("K", d)
    eta = symsm.matrix("eta", d, 1)
    log_f = sp.Add(*[-Ks[i, j] * x[i] * x[j] / 2 for i in range(d) for j in range(d)]) + sp.Add(
        *[eta[i] * x[i] for i in range(d)]
    )
    model = symsm.Model(
        log_f, list(x), {"K": Ks, "eta": eta}, domain="nonnegative" if truncated else "real", name=f"ab_{d}"
    )
    row = {"model_s": time.perf_counter() - t}
    c0 = time.process_time()
    t = time.perf_counter()
    res = symsm.path(model, X, n_lambdas=50, select="ebic")
    row["first_path_s"] = time.perf_counter() - t
    row["first_path_cpu_s"] = time.process_time() - c0
    c0 = time.process_time()
    t = time.perf_counter()
    res = symsm.path(model, X, n_lambdas=50, select="ebic")
    row["second_path_s"] = time.perf_counter() - t
    row["second_path_cpu_s"] = time.process_time() - c0
    row["edges"] = len(res.edges)
    row["df_last"] = int(res.df[-1])
    row["kkt"] = float(res.kkt.max())
    row["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["load"] = os.getloadavg()[0]
    print(json.dumps(row))


if __name__ == "__main__":
    main()
