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

Terms of log f that depend on θ alone (a normalising constant) have zero x-derivative and drop out
here, exactly. `Derivation` also detects objectives that are quadratic in θ (every score affine in θ,
i.e. exponential families) and gives the pieces of J̃ = ½θᵀAθ + bᵀθ + c₀ per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import sympy as sp

if TYPE_CHECKING:
    from ..model.model import Model
    from .display import Readable

__all__ = ["PATHS", "Derivation", "QuadraticParts", "theta_degree"]

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
    weights, weight_derivatives : h(x_i) and h′(x_i) per coordinate (domain "nonnegative"), else None
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
    def score(self) -> tuple[sp.Expr, ...]:
        """∂ᵢ log f for each data coordinate (sympy, computed on first access). A long sum is split once by
        the coordinates each term involves, and only those terms are differentiated: the same expressions,
        without d passes over every term (a graphical model's d² terms would cost d³)."""
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
        return tuple(_tidy(sp.diff(s, xi)) for s, xi in zip(self.score, self.model.data, strict=True))

    @cached_property
    def weights(self) -> tuple[sp.Expr, ...] | None:
        """hᵢ = h(xᵢ) per coordinate for domain "nonnegative", None on Rᵈ (no weight)."""
        return self.model.coordinate_weights()

    @cached_property
    def weight_derivatives(self) -> tuple[sp.Expr, ...] | None:
        """hᵢ′ = dh/dt at t = xᵢ per coordinate (exact, by sympy), None on Rᵈ."""
        if self.weights is None:
            return None
        return tuple(sp.diff(h, xi) for h, xi in zip(self.weights, self.model.data, strict=True))

    @cached_property
    def objective(self) -> sp.Expr:
        """The per-sample integrand Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²]; on [0, ∞)ᵈ the generalized one,
        Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] (integration by parts of hᵢ ∂ᵢ log f)."""
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
