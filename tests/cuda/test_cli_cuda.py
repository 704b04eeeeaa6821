"""`symsm fit --backend cuda` through the console script: the same estimates as the CPU backend and numpy.

The subprocess inherits this process's environment, so it runs under the CUDA simulator when
NUMBA_ENABLE_CUDASIM=1 is set (CI) and on the GPU where there is one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np


def run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("symsm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "symsm.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=600)


def test_fit_with_the_cuda_backend_matches_the_cpu_backend(tmp_path):
    X = np.random.default_rng(11).multivariate_normal([0.5, -1.0], [[1.5, -0.4], [-0.4, 0.8]], size=300)
    np.save(tmp_path / "X.npy", X)
    results = {}
    for backend in ("cuda", "numba"):
        out = run("fit", "gaussian_2d", "--data", str(tmp_path / "X.npy"), "--backend", backend, "--json")
        assert out.returncode == 0, out.stderr
        results[backend] = json.loads(out.stdout)
    mean = X.mean(axis=0)
    P = np.linalg.inv((X - mean).T @ (X - mean) / len(X))  # score matching = the exact Gaussian answer
    expected = [P[0, 0], P[0, 1], P[1, 1], *(P @ mean)]
    np.testing.assert_allclose(results["cuda"]["theta"], expected, rtol=1e-9)
    np.testing.assert_allclose(results["cuda"]["theta"], results["numba"]["theta"], rtol=1e-10)
    np.testing.assert_allclose(results["cuda"]["se"], results["numba"]["se"], rtol=1e-8)
