"""Exact rewrites of log f into forms that floating point can evaluate: log-sum-exp and the log of a product.

A mixture log f = log(w·exp(a₁) + exp(a₂)) underflows for data far from both components: at x = 45 with
aₖ = −(x − mₖ)²/2 both exponentials are 0 in float64, log f is −∞ and the score, a ratio of two underflowed
sums, is 0/0 = nan. The kernels are therefore built from a rewritten log f (the derivation shown to people
keeps the formula as written):

* log(Σₖ cₖ·exp(aₖ)) → m + log(Σₖ cₖ·exp(aₖ − m)), terms without an exponential having aₖ = 0;
* log(exp(a)·r) → a + log(r), log(exp(a)) → a;
* log(u**n) → n·log(u) for odd n (the same value wherever either side is real), and log1p(u) → log(1 + u),
  when u is a sum of exponentials, so that the rules above apply to it.

**Why m may be anything, and which m.** m + log Σ cₖ exp(aₖ − m) = log(eᵐ Σ cₖ exp(aₖ − m)) = log Σ cₖ exp(aₖ)
for every finite m: the rewrite is an identity, not an approximation, and so are all its derivatives. The
numerics want m close to maxₖ aₖ (then every exp(aₖ − m) ≤ 1 cannot overflow, and the largest one is not
small, so the sum cannot underflow). max itself is not differentiable where two aₖ are equal; the derivative
of the rewritten expression would still be right (the expression does not depend on m at all, so any
derivative of m is multiplied by an exact zero), but differentiating max is not something the derivation
should have to know about. So m is a smooth upper bound of the maximum,

    smax(a, b) = (a + b)/2 + √((a − b)²/4 + 1),   max(a, b) < smax(a, b) ≤ max(a, b) + 1,

folded over the aₖ (for n distinct aₖ, max < m ≤ max + n − 1): it is built from + · and √ only, so every
derivation path and every backend differentiates and evaluates it exactly like the rest of log f, and the
symbolic derivatives of the rewritten log f are the exact derivatives of the original one. In float64 each
exp(aₖ − m) ≥ e^(1−n) for the largest aₖ, so the sum stays ≥ e^(1−n)·cₖ, far from underflow; (a − b)²
overflows only for |a − b| > 1e154.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING

import sympy as sp
from sympy.codegen.cfunctions import log1p

if TYPE_CHECKING:
    from .derivation import Derivation

__all__ = ["smooth_max", "stable_derivation", "stable_log_f"]


def smooth_max(values: Iterable[sp.Expr]) -> sp.Expr:
    """A smooth m with max(values) ≤ m ≤ max(values) + (n − 1), folded pairwise (see the module docstring)."""
    items = list(values)
    m = items[0]
    for v in items[1:]:
        m = (m + v) / 2 + sp.sqrt((m - v) ** 2 / 4 + 1)
    return m


def _exp_split(term: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """term = c·exp(a) with c free of top-level exponential factors: (c, a)."""
    a: list[sp.Expr] = []
    c: list[sp.Expr] = []
    for factor in sp.Mul.make_args(term):
        base, n = factor.as_base_exp()
        if isinstance(base, sp.exp) and n.is_Integer:
            a.append(n * base.args[0])
        elif isinstance(factor, sp.exp):
            a.append(factor.args[0])
        else:
            c.append(factor)
    return sp.Mul(*c), sp.Add(*a)


def _is_sum_of_exps(u: sp.Expr) -> bool:
    if not isinstance(u, sp.Add):
        return False
    return any(not _exp_split(t)[1].is_number for t in u.args)


def _log(u: sp.Expr) -> sp.Expr:
    """log(u) rewritten (u already rewritten inside)."""
    if isinstance(u, sp.exp):
        return u.args[0]
    if isinstance(u, sp.Pow) and u.exp.is_Integer and int(u.exp) % 2 == 1 and _is_sum_of_exps(u.base):
        return u.exp * _log(u.base)
    if isinstance(u, sp.Mul):
        c, a = _exp_split(u)
        if a != 0:
            return a + _log(c)
        factors = sp.Mul.make_args(u)
        sums = [f for f in factors if _is_sum_of_exps(f)]
        if len(sums) == 1:  # log(c·S) with S a sum of exponentials: c·S is one sum, c in every term (exact)
            c = sp.Mul(*[f for f in factors if f is not sums[0]])
            return _log(sp.Add(*[c * t for t in sums[0].args]))
        return sp.log(u)
    if _is_sum_of_exps(u):
        parts = [_exp_split(t) for t in u.args]
        shifts = list(dict.fromkeys(a for _, a in parts))
        if len(shifts) < 2:
            return sp.log(u)
        m = smooth_max(shifts)
        return m + sp.log(sp.Add(*[c * sp.exp(a - m) for c, a in parts]))
    return sp.log(u)


def stable_log_f(expr: sp.Expr) -> sp.Expr:
    """`expr` with every log-sum-exp and log of a product with exponential factors rewritten exactly into a
    form that does not overflow or underflow (see the module docstring); unchanged where nothing applies."""
    if not expr.has(sp.log, log1p) or not expr.has(sp.exp):
        return expr

    def visit(e: sp.Expr) -> sp.Expr:
        if not e.args:
            return e
        args = [visit(a) for a in e.args]
        if isinstance(e, sp.log):
            return _log(args[0])
        if isinstance(e, log1p) and (_is_sum_of_exps(args[0]) or _exp_split(args[0])[1] != 0):
            return _log(sp.Add(1, args[0]))
        return e.func(*args) if any(a is not b for a, b in zip(args, e.args, strict=True)) else e

    return visit(expr)


def stable_derivation(derivation: Derivation) -> Derivation:
    """The derivation the kernels are built from: `derivation` itself, or, when `stable_log_f` rewrites the
    model's log f, a derivation of the same model with the rewritten log f (same data, θ, domain, weight)."""
    from .derivation import Derivation

    model = derivation.model
    log_f = stable_log_f(model.log_f)
    if log_f == model.log_f:
        return derivation
    stable = copy.copy(model)
    stable.log_f = log_f
    return Derivation(stable, path=derivation.path)
