"""Exact derivatives of log f in the data coordinates and the score-matching objective.

For data x ∈ R^d and parameters θ ∈ R^P (Hyvärinen 2005):

    score_i        = ∂ log f / ∂x_i
    hessian_diag_i = ∂² log f / ∂x_i²
    objective      = Σ_i [hessian_diag_i + ½ score_i²]          (the per-sample integrand)
    J̃(θ)           = mean over samples of the objective
    gradient_k     = ∂ objective / ∂θ_k

On the non-negative orthant [0, ∞)ᵈ (`Model(domain="nonnegative")`) the integration by parts leaves a
boundary term at xᵢ = 0, so the objective is the generalized one (Hyvärinen 2007; Yu, Drton & Shojaie
2019) with the model's coordinate weight hᵢ = h(xᵢ):

    objective      = Σ_i [h_i hessian_diag_i + ½ h_i score_i² + h_i′ score_i]

On a box aᵢ ≤ xᵢ ≤ bᵢ (`Model(domain=symsm.Box(lower, upper))`) the same objective has hᵢ = h(distᵢ(xᵢ)), the
weight of the distance to the nearer finite end (symsm/model/box.py), and hᵢ′ its derivative in xᵢ (piecewise
for a two-sided interval or a capped weight: min and max differentiate to Heaviside steps).

Terms of log f that depend on θ alone (a normalising constant) have zero x-derivative and drop out
here, exactly. `Derivation` also detects objectives that are quadratic in θ (every score affine in θ,
i.e. exponential families) and gives the pieces of J̃ = ½θᵀAθ + bᵀθ + c₀ per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

import sympy as sp

if TYPE_CHECKING:
    from ..model.model import Model
    from .display import Readable

__all__ = ["PATHS", "Derivation", "ManifoldParts", "QuadraticParts", "theta_degree"]

# How a model's kernels are derived: "sympy" (sympy's diff, CSE and rational tidying: the shortest kernels for
# small models), "graph" (exact automatic differentiation on the hash-consed expression graph: scales to large
# d), or "auto" (sympy below a size budget, the graph beyond it; symsm.ir.kernels.SYMPY_BUDGET), or "structured"
# (models written with vectors and matrices: block-level tensor programs, symsm/derive/structured.py; "auto" keeps
# the scalar paths for them for now).
PATHS = ("auto", "sympy", "graph", "structured")


def check_path(path: object) -> str:
    """`path` if it names a derivation path, else a ValueError naming the argument and the choices."""
    if not isinstance(path, str) or path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return path


@dataclass(frozen=True)
class QuadraticParts:
    """Per-sample pieces of a quadratic objective: score_i = Σ_k coeffs[i][k] θ_k + offsets[i].

    Summed over i, the per-sample objective is ½θᵀA(x)θ + b(x)ᵀθ + c₀(x) with
    A_kl = Σ_i a_ik a_il, b_k = Σ_i (∂_i a_ik + c_i a_ik), c₀ = Σ_i (∂_i c_i + ½ c_i²); with coordinate
    weights h_i (domain "nonnegative") A_kl = Σ_i h_i a_ik a_il, b_k = Σ_i [h_i(∂_i a_ik + c_i a_ik) + h_i′ a_ik],
    c₀ = Σ_i [h_i(∂_i c_i + ½ c_i²) + h_i′ c_i].
    """

    coeffs: tuple[tuple[sp.Expr, ...], ...]  # a_ik, functions of x only (d × P)
    offsets: tuple[sp.Expr, ...]  # c_i, functions of x only (d)
    b_terms: tuple[sp.Expr, ...]  # per-sample b_k (P)
    c_term: sp.Expr  # per-sample c₀
    weights: tuple[sp.Expr, ...] | None = None  # h_i(x_i) in A (None: all 1, the plain objective)

    def a_term(self, k: int, l: int) -> sp.Expr:
        """Per-sample A_kl = Σ_i h_i a_ik a_il."""
        h = self.weights or (sp.Integer(1),) * len(self.coeffs)
        return sp.Add(*[h_i * row[k] * row[l] for h_i, row in zip(h, self.coeffs, strict=True)])


@dataclass(frozen=True)
class ManifoldParts:
    """The derivation of a model on the sphere or the simplex in the coordinates z of its `Geometry`.

    On ℝᵐ (alr): Σᵢ [∂ᵢ² g + ½ (∂ᵢ g)²]. On the sphere (Mardia, Kent & Laha 2016; weighted, Scealy & Wood
    2023; derived in symsm/model/manifold.py), with a = zᵀ∇g and zᵀ(∇²g)z = Σⱼ zⱼ ∂ⱼa − a:

        h [½(‖∇g‖² − a²) + Σᵢ ∂ᵢ²g − zᵀ(∇²g)z − (m − 1) a] + ∇hᵀ∇g − (zᵀ∇h) a.

    Expressions are in z; `in_data` writes them in the data coordinates.
    """

    geometry: Any
    params: tuple[sp.Symbol, ...]
    score: tuple[sp.Expr, ...]
    hessian_diag: tuple[sp.Expr, ...]
    objective: sp.Expr
    #: symbols standing for the weight's piecewise pieces (min, max, steps) in `objective`, and what they are
    hidden: tuple[tuple[sp.Symbol, sp.Expr], ...] = ()

    @classmethod
    def derive(cls, geometry: Any, params: tuple[sp.Symbol, ...]) -> ManifoldParts:
        """The parts for `geometry` (cached: the loss's, the fit's and the graph's kernels all ask for them)."""
        return _manifold_parts(geometry, params)

    @classmethod
    def _derive(cls, geometry: Any, params: tuple[sp.Symbol, ...]) -> ManifoldParts:
        z, g = geometry.coords, geometry.log_f
        tidy = (lambda e: e) if geometry.rewrites else _tidy  # together() would hide what the rewrites match
        score = tuple(tidy(sp.diff(g, zi)) for zi in z)
        hd = tuple(tidy(sp.diff(s, zi)) for s, zi in zip(score, z, strict=True))
        table: dict[sp.Expr, sp.Symbol] = {}
        if cls.boundary_safe(geometry):
            objective = cls.boundary_integrand(geometry, score, params, table)
        else:
            objective = cls.integrand(geometry, score, hd, table)
        hidden = tuple((sym, expr) for expr, sym in table.items())
        return cls(geometry, params, score, hd, objective, hidden)

    @staticmethod
    def boundary_safe(geometry: Any) -> bool:
        """True for the sqrt-mapped simplex under a boundary weight, where data may have zeros (z_j = 0)."""
        return geometry.transform == "sqrt" and geometry.weight is not None

    @staticmethod
    def without_theta_free_terms(objective: sp.Expr, params: Sequence[sp.Symbol]) -> sp.Expr:
        """The integrand expanded, its terms of the data alone dropped (J̃ up to a θ-free constant).

        On the sqrt-mapped simplex the score has terms c_j/z_j (from log z_j: the Jacobian, u_j^β), infinite
        at a zero z_j = 0, where the weight h ≤ z_j² vanishes: the integrand has a finite limit there, but
        written as it comes (h · (c/z)², ∂ⱼh · c/z) it is 0 · ∞ in floating point. Expanded, sympy's products
        cancel z_j against 1/z_j (∂ⱼh ∝ z_j; the PPI statistics' ∂ⱼt ∝ z_j), so every term that depends on θ
        through the score's finite part is a finite expression; what stays 0 · ∞ is h c²/z_j² and h c/z_j², free
        of θ when c is (β fixed), and dropped: J̃ changes by a constant, θ̂, ∇θJ̃ and the SEs do not. With a
        c that depends on θ (β estimated), rows with zeros stay non-finite and are reported as such.
        """
        theta = set(params)
        terms = sp.Add.make_args(sp.expand(objective))
        return sp.Add(*[t for t in terms if t.free_symbols & theta])

    @staticmethod
    def boundary_integrand(
        geometry: Any, score: Sequence[sp.Expr], params: Sequence[sp.Symbol], table: dict[sp.Expr, sp.Symbol]
    ) -> sp.Expr:
        """`without_theta_free_terms(integrand(...))` in a compact form: the same function of z and θ, with
        about a quarter of the operations after common subexpressions (the expanded form is a sum of
        hundreds of monomials, each its own products).

        Each score splits as sⱼ = pⱼ + qⱼ, pⱼ its terms with θ, qⱼ those without (c_j/z_j: the Jacobian,
        u_j^β). The integrand is a quadratic in s; its terms in q alone are θ-free and dropped, as the expanded
        form drops them. What is left holds q only in zⱼqⱼ and pⱼqⱼ, each expanded on its own so that z_j
        cancels against 1/z_j exactly (a = Σzⱼsⱼ = a_p + a_q):

            h[½(Σpⱼ² + 2Σpⱼqⱼ − a_p² − 2a_p a_q) + Σ∂ⱼpⱼ − (Σzⱼ∂ⱼa_p − a_p) − (m − 1)a_p] + Σ∂ⱼh pⱼ − (zᵀ∇h)a_p,

        finite at z_j = 0 wherever pⱼ is (θ-dependent terms of the score without 1/z_j: β fixed).
        """
        z, theta = geometry.coords, set(params)
        p, q = [], []
        for s in score:
            terms = sp.Add.make_args(sp.expand(s))
            p.append(sp.Add(*[t for t in terms if t.free_symbols & theta]))
            q.append(sp.Add(*[t for t in terms if not t.free_symbols & theta]))
        half = sp.Rational(1, 2)
        a_p = sp.Add(*[zi * pi for zi, pi in zip(z, p, strict=True)])
        a_q = sp.Add(*[sp.expand(zi * qi) for zi, qi in zip(z, q, strict=True)])
        pq = sp.Add(*[sp.expand(pi * qi) for pi, qi in zip(p, q, strict=True)])
        zhz = sp.Add(*[zi * sp.diff(a_p, zi) for zi in z]) - a_p
        divergence = sp.Add(*[sp.diff(pi, zi) for pi, zi in zip(p, z, strict=True)])
        squares = sp.Add(*[pi**2 for pi in p])
        core = half * (squares + 2 * pq - a_p**2 - 2 * a_p * a_q) + divergence - zhz - (len(z) - 1) * a_p
        h = _hide_piecewise(geometry.weight, table)
        dh = [_hide_piecewise(sp.diff(geometry.weight, zi), table) for zi in z]
        za = sp.Add(*[zi * dhi for zi, dhi in zip(z, dh, strict=True)])
        return h * core + sp.Add(*[dhi * pi for dhi, pi in zip(dh, p, strict=True)]) - za * a_p

    @staticmethod
    def integrand(
        geometry: Any, score: Sequence[sp.Expr], hd: Sequence[sp.Expr], table: dict[sp.Expr, sp.Symbol] | None = None
    ) -> sp.Expr:
        """The per-sample objective in z from the score and ∂ᵢ² g (and, on the sphere, their z-derivatives).
        With `table`, the weight's min, max and steps are written as symbols (recorded there), so that expanding
        the objective sees a polynomial in them (and keeps ∂ⱼh's factor zⱼ in sight)."""
        z = geometry.coords
        half = sp.Rational(1, 2)
        sq = sp.Add(*[s**2 for s in score])
        if geometry.kind == "real":
            return sp.Add(*hd) + half * sq
        a = sp.Add(*[zi * s for zi, s in zip(z, score, strict=True)])
        zhz = sp.Add(*[zi * sp.diff(a, zi) for zi in z]) - a  # Euler: Σⱼ zⱼ∂ⱼ(zᵀ∇g) = zᵀ∇²g z + zᵀ∇g
        core = half * (sq - a**2) + sp.Add(*hd) - zhz - (len(z) - 1) * a
        h = geometry.weight
        if h is None:
            return core
        dh = [sp.diff(h, zi) for zi in z]
        if table is not None:
            h, dh = _hide_piecewise(h, table), [_hide_piecewise(e, table) for e in dh]
        za = sp.Add(*[zi * dhi for zi, dhi in zip(z, dh, strict=True)])
        return h * core + sp.Add(*[dhi * s for dhi, s in zip(dh, score, strict=True)]) - za * a

    def in_data(self, exprs: Sequence[sp.Expr]) -> tuple[sp.Expr, ...]:
        """The expressions with z replaced by its expression in the data coordinates."""
        back = dict(zip(self.geometry.coords, self.geometry.back, strict=True))
        # the weight's pieces are written in the data once (building a min compares its arguments: costly)
        shown = {sym: piece.xreplace(back) for sym, piece in self.hidden}
        out = []
        for e in exprs:
            e = sp.sympify(e)
            for old, new in self.geometry.rewrites:
                e = e.xreplace({old: new})
            e = e.xreplace(back)
            out.append(e.xreplace(shown) if shown else e)
        return tuple(out)

    def quadratic_parts(self) -> QuadraticParts:
        """J̃ = ½θᵀAθ + bᵀθ + c₀ per sample when the score in z is affine in θ (the caller checks it).

        A's rows: the m coordinates with the score's coefficients a_ik (weight h), and on the sphere one more,
        ã_k = Σᵢ zᵢ a_ik with weight −h, so Σ h a_i a_iᵀ − h ã ãᵀ = h Fᵀ P F (P = I − zzᵀ); b and c₀ are the
        θ-derivative and the value of the integrand at θ = 0 (exact: it is quadratic in θ).
        """
        theta, z = self.params, self.geometry.coords
        zero = dict.fromkeys(theta, 0)
        coeffs = [tuple(sp.diff(s, p) for p in theta) for s in self.score]
        offsets = [s.xreplace(zero) for s in self.score]
        weights: tuple[sp.Expr, ...] | None = None
        if self.geometry.kind == "sphere":
            coeffs.append(
                tuple(sp.Add(*[zi * row[k] for zi, row in zip(z, coeffs, strict=True)]) for k in range(len(theta)))
            )
            offsets.append(sp.Add(*[zi * c for zi, c in zip(z, offsets, strict=True)]))
            h = self.geometry.weight if self.geometry.weight is not None else sp.Integer(1)
            weights = (h,) * len(z) + (-h,)
        b_terms = tuple(sp.diff(self.objective, p).xreplace(zero) for p in theta)
        c_term = self.objective.xreplace(zero)
        flat = self.in_data([*[a for row in coeffs for a in row], *offsets, *b_terms, c_term, *(weights or ())])
        P, m = len(theta), len(coeffs)
        rows = tuple(tuple(flat[i * P : (i + 1) * P]) for i in range(m))
        k = m * P
        return QuadraticParts(
            rows,
            tuple(flat[k : k + m]),
            tuple(flat[k + m : k + m + P]),
            flat[k + m + P],
            None if weights is None else tuple(flat[k + m + P + 1 :]),
        )


@lru_cache(maxsize=32)
def _manifold_parts(geometry: Any, params: tuple[sp.Symbol, ...]) -> ManifoldParts:
    return ManifoldParts._derive(geometry, params)


_PIECEWISE = (sp.Min, sp.Max, sp.Heaviside)


def _hide_piecewise(expr: sp.Expr, table: dict[sp.Expr, sp.Symbol]) -> sp.Expr:
    """`expr` with each outermost min, max or step replaced by a symbol (the same symbol for the same piece)."""
    if isinstance(expr, _PIECEWISE):
        if expr not in table:
            table[expr] = sp.Dummy(f"w{len(table)}", real=True)
        return table[expr]
    if not expr.args or not expr.has(*_PIECEWISE):
        return expr
    return expr.func(*[_hide_piecewise(a, table) for a in expr.args])


class Derivation:
    """The exact derivation of the score-matching objective for one model, as sympy expressions.

    Every attribute is computed on first access. The compiled kernels do not need them: they are built by
    automatic differentiation on the model's expression graph (symsm/derive/graph.py), which scales to large d;
    these expressions are for reading, printing (LaTeX) and analysis, and the tests check both against
    each other.

    Attributes
    ----------
    score : tuple of d sympy expressions ∂_i log f
    hessian_diag : tuple of d sympy expressions ∂_i² log f
    objective : the per-sample integrand Σ_i [∂_i² log f + ½(∂_i log f)²] (on [0, ∞)ᵈ the weighted one)
    weights, weight_derivatives : hᵢ and dhᵢ/dxᵢ per coordinate (domains "nonnegative" and "box"), else None
    gradient : tuple of P expressions ∂θ_k of the integrand (computed on first access)
    """

    def __init__(self, model: Model, *, path: str = "auto") -> None:
        self.model = model
        #: the derivation path the kernels are built by (see PATHS); the sympy expressions of this object are
        #: the same whatever the path
        self.path = check_path(path)
        if self.path == "structured":
            self.structured  # noqa: B018 — a model outside the supported class is refused here, clearly

    @cached_property
    def structured(self) -> Any:
        """The structured derivation (symsm/derive/structured.py: block-level programs, no scalar expansion)."""
        from .structured import derive_structured

        return derive_structured(self.model)

    @cached_property
    def manifold(self) -> ManifoldParts | None:
        """For models on the sphere or the simplex: the derivation in the coordinates z of score matching
        (symsm/model/manifold.py), else None. `score`, `hessian_diag` and `objective` are then these, written
        in the data coordinates (z replaced by its expression in the data: √u, log(u_i/u_d))."""
        geometry = getattr(self.model, "geometry", None)
        return None if geometry is None else ManifoldParts.derive(geometry, self.model.params)

    @cached_property
    def score(self) -> tuple[sp.Expr, ...]:
        """∂ᵢ log f for each data coordinate (sympy, computed on first access). A long sum is split once by
        the coordinates each term involves, and only those terms are differentiated: the same expressions,
        without d passes over every term (a graphical model's d² terms would cost d³). On the sphere: the
        gradient of log f extended off the sphere; on the simplex: the score in z (√u, or alr(u))."""
        if self.manifold is not None:
            return self.manifold.in_data(self.manifold.score)
        log_f = self.model.log_f
        terms = sp.Add.make_args(log_f)
        if len(terms) <= SCORE_SPLIT_TERMS:
            return tuple(_tidy(sp.diff(log_f, xi)) for xi in self.model.data)
        data = set(self.model.data)
        involving: dict[sp.Symbol, list[sp.Expr]] = {xi: [] for xi in self.model.data}
        for term in terms:
            for xi in term.free_symbols & data:
                involving[xi].append(term)
        return tuple(_tidy(sp.Add(*[_diff_term(t, xi) for t in involving[xi]])) for xi in self.model.data)

    @cached_property
    def hessian_diag(self) -> tuple[sp.Expr, ...]:
        """∂ᵢ² log f for each data coordinate (sympy, computed on first access)."""
        if self.manifold is not None:
            return self.manifold.in_data(self.manifold.hessian_diag)
        return tuple(_tidy(sp.diff(s, xi)) for s, xi in zip(self.score, self.model.data, strict=True))

    @cached_property
    def weights(self) -> tuple[sp.Expr, ...] | None:
        """hᵢ = h(xᵢ) per coordinate for domain "nonnegative", h(distᵢ(xᵢ)) on a box, None on Rᵈ (no weight)."""
        return self.model.coordinate_weights()

    @cached_property
    def weight_derivatives(self) -> tuple[sp.Expr, ...] | None:
        """hᵢ′ = dhᵢ/dxᵢ per coordinate (exact, by sympy; piecewise through Heaviside steps for min and max), None
        on Rᵈ."""
        if self.weights is None:
            return None
        return tuple(sp.diff(h, xi) for h, xi in zip(self.weights, self.model.data, strict=True))

    @cached_property
    def objective(self) -> sp.Expr:
        """The per-sample integrand Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²]; on [0, ∞)ᵈ the generalized one,
        Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] (integration by parts of hᵢ ∂ᵢ log f); on the
        sphere and the simplex the manifold objective (`ManifoldParts`)."""
        if self.manifold is not None:
            return self.manifold.in_data((self.manifold.objective,))[0]
        if self.weights is None:
            return sp.Add(*self.hessian_diag) + sp.Rational(1, 2) * sp.Add(*[s**2 for s in self.score])
        assert self.weight_derivatives is not None  # computed from the weights
        parts = zip(self.weights, self.weight_derivatives, self.hessian_diag, self.score, strict=True)
        return sp.Add(*[h * hd + sp.Rational(1, 2) * h * s**2 + dh * s for h, dh, hd, s in parts])

    @property
    def data(self) -> tuple[sp.Symbol, ...]:
        return self.model.data

    @property
    def params(self) -> tuple[sp.Symbol, ...]:
        return self.model.params

    @cached_property
    def gradient(self) -> tuple[sp.Expr, ...]:
        """∂θ_k of the per-sample integrand, symbolically (the kernels use reverse accumulation instead)."""
        return tuple(sp.diff(self.objective, p) for p in self.model.params)

    @cached_property
    def is_quadratic(self) -> bool:
        """True when every score component is affine in θ, so J̃ is exactly quadratic in θ.

        Decided structurally (degree in θ of each score ≤ 1); a model whose θ-nonlinearity cancels only
        after simplification is reported as not quadratic, which is safe (the iterative fit is used).
        """
        if self.path == "structured":
            return False  # no quadratic-form kernels on the structured path yet: fits iterate (safe, see above)
        theta = set(self.model.params)  # once: a graphical model has d(d+3)/2 parameters
        return all(theta_degree(s, theta) <= 1 for s in self.score)

    @cached_property
    def quadratic_parts(self) -> QuadraticParts | None:
        """The pieces of the quadratic objective, or None when `is_quadratic` is False."""
        if not self.is_quadratic:
            return None
        theta = self.model.params
        x = self.model.data
        zero = dict.fromkeys(theta, 0)
        if self.manifold is not None:
            return self.manifold.quadratic_parts()
        coeffs = tuple(tuple(sp.diff(s, p) for p in theta) for s in self.score)
        offsets = tuple(s.xreplace(zero) for s in self.score)
        if self.weights is None:
            b_terms = tuple(
                sp.Add(*[sp.diff(coeffs[i][k], x[i]) + offsets[i] * coeffs[i][k] for i in range(len(x))])
                for k in range(len(theta))
            )
            c_term = sp.Add(*[sp.diff(offsets[i], x[i]) + offsets[i] ** 2 / 2 for i in range(len(x))])
            return QuadraticParts(coeffs, offsets, b_terms, c_term)
        h, dh = self.weights, self.weight_derivatives
        assert dh is not None
        b_terms = tuple(
            sp.Add(
                *[
                    h[i] * (sp.diff(coeffs[i][k], x[i]) + offsets[i] * coeffs[i][k]) + dh[i] * coeffs[i][k]
                    for i in range(len(x))
                ]
            )
            for k in range(len(theta))
        )
        c_term = sp.Add(
            *[h[i] * (sp.diff(offsets[i], x[i]) + offsets[i] ** 2 / 2) + dh[i] * offsets[i] for i in range(len(x))]
        )
        return QuadraticParts(coeffs, offsets, b_terms, c_term, weights=h)

    @cached_property
    def readable(self) -> Readable:
        """The same expressions simplified for reading (`readable.score`, `.hessian_diag`, `.objective`,
        `.gradient`; symsm/derive/display.py): what `str(der)`, `symsm derive` and the LaTeX show."""
        from .display import Readable

        return Readable(self)

    def __str__(self) -> str:
        """The derivation as text, the same as `symsm derive` prints (symsm/derive/text.py)."""
        from .text import derivation_text

        return derivation_text(self)

    def to_latex(self, full_document: bool = False, **options: Any) -> str:
        """The derivation, step by step, as LaTeX (see `symsm.latex`)."""
        from ..latex.derivation import derivation_latex

        return derivation_latex(self, full_document=full_document, **options)

    def _repr_latex_(self) -> str:
        return self.to_latex()

    def __repr__(self) -> str:
        path = "" if self.path == "auto" else f", path={self.path!r}"
        return f"Derivation(model={self.model.name!r}, d={self.model.dim}, P={self.model.n_params}{path})"


def theta_degree(expr: sp.Expr, theta: set[sp.Symbol]) -> float:
    """Polynomial degree of `expr` in the symbols `theta` (inf where θ enters non-polynomially)."""
    memo: dict[sp.Basic, float] = {}

    def deg(e: sp.Basic) -> float:
        if e in memo:
            return memo[e]
        if not (e.free_symbols & theta):
            result = 0.0
        elif isinstance(e, sp.Symbol):
            result = 1.0
        elif isinstance(e, sp.Add):
            result = max(deg(a) for a in e.args)
        elif isinstance(e, sp.Mul):
            result = sum(deg(a) for a in e.args)
        elif isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp > 0:
            result = deg(e.base) * int(e.exp)
        else:
            result = float("inf")
        memo[e] = result
        return result

    return deg(expr)


def _diff_term(term: sp.Expr, xi: sp.Symbol) -> sp.Expr:
    """∂term/∂xi; a product with xi or xi**n as its only factor in xi without sympy's general machinery
    (c·xi·y → c·y), which costs milliseconds per term."""
    if isinstance(term, sp.Mul):
        factors = term.args
        hits = [k for k, f in enumerate(factors) if f.has(xi)]
        if len(hits) == 1:
            f = factors[hits[0]]
            rest = factors[: hits[0]] + factors[hits[0] + 1 :]
            if f == xi:
                # the other factors of a canonical product are already canonical: no flatten (most of the time
                # of a d = 500 graphical model's score) unless one factor is left
                return sp.Mul._from_args(rest) if len(rest) > 1 else (rest[0] if rest else sp.S.One)
            if isinstance(f, sp.Pow) and f.base == xi and f.exp.is_Integer:
                return sp.Mul(f.exp, sp.Pow(xi, f.exp - 1), *rest)
    return sp.diff(term, xi)


SCORE_SPLIT_TERMS = 64  # log f with more terms than this is differentiated term by term (`score`)
TIDY_MAX_OPS = 400  # larger expressions are left as sympy's diff returns them (CSE handles them)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Cheap rewrites that shorten derivatives without `simplify`.

    sinh(u)/cosh(u) → tanh(u); then one fraction with common factors pulled out
    (`together` + `factor_terms`), kept only where it is not larger than the input.
    """
    expr = _hyperbolic(expr)
    has_fraction = any(isinstance(n, sp.Pow) and n.exp.is_negative for n in sp.preorder_traversal(expr))
    if not has_fraction:
        return expr
    size = sp.count_ops(expr)
    if size > TIDY_MAX_OPS:
        return expr
    tidier = sp.factor_terms(sp.together(expr))
    return tidier if sp.count_ops(tidier) <= size else expr


def _hyperbolic(expr: sp.Expr) -> sp.Expr:
    if not expr.has(sp.cosh):
        return expr

    def rewrite(e: sp.Expr) -> sp.Expr:
        if not isinstance(e, sp.Mul):
            return e
        powers: dict[tuple[type, sp.Expr], sp.Expr] = {}
        rest = []
        for factor in e.args:
            base, exp = factor.as_base_exp()
            if isinstance(base, (sp.sinh, sp.cosh)) and exp.is_Integer:
                key = (type(base), base.args[0])
                powers[key] = powers.get(key, 0) + exp
            else:
                rest.append(factor)
        changed = False
        for (kind, arg), exp in list(powers.items()):
            other = (sp.cosh if kind is sp.sinh else sp.sinh, arg)
            if kind is sp.sinh and other in powers and exp > 0 and powers[other] < 0:
                n = min(exp, -powers[other])
                powers[(kind, arg)] -= n
                powers[other] += n
                rest.append(sp.tanh(arg) ** n)
                changed = True
        if not changed:
            return e
        rest += [f(arg) ** exp for (f, arg), exp in powers.items() if exp != 0]
        return sp.Mul(*rest)

    return expr.replace(lambda e: isinstance(e, sp.Mul), rewrite)
