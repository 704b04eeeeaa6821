"""symsm.derive: exact derivatives, the objective, quadratic (exponential-family) detection."""

from __future__ import annotations

import pytest
import sympy as sp
from models import CASES

import symsm
from symsm.derive.derivation import theta_degree


def test_gaussian_score_and_hessian_exact():
    x, mu = sp.symbols("x mu", real=True)
    s = sp.Symbol("s", positive=True)
    der = symsm.Model(-((x - mu) ** 2) / (2 * s**2), [x], [mu, s]).derive()
    assert sp.simplify(der.score[0] - (mu - x) / s**2) == 0
    assert sp.simplify(der.hessian_diag[0] + 1 / s**2) == 0
    assert sp.simplify(der.objective - (-1 / s**2 + (x - mu) ** 2 / (2 * s**4))) == 0
    assert sp.simplify(der.gradient[0] - sp.diff(der.objective, mu)) == 0


def test_derivatives_are_in_the_data_not_theta(case):
    der = case.model.derive()
    point = {sym: sp.Rational(k + 3, 7) for k, sym in enumerate((*case.model.data, *case.model.params))}
    for xi, si, hi in zip(case.model.data, der.score, der.hessian_diag, strict=True):
        expected_s = sp.diff(case.model.log_f, xi).xreplace(point)
        expected_h = sp.diff(case.model.log_f, xi, 2).xreplace(point)
        assert float(si.xreplace(point)) == pytest.approx(float(expected_s), rel=1e-12)
        assert float(hi.xreplace(point)) == pytest.approx(float(expected_h), rel=1e-12)
    assert len(der.score) == len(der.hessian_diag) == case.model.dim
    assert len(der.gradient) == case.model.n_params


def test_ica_hessian_uses_tanh():
    der = CASES["ica_logcosh"]().model.derive()
    assert der.score[0].has(sp.tanh) and not der.score[0].has(sp.sinh)


@pytest.mark.parametrize(
    "name, quadratic",
    [
        ("gaussian_full", False),  # (μ, M) parametrisation: products μ·M
        ("ica_logcosh", False),
        ("student_t", False),
        ("gaussian_mixture", False),
        ("polynomial_exp_family", True),
        ("gaussian_normalised", False),
    ],
)
def test_is_quadratic(name, quadratic):
    assert CASES[name]().model.derive().is_quadratic is quadratic


def test_quadratic_parts_reproduce_the_objective():
    case = CASES["polynomial_exp_family"]()
    der = case.model.derive()
    q = der.quadratic_parts
    theta = sp.Matrix(case.model.params)
    A = sp.Matrix(len(theta), len(theta), lambda k, l: sum(q.coeffs[i][k] * q.coeffs[i][l] for i in range(2)))
    rebuilt = (theta.T * A * theta)[0] / 2 + sum(bk * t for bk, t in zip(q.b_terms, theta, strict=True)) + q.c_term
    assert sp.expand(rebuilt - der.objective) == 0


def test_natural_gaussian_is_quadratic_and_check_value():
    # log f = θx − x⁴: J̃ = mean[−12x² + ½(θ − 4x³)²] so θ̂ = 4·mean x³ (Hyvärinen 2007).
    x, t = sp.symbols("x theta", real=True)
    der = symsm.Model(t * x - x**4, [x], [t]).derive()
    assert der.is_quadratic
    q = der.quadratic_parts
    assert sp.simplify(q.coeffs[0][0] - 1) == 0
    assert sp.simplify(q.b_terms[0] + 4 * x**3) == 0


def test_theta_degree():
    a, b, x = sp.symbols("a b x")
    th = {a, b}
    assert theta_degree(a * x + b * x**2 + sp.exp(x), th) == 1
    assert theta_degree(a * b * x, th) == 2
    assert theta_degree(sp.exp(a) * x, th) == float("inf")
    assert theta_degree(x / a, th) == float("inf")
    assert theta_degree((a + x) ** 2, th) == 2


def test_derive_takes_the_derivation_path():
    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x - x**4, [x], [a])
    assert model.derive().path == "auto"
    for path in ("sympy", "graph"):
        der = model.derive(path=path)
        assert der.path == path and f"path={path!r}" in repr(der)
        assert sp.simplify(der.score[0] - (a - 4 * x**3)) == 0  # the expressions do not depend on the path
    with pytest.raises(ValueError, match=r"path must be one of \('auto', 'sympy', 'graph', 'structured'\), got 'fast'"):
        model.derive(path="fast")
    with pytest.raises(TypeError, match="simplify"):  # an option derive does not have is refused by name
        model.derive(simplify=False)


def test_compile_follows_the_derivation_path():
    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x - x**4, [x], [a])
    sympy_loss = model.compile(path="sympy")
    graph_loss = model.compile(derivation=model.derive(path="graph"))
    assert sympy_loss.key != graph_loss.key  # the path is part of the cache key
    assert (sympy_loss.derivation.path, graph_loss.derivation.path) == ("sympy", "graph")
    with pytest.raises(ValueError, match="differs from the derivation's path"):
        model.compile(path="sympy", derivation=model.derive(path="graph"))
