"""Sparse and weighted quadratic forms of objectives quadratic in θ.

`sparse_quadratic_form(loss, X, weights=None)` returns (A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c, A as a
`scipy.sparse.csr_matrix`: the generated kernel ``quadratic_sparse_rows`` (symsm/ir/sparse_kernels.py)
writes only the coefficients a_ik that are not identically zero, and A = Σ_i (block of coordinate i) is
accumulated block by block with BLAS, chunk by chunk of rows — memory O(non-zeros of A + chunk × row
width), never P × P.

Observation weights w_t ≥ 0 (one per row) turn every mean over rows into Σ_t w_t (·)_t / Σ_t w_t, so integer
weights are exactly repeated rows. They are applied here, on the host, to the per-row outputs of the same
kernel — the loss's kernels are untouched (weights of value_and_grad: symsm/runtime/weighted.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.arrays import as_data
from .accumulate import _buffer, _chunks, _fit_backend, is_quadratic, is_variant
from .loader import load_module

if TYPE_CHECKING:
    import scipy.sparse

    from ..ir.sparse_kernels import SparseParts, SparsePattern
    from .loss import CompiledLoss

__all__ = ["check_weights", "pattern", "sparse_quadratic_form", "weighted_quadratic_form"]


def check_weights(weights: Any, n: int) -> np.ndarray | None:
    """Observation weights as a float64 vector of length n: finite, ≥ 0, not all 0 (None stays None)."""
    if weights is None:
        return None
    if hasattr(weights, "__dask_graph__"):
        raise NotImplementedError("weights= with dask data is not supported yet; compute the data or drop weights")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) (one per row of X), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite")
    if np.any(w < 0):
        raise ValueError(f"weights must be non-negative; the first negative is at row {int(np.argmax(w < 0))}")
    if not w.sum() > 0:
        raise ValueError("weights are all zero: no row carries weight")
    return w


def _require(loss: CompiledLoss) -> None:
    if not is_quadratic(loss):
        raise ValueError(
            f"model {loss.model.name!r}: the objective is not quadratic in θ (some ∂ᵢ log f is not affine in θ), "
            "so it has no (A, b, c) form"
        )
    if is_variant(loss):
        raise NotImplementedError(
            f"the sparse / weighted quadratic form is built for the exact objective, not {loss.objective!r}"
        )


def pattern(loss: CompiledLoss) -> SparsePattern:
    """The non-zero pattern of the score coefficients a_ik (symsm.ir.sparse_kernels.sparse_pattern)."""
    return _pattern(loss)


def _parts(loss: CompiledLoss) -> SparseParts:
    """The sparse pieces of the loss's quadratic objective (symbolic; computed once per loss)."""
    cached = getattr(loss, "_symsm_sparse_parts", None)
    if cached is None:
        from ..ir.sparse_kernels import sparse_parts

        cached = sparse_parts(loss.derivation)
        loss._symsm_sparse_parts = cached  # type: ignore[attr-defined]
    return cached


def _pattern(loss: CompiledLoss) -> SparsePattern:
    return _parts(loss).pattern


def _module(loss: CompiledLoss) -> ModuleType:
    cached = getattr(loss, "_symsm_sparse_module", None)
    if cached is not None:
        return cached
    from ..ir.sparse_kernels import build_sparse_quadratic_kernels

    backend = _fit_backend(loss)
    der = loss.derivation

    def generate(key: str) -> str:
        kernels = build_sparse_quadratic_kernels(der, _parts(loss))
        return backend.generate(der, kernels, dtype=np.float64, cache_key=key)

    parts = {"model": loss.model.canonical(), "backend": backend.name, "dtype": "float64", "layout": "sparse-v2"}
    module = load_module("quadratic_sparse", generate, **parts).module
    loss._symsm_sparse_module = module  # type: ignore[attr-defined]
    return module


def sparse_quadratic_form(
    loss: CompiledLoss, X: Any, weights: Any = None
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, float]:
    """(A, b, c), A a symmetric scipy.sparse CSR matrix holding only the blocks the score pattern allows.

    With `weights`, means over rows are weighted means Σ_t w_t(·)_t / Σ_t w_t.
    """
    import scipy.sparse

    _require(loss)
    data = as_data(loss.model, X)
    n = data.shape[0]
    w = check_weights(weights, n)
    pat = _pattern(loss)
    module = _module(loss)
    d, P = loss.model.dim, loss.model.n_params
    offsets = np.cumsum([0, *(len(c) for c in pat.columns)])
    nc = int(offsets[-1])
    blocks = [np.zeros((len(c), len(c))) for c in pat.columns]
    b = np.zeros(P)
    c0 = 0.0
    width = pat.width
    buf = _buffer(n, width)
    unused_theta = np.zeros(P)
    for start, stop in _chunks(n, width):
        out = buf[: stop - start]
        module.quadratic_sparse_rows(unused_theta, data[start:stop], out)
        wt = None if w is None else w[start:stop]
        for i in range(d):
            if not len(pat.columns[i]):
                continue
            F = out[:, offsets[i] : offsets[i + 1]]
            scale = out[:, nc + P + 1 + i] if pat.weighted else None
            if wt is not None:
                scale = wt if scale is None else scale * wt
            blocks[i] += (F * scale[:, None]).T @ F if scale is not None else F.T @ F
        tail = out[:, nc : nc + P + 1]
        sums = (wt @ tail) if wt is not None else np.ones(stop - start) @ tail
        b += sums[:P]
        c0 += float(sums[P])
    total = float(n if w is None else w.sum())
    rows = np.concatenate([np.repeat(np.asarray(c, dtype=np.int64), len(c)) for c in pat.columns if len(c)])
    cols = np.concatenate([np.tile(np.asarray(c, dtype=np.int64), len(c)) for c in pat.columns if len(c)])
    vals = np.concatenate([blk.ravel() for blk in blocks if blk.size]) / total
    A = scipy.sparse.coo_matrix((vals, (rows, cols)), shape=(P, P)).tocsr()
    A.sum_duplicates()
    A = ((A + A.T) * 0.5).tocsr()  # exactly symmetric
    return A, b / total, c0 / total


def weighted_quadratic_form(loss: CompiledLoss, X: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) as dense arrays, with observation weights (`sparse_quadratic_form`, densified)."""
    A, b, c = sparse_quadratic_form(loss, X, weights)
    return A.toarray(), b, c
