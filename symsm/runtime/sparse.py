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

    parts = {"model": loss.model.canonical(), "backend": backend.name, "dtype": "float64", "layout": "sparse-v3"}
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
    parts = _parts(loss)
    pat = parts.pattern
    module = _module(loss)
    d, P = loss.model.dim, loss.model.n_params
    nf, nd = len(parts.features), len(parts.dfeatures)
    o0 = nf + nd  # offsets o_i
    c0_col = o0 + d
    h0 = c0_col + 1  # h_i, then h_i′ (weighted domains only: "nonnegative", "box")
    width = h0 + (2 * d if pat.weighted else 0)
    f_index = [np.asarray(ix, dtype=np.int64) for ix in parts.feature_index]
    blocks = [np.zeros((len(c), len(c))) for c in pat.columns]
    M1 = np.zeros((d, nd))  # Σ_t w h_i ∂a (by distinct ∂a)
    M2 = np.zeros((d, nf))  # Σ_t w h_i o_i a
    M3 = np.zeros((d, nf))  # Σ_t w h_i′ a
    c_sum = 0.0
    buf = _buffer(n, width)
    unused_theta = np.zeros(P)
    for start, stop in _chunks(n, width):
        out = buf[: stop - start]
        module.quadratic_sparse_rows(unused_theta, data[start:stop], out)
        rows = stop - start
        wt = np.ones(rows) if w is None else w[start:stop]
        F = out[:, :nf]
        if pat.weighted:
            H = out[:, h0 : h0 + d] * wt[:, None]  # w_t h_i
            Hp = out[:, h0 + d : h0 + 2 * d] * wt[:, None]
            M3 += Hp.T @ F
        else:
            H = np.broadcast_to(wt[:, None], (rows, d))
        M1 += H.T @ out[:, nf:o0]
        M2 += (H * out[:, o0:c0_col]).T @ F
        c_sum += float(wt @ out[:, c0_col])
        for i in range(d):
            if not len(pat.columns[i]):
                continue
            Fi = F[:, f_index[i]]
            blocks[i] += (Fi * H[:, i, None]).T @ Fi
    total = float(n if w is None else w.sum())
    b = np.zeros(P)
    for i, cols in enumerate(pat.columns):
        if not len(cols):
            continue
        k = np.asarray(cols, dtype=np.int64)
        v = np.asarray(parts.dfeature_index[i], dtype=np.int64)
        terms = M2[i, f_index[i]] + M3[i, f_index[i]] + np.where(v >= 0, M1[i, np.maximum(v, 0)], 0.0)
        np.add.at(b, k, terms)
    rows_idx = np.concatenate([np.repeat(np.asarray(c, dtype=np.int64), len(c)) for c in pat.columns if len(c)])
    cols_idx = np.concatenate([np.tile(np.asarray(c, dtype=np.int64), len(c)) for c in pat.columns if len(c)])
    vals = np.concatenate([blk.ravel() for blk in blocks if blk.size]) / total
    A = scipy.sparse.coo_matrix((vals, (rows_idx, cols_idx)), shape=(P, P)).tocsr()
    A.sum_duplicates()
    A = ((A + A.T) * 0.5).tocsr()  # exactly symmetric
    return A, b / total, c_sum / total


def weighted_quadratic_form(loss: CompiledLoss, X: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) as dense arrays, with observation weights or none (`sparse_quadratic_form`, densified)."""
    A, b, c = sparse_quadratic_form(loss, X, weights)
    return A.toarray(), b, c
