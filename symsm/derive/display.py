"""Display forms of a derivation: the same expressions, simplified for reading.

sympy's `diff` leaves what the chain rule produced: `-(-2*m + 2*x0)/(2*s**2)` for the score of a Gaussian
coordinate, `(-m0 + x0)**2 + 2*(-m0 + x0)*(m0 - x0)` inside a Student-t's ∂ᵢ² log f. For reading, each
expression is offered to a few exact sympy rewrites — `cancel`, `factor`, `together` + `factor_terms`,
`collect` in the parameters, `expand` — and the shortest result is shown (ties: the simplest to read, a
product of factors over a sum). Every candidate is equal to the expression by construction (they are
algebraic identities, no branch cuts), and the tests check it numerically.

The rewrites are bounded in time: an expression with more than `MAX_NODES` nodes, more than `MAX_SYMBOLS`
symbols, more than `MAX_FUNCTIONS` function applications or a function of a function (where multivariate
factoring gets slow) is shown as it is. The kernels never see these
forms: the code generator keeps the forms it uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import sympy as sp

if TYPE_CHECKING:
    from .derivation import Derivation

__all__ = ["MAX_FUNCTIONS", "MAX_NODES", "MAX_SYMBOLS", "Readable", "readable"]

MAX_NODES = 600  # larger expressions are shown as sympy's diff gives them
MAX_SYMBOLS = 12  # ... and those with more symbols (sums counted as one), where multivariate factoring is slow
MAX_FUNCTIONS = 8  # ... and those with more function applications (each is one more generator to factor over)


def _nodes(expr: sp.Expr) -> int:
    return sum(1 for _ in sp.preorder_traversal(expr))


def _cost(expr: sp.Expr) -> tuple[int, int]:
    """Reading cost: the number of nodes, then a sum outside over a product outside. (Node counts, not
    sympy's count_ops: that asks assumptions of every node and takes seconds on a nest of exponentials.)"""
    return (_nodes(expr), 1 if isinstance(expr, sp.Add) else 0)


def _candidates(expr: sp.Expr) -> list[Callable[[], sp.Expr]]:
    return [
        lambda: sp.cancel(expr),
        lambda: sp.factor(expr),
        lambda: sp.factor_terms(sp.together(expr)),
        lambda: sp.expand(expr),
        lambda: _by_denominator(expr),
    ]


def _inner_sums(expr: sp.Expr, preferred: frozenset[sp.Expr] = frozenset()) -> dict[sp.Expr, sp.Expr]:
    """Sums that contain no other sum (x0 − m0, nu + 2, the argument of a tanh) mapped to fresh symbols: u for
    the sum and −u for its negation (m0 − x0 = −(x0 − m0)). A sum keeps the orientation it has in `preferred`
    (the sums of the formula as written); otherwise the first orientation met is kept."""
    mapping: dict[sp.Expr, sp.Expr] = {}
    names: dict[sp.Expr, sp.Dummy] = {}
    for node in sp.preorder_traversal(expr):
        if not isinstance(node, sp.Add) or any(a.has(sp.Add) for a in node.args) or node in mapping:
            continue
        content, primitive = node.as_content_primitive()  # -4*m0 + 4*x0 = 4*(x0 - m0)
        if not isinstance(primitive, sp.Add):
            continue
        neg = -primitive
        flip = (
            neg in preferred if (primitive in preferred) != (neg in preferred) else primitive.could_extract_minus_sign()
        )
        if primitive not in names and (neg in names or flip):
            names.setdefault(neg, sp.Dummy(f"u{len(names)}"))
            mapping[node] = -content * names[neg]
        else:
            mapping[node] = content * names.setdefault(primitive, sp.Dummy(f"u{len(names)}"))
    return mapping


def _by_denominator(expr: sp.Expr) -> sp.Expr:
    """The expanded terms grouped by their denominator, each group's numerator factored:
    2·b·x0·(x1 − b·x0²) + m/s² − x0/s² → 2·b·x0·(x1 − b·x0²) − (x0 − m)/s²."""
    groups: dict[sp.Expr, list[sp.Expr]] = {}
    for term in sp.Add.make_args(sp.expand(expr)):
        numer, denom = term.as_numer_denom()
        groups.setdefault(denom, []).append(numer)
    return sp.Add(*[sp.factor(sp.Add(*numers)) / denom for denom, numers in groups.items()])


def readable(expr: sp.Expr, params: Sequence[sp.Symbol] = (), preferred: frozenset[sp.Expr] = frozenset()) -> sp.Expr:
    """`expr` in the shortest of a few equal forms (see the module docstring); `expr` itself when large.

    The innermost sums are first replaced by fresh symbols (x0 − m0 → u, m0 − x0 → −u), so that
    (x0 − m0)² + 2(x0 − m0)(m0 − x0) becomes −u² at once and factoring works on few symbols; every rewrite is
    an identity in those symbols, so substituting the sums back gives an expression equal to `expr`.
    """
    if not isinstance(expr, sp.Expr) or expr.is_Atom:
        return expr
    if any(k > MAX_NODES for k, _ in enumerate(sp.preorder_traversal(expr))):  # stops at the limit
        return expr
    mapping = _inner_sums(expr, preferred)
    back: dict[sp.Expr, sp.Expr] = {}
    for node, image in mapping.items():  # image = c·u with a number c: u = node / c
        c, u = image.as_coeff_Mul()
        back.setdefault(u, sp.expand(node / c))
    compact = expr.xreplace(mapping)
    functions = compact.atoms(sp.Function)
    nested = any(a.has(sp.Function) for f in functions for a in f.args)  # exp(x·exp(x)): factoring crawls
    if len(compact.free_symbols) > MAX_SYMBOLS or len(functions) > MAX_FUNCTIONS or nested:
        return expr
    # a rewrite must pay for the change of form: clearly fewer nodes (else the derivative stays as it is)
    original = _cost(expr)
    best, best_cost = expr, (original[0] - max(2, original[0] // 12) + 1, *original[1:])
    for make in [lambda: compact, *_candidates(compact)]:
        try:
            form = make().xreplace(back)
        except (sp.PolynomialError, sp.polys.polyerrors.PolificationFailed, RecursionError, ValueError):
            continue
        if form.has(sp.I, sp.zoo, sp.nan) and not expr.has(sp.I, sp.zoo, sp.nan):
            continue
        cost = _cost(form)
        if cost < best_cost:
            best, best_cost = form, cost
    return best


class Readable:
    """The derivation's expressions in display form (`readable`), each computed on first access."""

    def __init__(self, derivation: Derivation) -> None:
        self.derivation = derivation

    @cached_property
    def _preferred(self) -> frozenset[sp.Expr]:
        """The sums of log f as written: a derivative shows x1 − b·x0² where the formula has it so."""
        data = set(self.derivation.model.data)
        log_f = self.derivation.model.log_f
        return frozenset(e for e in sp.preorder_traversal(log_f) if isinstance(e, sp.Add) and e.free_symbols & data)

    def _form(self, expr: sp.Expr) -> sp.Expr:
        return readable(expr, self.derivation.model.params, self._preferred)

    @cached_property
    def log_f(self) -> sp.Expr:
        return self._form(self.derivation.model.log_f)

    @cached_property
    def score(self) -> tuple[sp.Expr, ...]:
        return tuple(self._form(e) for e in self.derivation.score)

    @cached_property
    def hessian_diag(self) -> tuple[sp.Expr, ...]:
        return tuple(self._form(e) for e in self.derivation.hessian_diag)

    @cached_property
    def objective(self) -> sp.Expr:
        return self._form(self.derivation.objective)

    @cached_property
    def gradient(self) -> tuple[sp.Expr, ...]:
        """∂θₖ of the display form of the objective (the same function, so the same derivative, and a much
        shorter expression to simplify than the derivation's own gradient)."""
        return tuple(self._form(sp.diff(self.objective, p)) for p in self.derivation.model.params)
