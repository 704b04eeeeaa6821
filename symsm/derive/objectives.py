"""Score-matching objectives: how the per-sample integrand is built from log f.

An `Objective` builds the integrand on the model's expression graph (symsm/derive/graph.py), from the score, the
Hessian diagonal, the data leaves and — for randomised objectives — auxiliary per-sample inputs (random
directions, noise) that are drawn on the host and fed to the kernels as extra data columns. It also says
what of it enters a cache key (`options`): the draws themselves are data, so `loss.resample(seed)` needs
no recompilation.

The exact objective (Hyvärinen 2005) is Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²]; for a model on [0, ∞)ᵈ it is
weighted by the model's hᵢ = h(xᵢ) (see `Exact`). An objective lists the domains it handles (`domains`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sympy as sp

if TYPE_CHECKING:
    from ..ir.graph_kernels import ModelGraph
    from ..model.model import Model

__all__ = ["OBJECTIVES", "Denoising", "Exact", "Objective", "Sliced", "SlicedVR", "make_objective"]


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
                f"{model.name!r}; use objective='exact', which handles every domain (weighted on [0, ∞)^d and "
                "boxes, manifold score matching on the sphere and the simplex)"
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

    @property
    def keeps_quadratic(self) -> bool:
        """True when the integrand is quadratic in θ whenever every ∂ᵢ log f is affine in θ (exponential
        families): the fit then has a closed form. False (the safe default) sends fits to L-BFGS-B."""
        return False


@dataclass(frozen=True)
class Exact(Objective):
    """Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²] (Hyvärinen 2005); on [0, ∞)ᵈ and on a box the generalized objective
    Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] with the model's weight hᵢ = h(distᵢ(xᵢ)) and its
    derivative in xᵢ (Hyvärinen 2007; Yu, Drton & Shojaie 2019)."""

    name = "exact"
    domains = ("real", "nonnegative", "box", "sphere", "simplex")

    def integrand(self, mg: ModelGraph) -> int:
        g = mg.graph
        half = g.const(Fraction(1, 2))
        geometry = getattr(mg.model, "geometry", None)
        if geometry is not None and geometry.kind == "sphere":
            return self.sphere_integrand(mg)
        if mg.weight is None:
            return g.add(*mg.hessian_diag, g.mul(half, g.add(*[g.pow(s, 2) for s in mg.score])))
        assert mg.weight_prime is not None  # set with the weight
        terms = []
        for h, dh, hd, s in zip(mg.weight, mg.weight_prime, mg.hessian_diag, mg.score, strict=True):
            terms += [g.mul(h, g.add(hd, g.mul(half, g.pow(s, 2)))), g.mul(dh, s)]
        return g.add(*terms)

    @staticmethod
    def sphere_integrand(mg: ModelGraph) -> int:
        """Manifold score matching on S^{m−1} (Mardia, Kent & Laha 2016), weighted by h(z) (Scealy & Wood 2023;
        derived in symsm/model/manifold.py), with g = log f in z and a = zᵀ∇g:

            h [½(‖∇g‖² − a²) + Σᵢ ∂ᵢ²g − zᵀ(∇²g)z − (m − 1) a] + ∇hᵀ∇g − (zᵀ∇h) a.

        a and zᵀ(∇²g)z are forward tangents along v = z, as in `Sliced`, with no d × d Hessian: the first
        tangent D g = zᵀ∇g, the second D(D g) = zᵀ(∇²g)z + zᵀ∇g, since the direction z moves with z.
        """
        g = mg.graph
        half = g.const(Fraction(1, 2))
        seeds = {zi: zi for zi in mg.x}
        memo: dict[int, int] = {}
        a = g.directional(mg.log_f, seeds, memo)
        second = g.directional(a, seeds, memo)  # zᵀ(∇²g)z + a
        m = len(mg.x)
        squares = g.add(*[g.pow(s, 2) for s in mg.score])
        core = g.add(
            g.mul(half, g.sub(squares, g.pow(a, 2))),
            *mg.hessian_diag,
            g.neg(second),
            g.mul(g.const(-(m - 2)), a),
        )
        h = mg.manifold_weight
        if h is None:
            return core
        dh = [g.tangent(h, i, {}) for i in range(m)]
        za = g.directional(h, seeds, {})
        return g.add(g.mul(h, core), *[g.mul(d, s) for d, s in zip(dh, mg.score, strict=True)], g.neg(g.mul(za, a)))

    @property
    def exact(self) -> bool:
        return True

    @property
    def keeps_quadratic(self) -> bool:
        return True


MAX_DIRECTIONS = 256  # n_directions at most: each direction adds d columns per row and d² work per row (ICA)
DIRECTIONS = ("rademacher", "gaussian")

_AUX_SYMBOLS: dict[str, sp.Dummy] = {}


def _aux_symbol(name: str) -> sp.Dummy:
    """One Dummy per name per process: the same symbol on every call, never equal to a model's symbol."""
    sym = _AUX_SYMBOLS.get(name)
    if sym is None:
        sym = _AUX_SYMBOLS[name] = sp.Dummy(name, real=True)
    return sym


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_DIRECTIONS:
        raise ValueError(f"{name} must be an integer between 1 and {MAX_DIRECTIONS}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Sliced(Objective):
    """Sliced score matching (Song et al. 2019): the mean over M random directions v of
    vᵀ(∇ₓ² log f)v + ½ (vᵀ∇ₓ log f)², an unbiased estimate of the exact integrand whenever E[vvᵀ] = I
    (Hutchinson: E[vᵀHv] = tr H = Σᵢ ∂ᵢ² log f, E[(vᵀs)²] = ‖s‖²).

    Both terms are derivatives of g(t) = log f(x + t v) at t = 0, forward tangents along v on the expression
    graph: g′(0) = vᵀs of log f, g″(0) = vᵀHv of g′ — a Hessian-vector product, never the d × d Hessian, so a
    direction costs about as much as one score evaluation.

    Directions are **per sample** (each row t gets its own v_t1 … v_tM, an M·d block of auxiliary columns:
    column m·d + i of the block is coordinate i of direction m). Shared directions (the same M vectors for
    every row) would be cheaper to store but are not consistent: the objective would then see the model
    only through the M directions' projections, so with M < d a Gaussian precision matrix is not even
    identified, and the slicing error would not average out over the rows (its variance stays O(1/M)
    whatever N is). Per-sample directions keep the estimator unbiased with a slicing variance O(1/(N·M)).

    directions: "rademacher" (±1 entries, default; the smallest variance of vᵀHv among E vvᵀ = I choices
    with independent entries) or "gaussian" (standard normal). n_directions: M, 1 by default.
    """

    name = "sliced"
    directions: str = "rademacher"
    n_directions: int = 1

    def __post_init__(self) -> None:
        if self.directions not in DIRECTIONS:
            raise ValueError(f"directions must be one of {DIRECTIONS}, got {self.directions!r}")
        object.__setattr__(self, "n_directions", _check_count(self.n_directions, "n_directions"))

    def options(self) -> dict[str, Any]:
        # The kernels are the same for both direction distributions (only the draws differ).
        return {"n_directions": self.n_directions}

    def aux_symbols(self, model: Model) -> tuple[sp.Symbol, ...]:
        return tuple(_aux_symbol(f"v{m}_{i}") for m in range(self.n_directions) for i in range(model.dim))

    def draw(self, model: Model, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = (n, self.n_directions * model.dim)
        if self.directions == "rademacher":
            return rng.integers(0, 2, size=shape).astype(np.float64) * 2.0 - 1.0
        return rng.standard_normal(shape)

    def directional_terms(self, mg: ModelGraph, m: int) -> tuple[int, int]:
        """(g′(0), g″(0)) = (vᵀs, vᵀHv) for direction m, as nodes of `mg.graph`.

        Both are forward tangents along v, g′ of log f and g″ of g′ (one memo: a node's tangent along v is the
        same in both sweeps). Not vᵀs from the score's nodes: the score comes from a reverse sweep, and its
        tangent would repeat that sweep's work (for ICA, s = −Wᵀ tanh(Wx) costs d² per row and its tangent d²
        more, where g′(0) = −Σₖ tanh(yₖ)(Wv)ₖ needs only Wv).
        """
        g, d = mg.graph, mg.model.dim
        v = mg.aux[m * d : (m + 1) * d]
        seeds = dict(zip(mg.x, v, strict=True))
        memo: dict[int, int] = {}
        first = g.directional(mg.log_f, seeds, memo)
        second = g.directional(first, seeds, memo)
        return first, second

    def integrand(self, mg: ModelGraph) -> int:
        g = mg.graph
        half = g.const(Fraction(1, 2))
        terms = []
        for m in range(self.n_directions):
            first, second = self.directional_terms(mg, m)
            terms.append(g.add(second, g.mul(half, g.pow(first, 2))))
        return g.mul(g.const(Fraction(1, self.n_directions)), g.add(*terms))

    @property
    def keeps_quadratic(self) -> bool:
        return True


@dataclass(frozen=True)
class SlicedVR(Sliced):
    """Sliced score matching with variance reduction (Song et al. 2019): ½‖∇ₓ log f‖² exactly (it is cheap)
    plus the sliced estimate (1/M) Σ_m vᵀ(∇ₓ² log f)v of the trace term. Same directions and options."""

    name = "sliced_vr"

    def integrand(self, mg: ModelGraph) -> int:
        g = mg.graph
        half = g.const(Fraction(1, 2))
        second = [self.directional_terms(mg, m)[1] for m in range(self.n_directions)]
        trace = g.mul(g.const(Fraction(1, self.n_directions)), g.add(*second))
        return g.add(trace, g.mul(half, g.add(*[g.pow(s, 2) for s in mg.score])))


@dataclass(frozen=True)
class Denoising(Objective):
    """Denoising score matching (Vincent 2011): ½‖∇ₓ log f(x̃) + (x̃ − x)/σ²‖² with x̃ = x + σε, ε ~ N(0, I),
    averaged over `n_directions` noise draws per sample.

    It needs the score only (first derivatives), evaluated at x̃: the score's nodes with x replaced by
    x + σε on the expression graph. Its minimiser is the score-matching fit to the data convolved with
    N(0, σ²I), not to the data: biased by O(σ²) (a Gaussian's fitted covariance is S + σ²I), with a variance
    that grows like 1/(Nσ²) as σ shrinks. ε is drawn per sample (K·d auxiliary columns, column k·d + i is
    coordinate i of draw k); (x̃ − x)/σ² = ε/σ.

    noise_scale: σ > 0 (part of the generated code). n_directions: K noise draws per sample, 1 by default.
    """

    name = "denoising"
    noise_scale: float = 0.1
    n_directions: int = 1

    def __post_init__(self) -> None:
        sigma = self.noise_scale
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
            raise ValueError(f"noise_scale must be a positive finite number, got {sigma!r}")
        if not (math.isfinite(float(sigma)) and float(sigma) > 0):
            raise ValueError(f"noise_scale must be a positive finite number, got {sigma!r}")
        object.__setattr__(self, "noise_scale", float(sigma))
        object.__setattr__(self, "n_directions", _check_count(self.n_directions, "n_directions"))

    def options(self) -> dict[str, Any]:
        return {"noise_scale": self.noise_scale, "n_directions": self.n_directions}

    def aux_symbols(self, model: Model) -> tuple[sp.Symbol, ...]:
        return tuple(_aux_symbol(f"eps{k}_{i}") for k in range(self.n_directions) for i in range(model.dim))

    def draw(self, model: Model, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((n, self.n_directions * model.dim))

    def noisy_score(self, mg: ModelGraph, k: int) -> list[int]:
        """∇ log f at x̃ = x + σε_k, as nodes of `mg.graph` (the score with x substituted)."""
        g, d = mg.graph, mg.model.dim
        sigma = g.const(self.noise_scale)
        eps = mg.aux[k * d : (k + 1) * d]
        mapping = {x: g.add(x, g.mul(sigma, e)) for x, e in zip(mg.x, eps, strict=True)}
        memo: dict[int, int] = {}
        return [g.substitute(s, mapping, memo) for s in mg.score]

    def integrand(self, mg: ModelGraph) -> int:
        g, d = mg.graph, mg.model.dim
        half = g.const(Fraction(1, 2))
        inv_sigma = g.const(1.0 / self.noise_scale)
        terms = []
        for k in range(self.n_directions):
            eps = mg.aux[k * d : (k + 1) * d]
            noisy = self.noisy_score(mg, k)
            terms += [g.pow(g.add(s, g.mul(inv_sigma, e)), 2) for s, e in zip(noisy, eps, strict=True)]
        return g.mul(half, g.const(Fraction(1, self.n_directions)), g.add(*terms))

    @property
    def keeps_quadratic(self) -> bool:
        return True


OBJECTIVES: dict[str, type[Objective]] = {
    "exact": Exact,
    "sliced": Sliced,
    "sliced_vr": SlicedVR,
    "denoising": Denoising,
}


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
