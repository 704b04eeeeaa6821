"""A device kernel that appends columns to rows already on the GPU (imported by symsm/runtime/device.py on first use).

A randomised objective's kernels read the model's coordinates followed by auxiliary per-row inputs (random
directions, noise) as one (N, d + k) array. For data resident on the GPU the two are joined on the device, so
the rows never travel back to the host. A module of its own: it imports `numba.cuda` at import time (the
simulator swaps the module-level name `cuda` inside kernels), which symsm/runtime/device.py must not do.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

__all__ = ["join_columns"]


@cuda.jit
def join_columns(X: Any, A: Any, out: Any) -> None:
    """out[i] = (X[i, :], A[i, :]) for every row i (grid-stride loop; a flat kernel)."""
    d = X.shape[1]
    for i in range(cuda.grid(1), X.shape[0], cuda.gridsize(1)):  # type: ignore[call-arg]  # numba-cuda's stub
        for j in range(d):
            out[i, j] = X[i, j]
        for j in range(A.shape[1]):
            out[i, d + j] = A[i, j]
