"""Score-matching objectives: how the per-sample integrand is built from log f.

An `Objective` builds the integrand on the model's expression graph (symsm/graph.py), from the score, the
Hessian diagonal, the data leaves and — for randomised objectives — auxiliary per-sample inputs (random
directions, noise) that are drawn on the host and fed to the kernels as extra data columns. It also says
what of it enters a cache key (`options`): the draws themselves are data, so `loss.resample(seed)` needs
no recompilation.

The exact objective (Hyvärinen 2005) is Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²]; for a model on [0, ∞)ᵈ it is
weighted by the model's hᵢ = h(xᵢ) (see `Exact`). An objective lists the domains it handles (`domains`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sympy as sp

if TYPE_CHECKING:
    from .codegen.graph_kernels import ModelGraph
    from .model import Model

__all__ = ["OBJECTIVES", "Exact", "Objective", "make_objective"]


@dataclass(frozen=True)
class Objective:
    """Base class. Subclasses set `name` and implement `integrand`; randomised ones implement the aux hooks."""

    name = "objective"
    #: the model domains whose boundary conditions this objective's integration by parts respects
    domains: ClassVar[tuple[str, ...]] = ("real",)

    def check_model(self, model: Model) -> None:
        """Refuse a model whose domain this objective does not handle (its estimate would be biased)."""
        if model.domain not in self.domains:
            raise ValueError(
                f"objective {self.name!r} supports the domains {self.domains}, not {model.domain!r} of model "
                f"{model.name!r}; use objective='exact', which is weighted for [0, ∞)^d"
            )

    def options(self) -> dict[str, Any]:
        """Everything that shapes the generated code (part of the cache key)."""
        return {}

    # -- auxiliary per-sample inputs (none for the exact objective)
    def aux_symbols(self, model: Model) -> tuple[sp.Symbol, ...]:
        """Symbols of the extra per-row inputs, in column order after the data columns."""
        return ()

    def draw(self, model: Model, n: int, seed: int) -> np.ndarray:
        """The extra per-row inputs for n rows, shape (n, len(aux_symbols)); deterministic in (n, seed)."""
        return np.empty((n, 0))

    # -- the integrand
    def integrand(self, mg: ModelGraph) -> int:
        """The per-sample integrand as a node of `mg.graph` (mg.aux holds the aux leaves)."""
        raise NotImplementedError

    @property
    def exact(self) -> bool:
        return False


@dataclass(frozen=True)
class Exact(Objective):
    """Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²] (Hyvärinen 2005); on [0, ∞)ᵈ the generalized objective
    Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] with the model's weight hᵢ = h(xᵢ) (Hyvärinen 2007;
    Yu, Drton & Shojaie 2019)."""

    name = "exact"
    domains = ("real", "nonnegative")

    def integrand(self, mg: ModelGraph) -> int:
        g = mg.graph
        half = g.const(Fraction(1, 2))
        if mg.weight is None:
            return g.add(*mg.hessian_diag, g.mul(half, g.add(*[g.pow(s, 2) for s in mg.score])))
        terms = []
        for h, dh, hd, s in zip(mg.weight, mg.weight_prime, mg.hessian_diag, mg.score, strict=True):
            terms += [g.mul(h, g.add(hd, g.mul(half, g.pow(s, 2)))), g.mul(dh, s)]
        return g.add(*terms)

    @property
    def exact(self) -> bool:
        return True


OBJECTIVES: dict[str, type[Objective]] = {"exact": Exact}


def make_objective(objective: str | Objective = "exact", **options: Any) -> Objective:
    """An Objective from its name and options (`model.compile(objective=..., **options)`)."""
    if isinstance(objective, Objective):
        if options:
            raise TypeError(f"options {sorted(options)} given with an Objective instance")
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    try:
        return OBJECTIVES[objective](**options)
    except TypeError as exc:
        raise TypeError(f"objective {objective!r}: {exc}") from None
