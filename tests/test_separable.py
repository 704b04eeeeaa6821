"""The split of a per-row integrand into R + L₀ + Σₖ θₖLₖ (symsm/derive/separable.py): the parts add up to the
integrand (at random points, evaluated by sympy with exact substitution), L₀ and Lₖ are free of θ, R keeps no
term that is affine in θ with θ-free coefficients, and an integrand with nothing separable is left unchanged."""

from __future__ import annotations

import random

import pytest
import sympy as sp

import symsm
from symsm.derive.derivation import Derivation
from symsm.derive.separable import split_separable
from symsm.model.modelfile import load_model

a, b, c = sp.symbols("a b c", real=True)
x, y = sp.symbols("x y", positive=True)
THETA = (a, b, c)


def _recombined(parts, params):
    return parts.rest + parts.const + sp.Add(*[p * k for p, k in zip(params, parts.coeffs, strict=True)])


def _agree(expr, other, symbols, seed=0, points=4):
    rng = random.Random(seed)
    for _ in range(points):
        sub = {s: sp.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in symbols}
        assert sp.nsimplify(expr.xreplace(sub) - other.xreplace(sub)) == 0


def _theta_affine_terms_left(rest, params):
    """Monomials of R in θ (the test may expand R, the pass may not) of degree ≤ 1 with a non-zero coefficient."""
    poly = sp.Poly(sp.expand(rest), *params)
    return [m for m, k in zip(poly.monoms(), poly.coeffs(), strict=True) if sum(m) <= 1 and sp.simplify(k) != 0]


def test_exponential_family_square() -> None:
    """½(a x + b x² + 1/x)² + hessian terms: the square's cross terms and q² separate, P² stays."""
    score = a * x + b * x**2 + 1 / x
    expr = sp.Rational(1, 2) * score**2 + (a + 2 * b * x - 1 / x**2) + sp.exp(x) * c
    parts = split_separable(expr, THETA)
    assert parts.separated
    assert parts.const.free_symbols <= {x} and all(k.free_symbols <= {x} for k in parts.coeffs)
    _agree(_recombined(parts, THETA), expr, [a, b, c, x])
    assert not _theta_affine_terms_left(parts.rest, THETA)
    assert sp.expand(parts.coeffs[2] - sp.exp(x)) == 0


def test_distributes_a_free_factor_only_over_sums() -> None:
    """h·(quadratic + affine): the affine part leaves with h as its factor, the quadratic stays, unexpanded."""
    h = sp.Min(x**2, y**2)
    quad = (a * x - b * y) ** 2
    expr = h * (quad / 2 + c * x * y + a * sp.log(y)) + sp.Heaviside(x - y) * b
    parts = split_separable(expr, THETA)
    _agree(_recombined(parts, THETA), expr, [a, b, c, x, y])
    assert parts.rest == h * quad / 2
    assert sp.simplify(parts.coeffs[2] - h * x * y) == 0


@pytest.mark.parametrize(
    "expr",
    [
        sp.exp(a * x) - a**2 * sp.exp(2 * a * x),  # θ inside functions only
        a * b * x + a**2,  # a product of two θ's with nothing θ-free
        (a * x + b) ** 3,  # a cube: not expanded
    ],
)
def test_nothing_separable_is_left_unchanged(expr) -> None:
    parts = split_separable(expr, THETA)
    assert not parts.separated
    assert parts.rest is expr


@pytest.mark.parametrize("domain", ["real", "simplex"])
def test_ppi_integrands(domain) -> None:
    """The PPI's integrand on ℝ⁵ and on the simplex by the sqrt map (the compact boundary integrand): the parts add
    up to it at random points, and R keeps only terms of degree 2 in θ (the projected score's square)."""
    ppi = load_model("ppi_5d")
    model = ppi
    if domain == "real":
        model = symsm.Model(ppi.log_f, ppi.data, {g.name: g.template for g in ppi.groups}, name="ppi_real")
    expr = Derivation(model).objective
    params = model.params
    parts = split_separable(expr, params)
    assert parts.separated
    free = set(model.data)
    assert parts.const.free_symbols <= free and all(k.free_symbols <= free for k in parts.coeffs)
    rng = random.Random(3)
    for _ in range(3):
        sub = {p: sp.Float(rng.uniform(-1, 1), 30) for p in params}
        sub.update({u: sp.Float(rng.uniform(0.05, 0.4), 30) for u in model.data})
        want = expr.xreplace(sub).evalf(30)
        got = _recombined(parts, params).xreplace(sub).evalf(30)
        assert abs(got - want) <= 1e-20 * max(1, abs(want))
    assert not _theta_affine_terms_left(parts.rest, params)
    if domain == "simplex":  # the rest is h·(½Σpⱼ² − ½a_p²): homogeneous of degree 2 in θ
        assert {sum(m) for m in sp.Poly(sp.expand(parts.rest), *params).monoms()} == {2}
