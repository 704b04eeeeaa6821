"""Stage 2 — derivation: the score, ∂ᵢ² log f and the objective, exactly, by sympy or by automatic
differentiation on an expression graph; the objective variants (exact, sliced, denoising)."""

from .derivation import Derivation
from .graph import ExprGraph
from .objectives import OBJECTIVES, Denoising, Exact, Objective, Sliced, SlicedVR, make_objective

__all__ = [
    "OBJECTIVES",
    "Denoising",
    "Derivation",
    "Exact",
    "ExprGraph",
    "Objective",
    "Sliced",
    "SlicedVR",
    "make_objective",
]
