"""Moment matching points: J̃ for integrands of degree ≤ 2 in the data, from one pass of moments.

If the per-sample integrand L(x; θ) is a polynomial of degree at most 2 in x (every Gaussian model, in any
parametrisation), its mean over the data depends on the data only through the sample mean m and covariance C
(divisor N): mean_t L(x_t) = L̄(m, C). The 2d points m ± √(d λ_j) v_j, with C = Σ_j λ_j v_j v_jᵀ, have
exactly that mean and covariance, so the mean of L — and of its θ-gradient, also quadratic in x — over
those 2d points equals J̃ and ∇θJ̃ over the data, up to rounding. One pass computes the moments (a generated
SIMD sum kernel, deterministic like every kernel); the model's own kernel then runs on 2d rows instead of N.

The moments are accumulated about a shift s = the first row (m = s + mean(x − s),
C = mean((x − s)(x − s)ᵀ) − (m − s)(m − s)ᵀ), so a mean far from zero does not cancel digits.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from .loader import load_module

__all__ = ["matching_points", "moment_points", "moments"]


_MODULES: dict[tuple[int, str], ModuleType] = {}


def _module(dim: int, dtype: np.dtype) -> ModuleType:
    """The generated moments kernel for `dim` columns (through the cache once per process)."""
    found = _MODULES.get((dim, np.dtype(dtype).name))
    if found is not None:
        return found
    from ..backends.llvm.generate import generate_moments_source

    dt = np.dtype(dtype)
    module = load_module(
        "second-moments", lambda key: generate_moments_source(dim, dtype=dt, cache_key=key), dim=dim, dtype=dt.name
    ).module
    _MODULES[(dim, np.dtype(dtype).name)] = module
    return module


def moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with divisor N) of the rows of a validated, C-contiguous X, in float64."""
    d = X.shape[1]
    shift = np.array(X[0], dtype=X.dtype)
    sums = _module(d, X.dtype).moments(shift, X)
    m1 = sums[:d]
    second = np.empty((d, d))
    iu = np.triu_indices(d)
    second[iu] = sums[d:]
    second.T[iu] = sums[d:]
    cov = second - np.outer(m1, m1)
    return shift.astype(np.float64) + m1, cov


def moment_points(X: np.ndarray) -> np.ndarray:
    """2d points (float64) whose mean and covariance (divisor 2d) equal those of the rows of X."""
    return matching_points(*moments(X))


def matching_points(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """2d points (float64) with the given mean and covariance (divisor 2d): m ± √(d λ_j) v_j.

    Separate from `moment_points` so moments gathered elsewhere (chunk by chunk on a cluster,
    symsm/runtime/dask.py) give the same points."""
    d = mean.shape[0]
    lam, vecs = np.linalg.eigh(cov)
    offsets = (vecs * np.sqrt(d * np.clip(lam, 0.0, None))).T  # row j: √(d λ_j) v_j
    return np.ascontiguousarray(np.concatenate([mean + offsets, mean - offsets]))
