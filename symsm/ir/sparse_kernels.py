"""The sparse quadratic form of an objective quadratic in θ, as backend-independent IR.

For an exponential family the score of coordinate i is affine in θ, score_i = Σ_k a_ik(x) θ_k + o_i(x), and
the coefficient a_ik is *identically* zero (symbolically) whenever coordinate i's score does not involve θ_k —
in a graphical model, coordinate i involves only its own row of interactions. A = mean Σ_i h_i a_i a_iᵀ is
then a sum of d blocks, block i supported on the parameters coordinate i involves: for a Gaussian graphical
model in d dimensions (P = d(d+3)/2) A has O(d³) non-zeros instead of O(d⁴).

``quadratic_sparse_rows`` writes, per row, each *distinct* non-zero coefficient once (for a graphical model
the coefficients are ±x_j and constants, so about 5d outputs per row instead of d² + P — the generated
kernel's compile time grows faster than linearly in its outputs), their distinct ∂_i-derivatives, the
offsets o_i, c₀ and, on [0, ∞)ᵈ, h_i and h_i′; the host (symsm/runtime/sparse.py) gathers each
coordinate's block with BLAS, assembles A as a scipy.sparse matrix and b from three small products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy as sp

from .ir import build_forward_ir
from .kernel_set import ROW_MATRIX, KernelSet

if TYPE_CHECKING:
    from ..derive.derivation import Derivation

__all__ = ["SparseParts", "SparsePattern", "build_sparse_quadratic_kernels", "sparse_parts", "sparse_pattern"]

DESCRIPTION = "out[t] = [distinct a_ik, distinct d_i a_ik, o_i, c0, (h_i, h'_i)] at row t; A, b formed on the host."


@dataclass(frozen=True)
class SparsePattern:
    """columns[i]: the parameters (flat θ indices) whose coefficient a_ik in coordinate i's score is not
    identically zero."""

    columns: tuple[tuple[int, ...], ...]
    n_params: int
    weighted: bool

    @property
    def n_coeffs(self) -> int:
        return sum(len(c) for c in self.columns)

    @property
    def nnz_bound(self) -> int:
        """Entries of A stored by the blocks (before duplicates across coordinates are summed)."""
        return sum(len(c) ** 2 for c in self.columns)

    def key(self) -> str:
        return ";".join(",".join(map(str, c)) for c in self.columns)


@dataclass(frozen=True)
class SparseParts:
    """The quadratic objective through its distinct per-row quantities.

    `features`: the distinct non-zero coefficients a_ik (as expressions); `feature_index[i][m]` is the one of
    θ_k, k = pattern.columns[i][m], in coordinate i's score. `dfeatures`: the distinct non-zero ∂_i a_ik, with
    `dfeature_index[i][m]` (−1 where ∂_i a_ik = 0). `offsets`: o_i = score_i at θ = 0. `c_term`: the per-row c₀.
    `weights`, `weight_derivatives`: h_i, h_i′ (None on Rᵈ). Then, with means over rows,
        A = Σ_i mean h_i a_i a_iᵀ,   b_k = Σ_i mean [h_i ∂_i a_ik + h_i o_i a_ik + h_i′ a_ik],
    formed on the host from the kernel's per-row outputs [features, dfeatures, offsets, c₀, h, h′]: for a
    Gaussian graphical model about 5d outputs per row (the coefficients are ±x_j and 1), not d² + P."""

    pattern: SparsePattern
    features: tuple[sp.Expr, ...]
    feature_index: tuple[tuple[int, ...], ...]
    dfeatures: tuple[sp.Expr, ...]
    dfeature_index: tuple[tuple[int, ...], ...]
    offsets: tuple[sp.Expr, ...]
    c_term: sp.Expr
    weights: tuple[sp.Expr, ...] | None
    weight_derivatives: tuple[sp.Expr, ...] | None

    @property
    def outputs(self) -> list[sp.Expr]:
        out = [*self.features, *self.dfeatures, *self.offsets, self.c_term]
        if self.weights is not None and self.weight_derivatives is not None:
            out += [*self.weights, *self.weight_derivatives]
        return out


def _affine_split(score: sp.Expr, index: dict[sp.Symbol, int]) -> tuple[dict[int, sp.Expr], sp.Expr]:
    """score = Σ_k a_k θ_k + o, term by term (one pass over the terms of the sum; a term with θ inside a
    function or with several θ's falls back to differentiation)."""
    coeffs: dict[int, list[sp.Expr]] = {}
    offset: list[sp.Expr] = []
    for term in sp.Add.make_args(sp.expand(score) if not isinstance(score, sp.Add) else score):
        present = [p for p in term.free_symbols if p in index]
        if not present:
            offset.append(term)
            continue
        if len(present) == 1:
            p = present[0]
            factors = sp.Mul.make_args(term)
            if sum(1 for f in factors if f.has(p)) == 1 and p in factors:
                rest = tuple(f for f in factors if f != p)  # canonical already: no flatten
                coeffs.setdefault(index[p], []).append(
                    sp.Mul._from_args(rest) if len(rest) > 1 else (rest[0] if rest else sp.S.One)
                )
                continue
        for p in present:  # general affine term: its coefficients by differentiation
            coeffs.setdefault(index[p], []).append(sp.diff(term, p))
        offset.append(term.xreplace(dict.fromkeys(present, 0)))
    return {k: sp.Add(*v) for k, v in coeffs.items()}, sp.Add(*offset)


def sparse_parts(derivation: Derivation) -> SparseParts:
    """The pieces of the quadratic objective with only the coefficients that are not identically zero, found
    from the terms of each score (no P derivatives per coordinate), and each distinct expression once."""
    if not derivation.is_quadratic:
        raise ValueError(f"model {derivation.model.name!r}: the objective is not quadratic in θ")
    if derivation.manifold is not None:  # A = mean h FᵀPF couples the coordinates: not this per-coordinate form
        raise ValueError(
            f"model {derivation.model.name!r} has domain {derivation.model.domain!r}: the sparse quadratic form "
            "(penalized fits) is written for ℝᵈ, [0, ∞)ᵈ and boxes; fit it with symsm.fit (the dense closed form)"
        )
    theta = derivation.params
    x = derivation.data
    index = {p: k for k, p in enumerate(theta)}
    features: dict[sp.Expr, int] = {}
    dfeatures: dict[sp.Expr, int] = {}
    columns: list[tuple[int, ...]] = []
    f_index: list[tuple[int, ...]] = []
    d_index: list[tuple[int, ...]] = []
    offsets: list[sp.Expr] = []
    for i, s in enumerate(derivation.score):
        split, offset = _affine_split(s, index)
        ks = tuple(k for k in sorted(split) if not split[k].is_zero)
        columns.append(ks)
        f_index.append(tuple(features.setdefault(split[k], len(features)) for k in ks))
        dcoeffs = [sp.diff(split[k], x[i]) if x[i] in split[k].free_symbols else sp.S.Zero for k in ks]
        d_index.append(tuple(-1 if a.is_zero else dfeatures.setdefault(a, len(dfeatures)) for a in dcoeffs))
        offsets.append(offset)
    h = derivation.weights
    dh = derivation.weight_derivatives
    c_parts = []
    for i, o in enumerate(offsets):
        term = sp.diff(o, x[i]) + o**2 / 2
        c_parts.append(term if h is None or dh is None else h[i] * term + dh[i] * o)
    pattern = SparsePattern(tuple(columns), len(theta), h is not None)
    return SparseParts(
        pattern,
        tuple(features),
        tuple(f_index),
        tuple(dfeatures),
        tuple(d_index),
        tuple(offsets),
        sp.Add(*c_parts),
        h,
        dh,
    )


def sparse_pattern(derivation: Derivation) -> SparsePattern:
    """The non-zero pattern of the coefficients a_ik = ∂score_i/∂θ_k (symbolically zero ones left out)."""
    return sparse_parts(derivation).pattern


def build_sparse_quadratic_kernels(derivation: Derivation, parts: SparseParts | None = None) -> KernelSet:
    """``quadratic_sparse_rows``: per row, [features, dfeatures, offsets, c₀] and, on [0, ∞)ᵈ, [h, h′]."""
    parts = parts or sparse_parts(derivation)
    outputs = parts.outputs
    used: set[sp.Basic] = set().union(*(e.free_symbols for e in outputs)) if outputs else set()
    # the outputs are coefficients and offsets, free of θ for an exponential family: a kernel that read all
    # P = d(d+3)/2 parameters of a graphical model would spend its compile time (and memory) on them
    theta = [p for p in derivation.params if p in used]
    ir = build_forward_ir(outputs, theta, derivation.data, mode="per_sample")
    kernels = KernelSet()
    kernels.add("quadratic_sparse_rows", ir, ROW_MATRIX, DESCRIPTION)
    return kernels
