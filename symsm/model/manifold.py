"""Data on the unit sphere and on the simplex: where score matching happens and with what weight.

A model with ``domain="sphere"`` or ``domain="simplex"`` is matched in coordinates z of a manifold (its
`Geometry`): on the sphere z = x itself; on the simplex either z = √u on the positive part of the sphere
(``transform="sqrt"``, Scealy & Wood 2023) or y = alr(u) = (log(u_i/u_d))_{i<d} on ℝ^{d−1}
(``transform="alr"``). The density of z is that of u times the Jacobian of the inverse map, so log f in z
is log f(u(z)) plus the log-Jacobian, added exactly (terms of θ alone, constants, drop out):

* sqrt: u_j = z_j², du = ∏_j 2 z_j dσ(z) on the sphere, log-Jacobian Σ_j log z_j (+ const);
* alr: u_j = e^{y_j} / (1 + Σ_k e^{y_k}), u_d = 1 / (1 + Σ_k e^{y_k}); |det ∂u_(<d)/∂y| = ∏_{j≤d} u_j,
  log-Jacobian Σ_{j≤d} log u_j.

Manifold score matching on S^{d−1} (Mardia, Kent & Laha 2016) with a weight h(z) ≥ 0 that depends on the
data only (Scealy & Wood 2023) — for unit z, with P = I − zzᵀ, ∇_S = P∇ and Δ_S the Laplace–Beltrami
operator, of g = log f extended off the sphere:

    J_h = E[ ½ h ‖P∇g‖² + h Δ_S g + (P∇h)ᵀ(P∇g) ],
    ‖P∇g‖² = ‖∇g‖² − (zᵀ∇g)²,   Δ_S g = Σ_i ∂_i²g − zᵀ(∇²g)z − (d−1) zᵀ∇g,
    (P∇h)ᵀ(P∇g) = ∇hᵀ∇g − (zᵀ∇h)(zᵀ∇g).

It follows from the weighted Fisher divergence ½E[h‖∇_S log p − ∇_S g‖²] by the divergence theorem on the
sphere: E[h ⟨∇_S log p, ∇_S g⟩] = ∫ h ⟨∇_S p, ∇_S g⟩ dσ = −∫ p div_S(h ∇_S g) dσ
= −E[h Δ_S g + ⟨∇_S h, ∇_S g⟩], with no boundary term on the whole sphere, and on the part z ≥ 0 where the
simplex maps (a manifold with boundary {z_j = 0}) none either when h p vanishes there — what the boundary
weights minsq = min(min_j z_j², a_c²) and prodsq = min(∏_j z_j², a_c²) are for (scorematchingad). The
weights are Lipschitz, which the divergence theorem allows (their gradient exists almost everywhere).
The Laplace–Beltrami formula is Δ = ∂_r² + (d−1)/r ∂_r + Δ_S/r² at r = 1 with ∂_r g = zᵀ∇g and
∂_r² g = zᵀ(∇²g)z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy as sp

from ..core.errors import ModelError

__all__ = ["MANIFOLD_DOMAINS", "SIMPLEX_TRANSFORMS", "SPHERE_WEIGHTS", "Geometry", "make_geometry"]

MANIFOLD_DOMAINS = ("sphere", "simplex")
SIMPLEX_TRANSFORMS = ("sqrt", "alr")
#: named boundary weights for the sphere and the sqrt-mapped simplex (scorematchingad's `bdryw`)
SPHERE_WEIGHTS = ("ones", "minsq", "prodsq")
#: a_c when it is not given: Scealy & Wood's choice for the microbiome data (2023, Section 6)
DEFAULT_A_C = 0.01


@dataclass(frozen=True)
class Geometry:
    """Where a model on the sphere or the simplex is score-matched.

    kind: "sphere" (the manifold objective on S^{m−1}) or "real" (the plain objective on ℝ^m);
    coords: the m coordinates z of score matching (the data symbols themselves on the sphere);
    log_f: log f in z, with the log-Jacobian of the map added (only terms that depend on z);
    back: z_i as an expression in the data symbols (the kernels read the data and compute z from it);
    weight: h(z), a function of the data only (None: h = 1); name: "ones", "minsq", "prodsq" or "custom";
    transform: None (sphere), "sqrt" or "alr"; a_c: the cap of minsq / prodsq (None otherwise).
    """

    kind: str
    coords: tuple[sp.Symbol, ...]
    log_f: sp.Expr
    back: tuple[sp.Expr, ...]
    weight: sp.Expr | None
    weight_name: str
    transform: str | None
    a_c: float | None
    #: exact rewrites applied before `back` when writing derivatives in the data (alr: 1 + Σ e^y → 1/u_d,
    #: e^{y_i} → u_i/u_d), so that they read in u
    rewrites: tuple[tuple[sp.Expr, sp.Expr], ...] = ()

    def zeros_allowed(self) -> bool:
        """Whether zero parts u_j (j < d) are data: alr only, when the score in y written in u is a polynomial
        in u. Then so is the integrand (∂u_k/∂y_j = u_k(δ_kj − u_j) is one too), and a row on the face u_j = 0
        gets the limit of its value from inside the simplex — scorematchingad's alr fits of compositions with
        zeros. The last part, the alr denominator, stays > 0."""
        return self.transform == "alr" and _score_is_polynomial_in_data(self)

    def canonical(self) -> list[str]:
        """What enters the model's cache key beyond log f and the domain."""
        custom = sp.srepr(self.weight) if self.weight_name == "custom" else ""  # named weights: name and a_c
        return ["geometry", str(self.transform), self.weight_name, repr(self.a_c), custom]


def _z_symbols(data: tuple[sp.Symbol, ...], count: int, stem: str) -> tuple[sp.Symbol, ...]:
    """Fresh coordinates z (Dummies: never equal to a model's symbols), one per index."""
    return tuple(sp.Dummy(f"{stem}{i}", real=True) for i in range(count))


def _named_weight(name: str, z: tuple[sp.Symbol, ...], a_c: float) -> sp.Expr:
    cap = sp.Float(a_c) ** 2
    if name == "minsq":
        return sp.Min(*[zi**2 for zi in z], cap)
    return sp.Min(sp.Mul(*[zi**2 for zi in z]), cap)


def _check_a_c(a_c: Any, weight: str) -> float:
    if a_c is None:
        return DEFAULT_A_C
    if isinstance(a_c, bool) or not isinstance(a_c, (int, float)) or not math.isfinite(a_c) or not 0 < a_c <= 1:
        raise ModelError(f"a_c must be a number in (0, 1] (the cap of the {weight!r} weight, in √u), got {a_c!r}")
    return float(a_c)


def _custom_weight(weight: Any, data: tuple[sp.Symbol, ...]) -> sp.Expr:
    """A weight written by the user: a sympy expression or a formula string in the data coordinates."""
    if isinstance(weight, str):
        from .parse import parse_formula

        try:
            expr = parse_formula(weight, {str(x): x for x in data})
        except ModelError as exc:
            raise ModelError(f"weight: {exc} (a weight on the sphere is h(x) in the data coordinates)") from None
    elif isinstance(weight, sp.Expr):
        expr = weight
    else:
        raise ModelError(
            f"weight must be one of {SPHERE_WEIGHTS}, a formula string or a sympy expression in the data "
            f"coordinates, got {type(weight).__name__}"
        )
    extra = expr.free_symbols - set(data)
    if extra:
        raise ModelError(f"weight h(x) must depend on the data only; it also uses {sorted(map(str, extra))}")
    return expr


@lru_cache(maxsize=64)
def _score_is_polynomial_in_data(geometry: Geometry) -> bool:
    back = dict(zip(geometry.coords, geometry.back, strict=True))
    data = sorted({s for b in geometry.back for s in b.free_symbols}, key=str)
    for yi in geometry.coords:
        score = sp.diff(geometry.log_f, yi)
        for old, new in geometry.rewrites:
            score = score.xreplace({old: new})
        score = sp.expand(score.xreplace(back))
        if not score.is_polynomial(*data):
            return False
    return True


def make_geometry(
    domain: str, log_f: sp.Expr, data: tuple[sp.Symbol, ...], weight: Any, transform: Any, a_c: Any
) -> Geometry:
    """The `Geometry` of a model on the sphere or the simplex (`Model(domain=..., transform=..., weight=...,
    a_c=...)`), validated; ModelError names the argument and what was expected."""
    d = len(data)
    if d < 2:
        raise ModelError(f"domain {domain!r} needs at least 2 data coordinates, got {d}")
    if domain == "sphere":
        if transform is not None:
            raise ModelError(f"transform applies to domain='simplex' only, got transform={transform!r} on the sphere")
        return _sphere_geometry(log_f, data, data, tuple(data), weight, a_c, None)
    transform = "sqrt" if transform is None else transform
    if transform not in SIMPLEX_TRANSFORMS:
        raise ModelError(f"transform must be one of {SIMPLEX_TRANSFORMS} on the simplex, got {transform!r}")
    if transform == "sqrt":
        z = _z_symbols(data, d, "z")
        mapped = log_f.xreplace({u: zi**2 for u, zi in zip(data, z, strict=True)}) + sp.Add(*[sp.log(zi) for zi in z])
        back = tuple(sp.sqrt(u) for u in data)
        return _sphere_geometry(mapped, data, z, back, "minsq" if weight is None else weight, a_c, "sqrt")
    # alr: plain score matching on ℝ^{d−1}; no boundary, so no weight
    if weight is not None or a_c is not None:
        raise ModelError("weight and a_c do not apply to transform='alr' (ℝ^{d−1} has no boundary)")
    y = _z_symbols(data, d - 1, "y")
    denom = 1 + sp.Add(*[sp.exp(yi) for yi in y])
    u_of_y = [sp.exp(yi) / denom for yi in y] + [1 / denom]
    log_u = [yi - sp.log(denom) for yi in y] + [-sp.log(denom)]
    subs = dict(zip(data, u_of_y, strict=True))
    # log u_j written out (not log of the quotient), so the log-Jacobian's derivatives stay short
    mapped = sp.expand_log(log_f, force=True).xreplace({sp.log(u): lu for u, lu in zip(data, log_u, strict=True)})
    mapped = mapped.xreplace(subs) + sp.Add(*log_u)
    back = tuple(sp.log(u) - sp.log(data[-1]) for u in data[:-1])
    rewrites = ((denom, 1 / data[-1]), *((sp.exp(yi), u / data[-1]) for yi, u in zip(y, data, strict=False)))
    return Geometry("real", y, _data_terms(mapped, y), back, None, "ones", "alr", None, rewrites)


def _data_terms(expr: sp.Expr, coords: tuple[sp.Symbol, ...]) -> sp.Expr:
    free = set(coords)
    return sp.Add(*[t for t in sp.Add.make_args(sp.expand(expr, deep=False)) if t.free_symbols & free])


def _sphere_geometry(
    log_f: sp.Expr,
    data: tuple[sp.Symbol, ...],
    z: tuple[sp.Symbol, ...],
    back: tuple[sp.Expr, ...],
    weight: Any,
    a_c: Any,
    transform: str | None,
) -> Geometry:
    if weight is None or (isinstance(weight, str) and weight == "ones"):
        if a_c is not None:
            raise ModelError("a_c applies to the weights 'minsq' and 'prodsq' only")
        h, name, cap = None, "ones", None
    elif isinstance(weight, str) and weight in ("minsq", "prodsq"):
        cap = _check_a_c(a_c, weight)
        h, name = _named_weight(weight, z, cap), weight
    else:
        if transform is not None:
            raise ModelError(f"weight on the simplex must be one of {SPHERE_WEIGHTS}, got {weight!r}")
        if a_c is not None:
            raise ModelError("a_c applies to the weights 'minsq' and 'prodsq' only")
        h, name, cap = _custom_weight(weight, data), "custom", None
    return Geometry("sphere", z, _data_terms(log_f, z), back, h, name, transform, cap)
