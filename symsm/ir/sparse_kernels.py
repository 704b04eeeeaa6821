"""The sparse quadratic form of an objective quadratic in θ, as backend-independent IR.

For an exponential family the score of coordinate i is affine in θ, score_i = Σ_k a_ik(x) θ_k + o_i(x), and
the coefficient a_ik is *identically* zero (symbolically) whenever coordinate i's score does not involve θ_k —
in a graphical model, coordinate i involves only its own row of interactions. A = mean Σ_i h_i a_i a_iᵀ is
then a sum of d blocks, block i supported on the parameters coordinate i involves: for a Gaussian graphical
model in d dimensions (P = d(d+3)/2) A has O(d³) non-zeros instead of O(d⁴).

``quadratic_sparse_rows`` writes, per row, only the non-zero coefficients (coordinate by coordinate, in the
order of `SparsePattern.columns`), then b_k, c₀ and, on [0, ∞)ᵈ, the weights h_i; the host
(symsm/runtime/sparse.py) forms each block with BLAS and assembles A as a scipy.sparse matrix.
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

DESCRIPTION = "out[t] = [a_ik != 0 (coordinate-major), b_k, c0, h_i] at row t; J = th.A.th/2 + b.th + c0."


@dataclass(frozen=True)
class SparsePattern:
    """columns[i]: the parameters (flat θ indices) whose coefficient a_ik in coordinate i's score is not
    identically zero. The per-row output holds Σ_i len(columns[i]) coefficients, then P + 1 + (d if weighted)."""

    columns: tuple[tuple[int, ...], ...]
    n_params: int
    weighted: bool

    @property
    def n_coeffs(self) -> int:
        return sum(len(c) for c in self.columns)

    @property
    def width(self) -> int:
        return self.n_coeffs + self.n_params + 1 + (len(self.columns) if self.weighted else 0)

    @property
    def nnz_bound(self) -> int:
        """Entries of A stored by the blocks (before duplicates across coordinates are summed)."""
        return sum(len(c) ** 2 for c in self.columns)

    def key(self) -> str:
        return ";".join(",".join(map(str, c)) for c in self.columns)


@dataclass(frozen=True)
class SparseParts:
    """The non-zero coefficients a_ik (coeffs[i][m] for θ_k, k = pattern.columns[i][m]), the offsets o_i, the
    per-sample b_k and c₀ of a quadratic objective, and the weights h_i (None on Rᵈ)."""

    pattern: SparsePattern
    coeffs: tuple[tuple[sp.Expr, ...], ...]
    b_terms: tuple[sp.Expr, ...]
    c_term: sp.Expr
    weights: tuple[sp.Expr, ...] | None


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
                coeffs.setdefault(index[p], []).append(sp.Mul(*[f for f in factors if f != p]))
                continue
        for p in present:  # general affine term: its coefficients by differentiation
            coeffs.setdefault(index[p], []).append(sp.diff(term, p))
        offset.append(term.xreplace(dict.fromkeys(present, 0)))
    return {k: sp.Add(*v) for k, v in coeffs.items()}, sp.Add(*offset)


def sparse_parts(derivation: Derivation) -> SparseParts:
    """The pieces of the quadratic objective with only the coefficients that are not identically zero, found
    from the terms of each score (no P derivatives per coordinate: a Gaussian graphical model in d dimensions
    needs O(d²) coefficients, not d·P = O(d³))."""
    if not derivation.is_quadratic:
        raise ValueError(f"model {derivation.model.name!r}: the objective is not quadratic in θ")
    theta = derivation.params
    x = derivation.data
    index = {p: k for k, p in enumerate(theta)}
    columns: list[tuple[int, ...]] = []
    coeffs: list[tuple[sp.Expr, ...]] = []
    offsets: list[sp.Expr] = []
    for s in derivation.score:
        split, offset = _affine_split(s, index)
        ks = tuple(k for k in sorted(split) if not split[k].is_zero)
        columns.append(ks)
        coeffs.append(tuple(split[k] for k in ks))
        offsets.append(offset)
    h = derivation.weights
    dh = derivation.weight_derivatives
    b_lists: list[list[sp.Expr]] = [[] for _ in theta]
    for i, (ks, cs) in enumerate(zip(columns, coeffs, strict=True)):
        for k, a in zip(ks, cs, strict=True):
            term = sp.diff(a, x[i]) + offsets[i] * a
            b_lists[k].append(term if h is None or dh is None else h[i] * term + dh[i] * a)
    c_parts = []
    for i, o in enumerate(offsets):
        term = sp.diff(o, x[i]) + o**2 / 2
        c_parts.append(term if h is None or dh is None else h[i] * term + dh[i] * o)
    pattern = SparsePattern(tuple(columns), len(theta), h is not None)
    return SparseParts(pattern, tuple(coeffs), tuple(sp.Add(*b) for b in b_lists), sp.Add(*c_parts), h)


def sparse_pattern(derivation: Derivation) -> SparsePattern:
    """The non-zero pattern of the coefficients a_ik = ∂score_i/∂θ_k (symbolically zero ones left out)."""
    return sparse_parts(derivation).pattern


def build_sparse_quadratic_kernels(derivation: Derivation, parts: SparseParts | None = None) -> KernelSet:
    """``quadratic_sparse_rows``: per row, the non-zero a_ik (coordinate-major), b_k, c₀ and the weights h_i."""
    parts = parts or sparse_parts(derivation)
    features = [a for row in parts.coeffs for a in row]
    weights = list(parts.weights or ())
    ir = build_forward_ir(
        [*features, *parts.b_terms, parts.c_term, *weights], derivation.params, derivation.data, mode="per_sample"
    )
    kernels = KernelSet()
    kernels.add("quadratic_sparse_rows", ir, ROW_MATRIX, DESCRIPTION)
    return kernels
