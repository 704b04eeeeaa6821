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

from .ir import build_forward_ir
from .kernel_set import ROW_MATRIX, KernelSet

if TYPE_CHECKING:
    from ..derive.derivation import Derivation

__all__ = ["SparsePattern", "build_sparse_quadratic_kernels", "sparse_pattern"]

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


def sparse_pattern(derivation: Derivation) -> SparsePattern:
    """The non-zero pattern of the coefficients a_ik = ∂score_i/∂θ_k (symbolically zero ones left out)."""
    parts = derivation.quadratic_parts
    if parts is None:
        raise ValueError(f"model {derivation.model.name!r}: the objective is not quadratic in θ")
    columns = tuple(tuple(k for k, a in enumerate(row) if not a.is_zero) for row in parts.coeffs)
    return SparsePattern(columns, len(derivation.params), parts.weights is not None)


def build_sparse_quadratic_kernels(derivation: Derivation) -> KernelSet:
    """``quadratic_sparse_rows``: per row, the non-zero a_ik (coordinate-major), b_k, c₀ and the weights h_i."""
    parts = derivation.quadratic_parts
    assert parts is not None
    pattern = sparse_pattern(derivation)
    features = [parts.coeffs[i][k] for i, cols in enumerate(pattern.columns) for k in cols]
    weights = list(parts.weights or ())
    ir = build_forward_ir(
        [*features, *parts.b_terms, parts.c_term, *weights], derivation.params, derivation.data, mode="per_sample"
    )
    kernels = KernelSet()
    kernels.add("quadratic_sparse_rows", ir, ROW_MATRIX, DESCRIPTION)
    return kernels
