"""The part of a per-row integrand that is affine in θ with θ-free coefficients, split off structurally.

A per-row integrand E(θ, x) is written as E = R(θ, x) + L₀(x) + Σₖ θₖ Lₖ(x). The row means of L₀ and Lₖ
depend on the data only, so an objective evaluated many times on the same rows (`CompiledLoss.bind`, the
L-BFGS fit) sums them once and evaluates only R per call.

The split never expands R: it walks E's sums and products and moves a term to the separable part only when it
already is affine in θ, or becomes so by distributing a θ-free factor over a sum (c·(A + B)) or by writing out
a product of two θ-affine factors (P₁ + q₁)(P₂ + q₂) — q the θ-free parts — as P₁P₂ + (q₁P₂ + q₂P₁ + q₁q₂),
of which the last three are separable (the ½(Σθₖaₖ + c)² of an exponential family's score). Everything else
(θ inside a function, a product of three θ-dependent factors, θ-free parts that are zero) stays in R as it
came, so an integrand built compact (the sqrt-mapped simplex's `ManifoldParts.boundary_integrand`) stays
compact, and an integrand with nothing separable comes back unchanged (R = E).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sympy as sp

__all__ = ["Separable", "split_separable"]

_Affine = dict[int | None, list[sp.Expr]]  # θ index (None: the θ-free part) -> pieces of its coefficient


@dataclass(frozen=True)
class Separable:
    """E = rest + const + Σₖ params[k]·coeffs[k], const and coeffs free of the params."""

    rest: sp.Expr
    const: sp.Expr
    coeffs: tuple[sp.Expr, ...]

    @property
    def separated(self) -> bool:
        """Whether anything was split off (else rest is the integrand itself)."""
        return self.const != 0 or any(c != 0 for c in self.coeffs)


def split_separable(expr: sp.Expr, params: Sequence[sp.Symbol]) -> Separable:
    """`expr` split into R + L₀ + Σₖ θₖLₖ (see the module docstring); R == expr when nothing separates."""
    index = {p: k for k, p in enumerate(params)}
    rest, affine = _split(expr, index, set(index))
    coeffs = tuple(sp.Add(*affine.get(k, ())) for k in range(len(params)))
    const = sp.Add(*affine.get(None, ()))
    if const == 0 and all(c == 0 for c in coeffs):
        return Separable(expr, const, coeffs)
    return Separable(rest, const, coeffs)


def _merge(into: _Affine, other: _Affine, factor: sp.Expr = sp.S.One) -> None:
    for k, pieces in other.items():
        into.setdefault(k, []).extend(pieces if factor == 1 else [factor * p for p in pieces])


def _split(term: sp.Expr, index: dict[sp.Symbol, int], theta: set[sp.Symbol]) -> tuple[sp.Expr, _Affine]:
    """(r, a) with term = r + a, a affine in θ with θ-free coefficients; (term, {}) where nothing separates."""
    if not term.free_symbols & theta:
        return sp.S.Zero, {None: [term]}
    if term in index:
        return sp.S.Zero, {index[term]: [sp.S.One]}
    if isinstance(term, sp.Add):
        rest: list[sp.Expr] = []
        affine: _Affine = {}
        for arg in term.args:
            r, a = _split(arg, index, theta)
            rest.append(r)
            _merge(affine, a)
        return (sp.Add(*rest), affine) if affine else (term, {})
    if isinstance(term, sp.Mul):
        free = [f for f in term.args if not f.free_symbols & theta]
        dependent = [f for f in term.args if f.free_symbols & theta]
        c = sp.Mul(*free)
        if len(dependent) == 1:
            r, a = _split(dependent[0], index, theta)
            if not a:
                return term, {}
            affine = {}
            _merge(affine, a, c)
            return c * r, affine
        if len(dependent) == 2:
            return _product(c, dependent[0], dependent[1], term, index, theta)
        return term, {}
    if isinstance(term, sp.Pow) and term.exp == 2:
        return _product(sp.S.One, term.base, term.base, term, index, theta)
    return term, {}


def _product(
    c: sp.Expr, f1: sp.Expr, f2: sp.Expr, term: sp.Expr, index: dict[sp.Symbol, int], theta: set[sp.Symbol]
) -> tuple[sp.Expr, _Affine]:
    """c·f1·f2 with f1, f2 affine in θ: c·P₁P₂ stays, c·(q₁P₂ + q₂P₁ + q₁q₂) separates (q: θ-free parts)."""
    parts = []
    for f in (f1, f2):
        r, a = _split(f, index, theta)
        if r != 0:
            return term, {}
        q = sp.Add(*a.get(None, ()))
        linear: _Affine = {k: v for k, v in a.items() if k is not None}
        parts.append((q, linear))
    (q1, l1), (q2, l2) = parts
    if q1 == 0 and q2 == 0:
        return term, {}
    p1 = f1 if q1 == 0 else _linear(l1, index)
    p2 = f2 if q2 == 0 else _linear(l2, index)
    affine: _Affine = {None: [c * q1 * q2]} if q1 != 0 and q2 != 0 else {}
    if q1 != 0:
        _merge(affine, l2, c * q1)
    if q2 != 0:
        _merge(affine, l1, c * q2)
    return c * p1 * p2, affine


def _linear(coeffs: _Affine, index: dict[sp.Symbol, int]) -> sp.Expr:
    """Σₖ θₖ·(Σ pieces of its coefficient) (coeffs without a θ-free part)."""
    params: dict[int | None, sp.Symbol] = {k: p for p, k in index.items()}
    return sp.Add(*[params[k] * sp.Add(*pieces) for k, pieces in coeffs.items()])
