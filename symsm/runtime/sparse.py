"""Sparse and weighted quadratic forms of objectives quadratic in θ.

`block_quadratic_form(loss, X, weights=None)` returns (A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c and A a
`BlockQuadratic`: the generated kernel ``quadratic_sparse_rows`` (symsm/ir/sparse_kernels.py) writes only the
*distinct* coefficients a_ik that are not identically zero, and A = Σ_i (block of coordinate i) is kept as
the Gram matrices of those coefficients, accumulated with BLAS chunk by chunk of rows — on ℝᵈ one shared
Gram matrix (a Gaussian graphical model: (d+1)² numbers for A instead of d·(d+1)² block entries), on
[0, ∞)ᵈ one per coordinate. Products A·θ, the diagonal, sub-matrices A_FF and coordinate descent read the
blocks; never P × P. `sparse_quadratic_form` assembles the same A as a scipy.sparse CSR matrix.
`block_gradient_moments` gives the per-row gradients' covariance on a set F of parameters (the sandwich of a
refit on a support).

Observation weights w_t ≥ 0 (one per row) turn every mean over rows into Σ_t w_t (·)_t / Σ_t w_t, so integer
weights are exactly repeated rows. They are applied here, on the host, to the per-row outputs of the same
kernel — the loss's kernels are untouched (weights of value_and_grad: symsm/runtime/weighted.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
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

__all__ = [
    "BlockQuadratic",
    "block_gradient_moments",
    "block_quadratic_form",
    "check_weights",
    "pattern",
    "sparse_quadratic_form",
    "weighted_quadratic_form",
]


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

    parts = {"model": loss.model.canonical(), "backend": backend.name, "dtype": "float64", "layout": "sparse-v4"}
    module = load_module("quadratic_sparse", generate, **parts).module
    loss._symsm_sparse_module = module  # type: ignore[attr-defined]
    return module


class BlockQuadratic:
    """A = Σ_i E_iᵀ G_i[f_i, f_i] E_i, the quadratic form's matrix kept as its blocks (E_i selects the
    parameters coordinate i's score involves, `cols` of block i; f_i the rows of block i's Gram matrix G_i that
    hold them).

    Where every h_i ≡ 1 (on ℝᵈ) block i is mean a_i a_iᵀ over the *distinct* coefficients a_i, so every block is
    a sub-matrix of one Gram matrix G = mean f fᵀ of all distinct coefficients (`shared`): for a Gaussian
    graphical model the coefficients are x_1 … x_d and 1, so A is stored as (d+1)² numbers instead of
    d·(d+1)² — this is what the symbolic pattern tells (identical ∂_i-coefficient expressions), not a special
    case of one model. With weights h_i (on [0, ∞)ᵈ) each block has its own Gram matrix G_i = mean h_i a_i a_iᵀ.

    Flat layout (what the coordinate-descent kernel reads): block b has parameters cols[ptr[b]:ptr[b+1]],
    their Gram rows fidx[ptr[b]:ptr[b+1]], and G_b[r, s] = gram[goff[b] + r·gdim[b] + s]. `occ_*`: for each
    parameter k the blocks b and positions m where it occurs (occ_ptr[k]:occ_ptr[k+1]).
    """

    def __init__(
        self, n_params: int, columns: list[np.ndarray], rows: list[np.ndarray], grams: list[np.ndarray], shared: bool
    ) -> None:
        self.n_params = int(n_params)
        self.shape = (self.n_params, self.n_params)
        self.shared = shared
        sizes = np.array([len(c) for c in columns], dtype=np.int64)
        self.n_blocks = len(columns)
        self.ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.cols = np.concatenate(columns).astype(np.int64) if columns else np.zeros(0, np.int64)
        self.fidx = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        self.block_of = np.repeat(np.arange(self.n_blocks, dtype=np.int64), sizes)
        self._G: np.ndarray | None = None  # the shared Gram matrix
        if shared:
            (G,) = grams
            self.gram = np.ascontiguousarray(G, dtype=np.float64).ravel()
            self.goff = np.zeros(self.n_blocks, dtype=np.int64)
            self.gdim = np.full(self.n_blocks, G.shape[0], dtype=np.int64)
            self._G = G
        else:
            self.gram = np.concatenate([g.ravel() for g in grams]) if grams else np.zeros(0)
            self.gdim = np.array([g.shape[0] for g in grams], dtype=np.int64)
            self.goff = np.concatenate([[0], np.cumsum(self.gdim**2)[:-1]]).astype(np.int64)
        # blocks of one size holding their own Gram matrices in order (the usual case on [0, ∞)ᵈ): A·θ as one
        # batched product over a (blocks, m, m) view of `gram`
        self._stack: np.ndarray | None = None
        self.own = bool(
            not shared and np.array_equal(self.fidx, np.arange(self.cols.size) - np.repeat(self.ptr[:-1], sizes))
        )
        if not shared and self.n_blocks and np.all(self.gdim == self.gdim[0]) and np.all(sizes == self.gdim[0]):
            m = int(self.gdim[0])
            self._stack = self.gram.reshape(self.n_blocks, m, m)
        order = np.argsort(self.cols, kind="stable")
        self.occ_block = self.block_of[order]
        self.occ_pos = (order - self.ptr[self.occ_block]).astype(np.int64)
        self.occ_ptr = np.concatenate([[0], np.cumsum(np.bincount(self.cols, minlength=self.n_params))]).astype(
            np.int64
        )
        # the flat index of each stored (block, position)'s own diagonal Gram entry
        own = self.goff[self.block_of] + self.fidx * self.gdim[self.block_of] + self.fidx
        self._diag = np.bincount(self.cols, weights=self.gram[own], minlength=self.n_params)

    @property
    def stored(self) -> int:
        """Numbers held for A (the Gram matrices), against nnz ≈ Σ_i |cols_i|² for a sparse matrix."""
        return int(self.gram.size)

    @property
    def nnz_blocks(self) -> int:
        return int(np.sum(np.diff(self.ptr) ** 2))

    def diagonal(self) -> np.ndarray:
        return self._diag.copy()

    def block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(parameters, dense block) of block b."""
        a, e = self.ptr[b], self.ptr[b + 1]
        f = self.fidx[a:e]
        n = int(self.gdim[b])
        G = self.gram[self.goff[b] : self.goff[b] + n * n].reshape(n, n)
        return self.cols[a:e], G[np.ix_(f, f)]

    def __matmul__(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.ndim != 1:
            return np.column_stack([self @ theta[:, j] for j in range(theta.shape[1])])
        vals = theta[self.cols]
        if self.shared and self._G is not None:
            import scipy.sparse

            # V_b = G Θ_b with Θ_b the block's parameters scattered to their Gram rows: Θ is as sparse as θ
            nz = np.flatnonzero(vals)
            nf = self._G.shape[0]
            T = scipy.sparse.csr_matrix((vals[nz], (self.block_of[nz], self.fidx[nz])), shape=(self.n_blocks, nf))
            V = np.asarray(T @ self._G)  # (blocks, nf) = Θᵀ G, G symmetric
            out = V[self.block_of, self.fidx]
        elif self._stack is not None:  # fidx is 0 … m−1 in every block
            out = np.matmul(self._stack, vals.reshape(self.n_blocks, -1, 1)).ravel()
        else:
            out = np.empty(self.cols.size)
            for b in range(self.n_blocks):
                a, e = self.ptr[b], self.ptr[b + 1]
                if a == e:
                    continue
                _, Gb = self.block(b)
                out[a:e] = Gb @ vals[a:e]
        return np.bincount(self.cols, weights=out, minlength=self.n_params)

    def restrict(self, idx: np.ndarray) -> scipy.sparse.csr_matrix:
        """A[idx][:, idx] as a sparse matrix built from the blocks' rows and columns in idx only (for a support
        of a graphical model, Σ_i (its degree + 2)² entries — never the whole of A)."""
        import scipy.sparse

        idx = np.asarray(idx, dtype=np.int64)
        where = np.full(self.n_params, -1, dtype=np.int64)
        where[idx] = np.arange(idx.size)
        sel = np.flatnonzero(where[self.cols] >= 0)  # stored (block, position) pairs kept, block by block
        blk = self.block_of[sel]
        counts = np.bincount(blk, minlength=self.n_blocks)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        reps = counts[blk]  # each kept pair meets every kept pair of its block
        left = np.repeat(sel, reps)
        run = np.repeat(np.cumsum(reps) - reps, reps)
        right = sel[np.repeat(first[blk], reps) + (np.arange(left.size) - run)]
        b = self.block_of[left]
        vals = self.gram[self.goff[b] + self.fidx[left] * self.gdim[b] + self.fidx[right]]
        sub = scipy.sparse.coo_matrix(
            (vals, (where[self.cols[left]], where[self.cols[right]])), shape=(idx.size, idx.size)
        ).tocsr()
        sub.sum_duplicates()
        return sub

    def tocsr(self) -> scipy.sparse.csr_matrix:
        """The whole of A as a scipy.sparse CSR matrix (Σ_i |cols_i|² entries before duplicates are summed)."""
        return self.restrict(np.arange(self.n_params))

    def toarray(self) -> np.ndarray:
        return self.tocsr().toarray()


@dataclass(frozen=True)
class _RowLayout:
    """The columns of one row of ``quadratic_sparse_rows``: the distinct coefficients a (`nf`), their
    derivatives ∂a (`nd`), the offsets o_i, c₀ and, on the weighted domains ("nonnegative", "box"), h_i then h_i′."""

    nf: int
    nd: int
    d: int
    weighted: bool

    @property
    def o0(self) -> int:
        return self.nf + self.nd

    @property
    def c0(self) -> int:
        return self.o0 + self.d

    @property
    def h0(self) -> int:
        return self.c0 + 1

    @property
    def width(self) -> int:
        return self.h0 + (2 * self.d if self.weighted else 0)


def _sparse_rows(
    loss: CompiledLoss, X: Any, weights: Any
) -> tuple[SparseParts, _RowLayout, int, np.ndarray | None, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(parts, layout, N, weights, chunks): the sparse kernel's per-row outputs of X, chunk by chunk, each chunk
    (rows × layout.width, a reused buffer) with its rows' weights (ones without `weights`)."""
    _require(loss)
    data = as_data(loss.model, X)
    n = data.shape[0]
    w = check_weights(weights, n)
    parts = _parts(loss)
    layout = _RowLayout(len(parts.features), len(parts.dfeatures), loss.model.dim, parts.pattern.weighted)
    module = _module(loss)

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        buf = _buffer(n, layout.width)
        unused_theta = np.zeros(loss.model.n_params)  # the outputs are free of θ (sparse_kernels.py)
        for start, stop in _chunks(n, layout.width):
            out = buf[: stop - start]
            module.quadratic_sparse_rows(unused_theta, data[start:stop], out)
            yield out, (np.ones(stop - start) if w is None else w[start:stop])

    return parts, layout, n, w, chunks()


def block_quadratic_form(loss: CompiledLoss, X: Any, weights: Any = None) -> tuple[BlockQuadratic, np.ndarray, float]:
    """(A, b, c) with A a `BlockQuadratic`: only the Gram matrices of the blocks the score pattern allows (one
    shared Gram matrix of the distinct coefficients when every h_i ≡ 1).

    With `weights`, means over rows are weighted means Σ_t w_t(·)_t / Σ_t w_t.
    """
    parts, lay, n, w, chunks = _sparse_rows(loss, X, weights)
    pat = parts.pattern
    d, P = loss.model.dim, loss.model.n_params
    nf, nd, o0, c0_col, h0 = lay.nf, lay.nd, lay.o0, lay.c0, lay.h0
    f_index = [np.asarray(ix, dtype=np.int64) for ix in parts.feature_index]
    used = [i for i in range(d) if len(pat.columns[i])]
    shared = not pat.weighted
    blocks = [np.zeros((1, 1))] if shared else [np.zeros((len(f_index[i]), len(f_index[i]))) for i in used]
    G = np.zeros((nf, nf))
    M1 = np.zeros((d, nd))  # Σ_t w h_i ∂a (by distinct ∂a)
    M2 = np.zeros((d, nf))  # Σ_t w h_i o_i a
    M3 = np.zeros((d, nf))  # Σ_t w h_i′ a
    c_sum = 0.0
    for out, wt in chunks:
        rows = out.shape[0]
        F = out[:, :nf]
        if pat.weighted:
            H = out[:, h0 : h0 + d] * wt[:, None]  # w_t h_i
            Hp = out[:, h0 + d : h0 + 2 * d] * wt[:, None]
            M3 += Hp.T @ F
        else:
            H = np.broadcast_to(wt[:, None], (rows, d))
            G += (F * wt[:, None]).T @ F  # every block is a sub-matrix of this one
        M1 += H.T @ out[:, nf:o0]
        M2 += (H * out[:, o0:c0_col]).T @ F
        c_sum += float(wt @ out[:, c0_col])
        if not shared:
            for slot, i in enumerate(used):
                Fi = F[:, f_index[i]]
                blocks[slot] += (Fi * H[:, i, None]).T @ Fi
    total = float(n if w is None else w.sum())
    b = np.zeros(P)
    for i, cols in enumerate(pat.columns):
        if not len(cols):
            continue
        k = np.asarray(cols, dtype=np.int64)
        v = np.asarray(parts.dfeature_index[i], dtype=np.int64)
        terms = M2[i, f_index[i]] + M3[i, f_index[i]] + np.where(v >= 0, M1[i, np.maximum(v, 0)], 0.0)
        np.add.at(b, k, terms)
    columns = [np.asarray(pat.columns[i], dtype=np.int64) for i in used]
    if shared:
        G = (G + G.T) / (2 * total)  # exactly symmetric
        A = BlockQuadratic(P, columns, [f_index[i] for i in used], [G], shared=True)
    else:
        grams = [(B + B.T) / (2 * total) for B in blocks]
        A = BlockQuadratic(P, columns, [np.arange(len(c), dtype=np.int64) for c in columns], grams, shared=False)
    return A, b / total, c_sum / total


def block_gradient_moments(
    loss: CompiledLoss, X: Any, theta: np.ndarray, free: np.ndarray, weights: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with divisor Σw) of the per-row gradients ∂φ_t/∂θ_F of the quadratic integrand at θ,
    for the parameters F = `free` only, from the sparse kernel's per-row outputs — never N × P, never P × P:

        ∂φ_t/∂θ_k = Σ_i [h_i (s_i a_ik + ∂_i a_ik) + h_i′ a_ik],   s_i = Σ_l a_il θ_l + o_i (the score),

    summed over the coordinates i whose score involves θ_k (θ is read where it is non-zero)."""
    parts, lay, _, _, chunks = _sparse_rows(loss, X, weights)
    pat = parts.pattern
    d, P = loss.model.dim, loss.model.n_params
    nf, nd, o0, h0 = lay.nf, lay.nd, lay.o0, lay.h0
    free = np.asarray(free, dtype=bool)
    where = np.full(P, -1, dtype=np.int64)
    where[np.flatnonzero(free)] = np.arange(int(free.sum()))
    blocks = []
    for i, cols in enumerate(pat.columns):
        k = np.asarray(cols, dtype=np.int64)
        f = np.asarray(parts.feature_index[i], dtype=np.int64)
        v = np.asarray(parts.dfeature_index[i], dtype=np.int64)
        nz = theta[k] != 0
        out = where[k] >= 0
        if len(k) and out.any():
            blocks.append((i, f[nz], theta[k][nz], where[k][out], f[out], v[out]))
    F_n = int(free.sum())
    s1 = np.zeros(F_n)
    s2 = np.zeros((F_n, F_n))
    total = 0.0
    for out_rows, wt in chunks:
        rows = out_rows.shape[0]
        feats = out_rows[:, :nf]
        dfeats = out_rows[:, nf:o0]
        G = np.zeros((rows, F_n))
        for i, f_nz, th_nz, pos, f_out, v_out in blocks:
            score = feats[:, f_nz] @ th_nz + out_rows[:, o0 + i]
            a = feats[:, f_out]
            da = np.where(v_out >= 0, dfeats[:, np.maximum(v_out, 0)] if nd else 0.0, 0.0)
            g = score[:, None] * a + da
            if pat.weighted:
                g = out_rows[:, h0 + i, None] * g + out_rows[:, h0 + d + i, None] * a
            G[:, pos] += g  # a block holds each parameter once
        s1 += wt @ G
        s2 += (G * wt[:, None]).T @ G
        total += float(wt.sum())
    mean = s1 / total
    cov = s2 / total - np.outer(mean, mean)
    return mean, (cov + cov.T) / 2


def sparse_quadratic_form(
    loss: CompiledLoss, X: Any, weights: Any = None
) -> tuple[scipy.sparse.csr_matrix, np.ndarray, float]:
    """(A, b, c), A a symmetric scipy.sparse CSR matrix holding only the blocks the score pattern allows
    (`block_quadratic_form`, assembled; keep the `BlockQuadratic` at large d).

    With `weights`, means over rows are weighted means Σ_t w_t(·)_t / Σ_t w_t.
    """
    A, b, c = block_quadratic_form(loss, X, weights)
    return A.tocsr(), b, c


def weighted_quadratic_form(loss: CompiledLoss, X: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) as dense arrays, with observation weights or none (`sparse_quadratic_form`, densified)."""
    A, b, c = sparse_quadratic_form(loss, X, weights)
    return A.toarray(), b, c
