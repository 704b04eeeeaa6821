"""Random smooth formulas (hypothesis): compiled J̃ against finite differences of log f itself.

The reference never touches symsm's derivation: log f is evaluated with numpy and its x-derivatives
are taken by central differences; the θ-gradient is checked by central differences of J̃.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symsm

X0, X1 = sp.symbols("x0 x1", real=True)
A, B = sp.symbols("a b", real=True)
LEAVES = [X0, X1, A, B]
UNARY = [
    lambda u: sp.tanh(u),
    lambda u: sp.sin(u),
    lambda u: sp.cos(u),
    lambda u: sp.exp(-(u**2) / 4),
    lambda u: sp.log(1 + u**2),
    lambda u: sp.sqrt(1 + u**2),
    lambda u: sp.atan(u),
    lambda u: sp.erf(u),
]
coefficients = st.sampled_from([sp.Rational(n, 4) for n in (-6, -3, -2, -1, 1, 2, 3, 5)])


@st.composite
def affine(draw):
    picks = draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=3))
    return sum(draw(coefficients) * leaf for leaf in picks)


@st.composite
def smooth_expr(draw, depth=2):
    if depth == 0:
        return draw(affine())
    kind = draw(st.sampled_from(["unary", "sum", "product"]))
    if kind == "unary":
        return draw(st.sampled_from(UNARY))(draw(smooth_expr(depth=depth - 1)))
    left, right = draw(smooth_expr(depth=depth - 1)), draw(smooth_expr(depth=depth - 1))
    return left + right if kind == "sum" else left * right


def _finite_difference_integrand(f, X, h1=1e-5, h2=1e-3):
    total = np.zeros(X.shape[0])
    for i in range(X.shape[1]):
        e1 = np.zeros(X.shape[1])
        e1[i] = h1
        e2 = np.zeros(X.shape[1])
        e2[i] = h2
        d1 = (f(X + e1) - f(X - e1)) / (2 * h1)
        d2 = (f(X + e2) - 2 * f(X) + f(X - e2)) / h2**2
        total += d2 + 0.5 * d1**2
    return total


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(smooth_expr(), st.integers(0, 2**16))
def test_random_smooth_formulas(body, seed):
    log_f = body + A * X0 * sp.Rational(1, 3) + B * X1**2 / 5 - (X0**2 + X1**2) / 2
    model = symsm.Model(log_f, [X0, X1], [A, B], name=f"hypothesis_{abs(hash(sp.srepr(log_f))) % 10**8}")
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.5, 1.5, size=(64, 2))
    theta = rng.uniform(-1, 1, size=2)
    numeric = sp.lambdify((X0, X1, A, B), log_f, ["scipy", "numpy"])  # test-side reference of the model only

    def f(Xv):
        return np.broadcast_to(numeric(Xv[:, 0], Xv[:, 1], theta[0], theta[1]), (Xv.shape[0],))

    loss = model.compile()
    expected = _finite_difference_integrand(f, X)
    got = loss.per_sample(theta, X)
    scale = 1.0 + np.abs(expected)
    assert np.all(np.abs(got - expected) <= 2e-4 * scale), np.max(np.abs(got - expected) / scale)

    value, grad = loss.value_and_grad(theta, X)
    assert value == pytest.approx(got.mean(), rel=1e-12, abs=1e-12)
    h = 1e-6
    fd = np.array([(loss.value(theta + h * e, X) - loss.value(theta - h * e, X)) / (2 * h) for e in np.eye(2)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * (1 + np.abs(fd).max()))
