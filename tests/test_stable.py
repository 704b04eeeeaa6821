"""Stable numerics: log-sum-exp and logs of products rewritten exactly before code generation
(symsm/derive/stable.py), checked against a high-precision (mpmath) evaluation of the original formula."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.derive.stable import stable_log_f

x = sp.Symbol("x")
m1, m2 = sp.symbols("m1 m2")
w = sp.Symbol("w", positive=True)
MIXTURE = sp.log(w * sp.exp(-((x - m1) ** 2) / 2) + sp.exp(-((x - m2) ** 2) / 2))


def _reference(model: symsm.Model, theta: np.ndarray, X: np.ndarray) -> tuple[mpmath.mpf, list[mpmath.mpf]]:
    """J̃ and ∇J̃ of the formula as written, evaluated in 60-digit arithmetic."""
    der = model.derive()
    args = [*model.data, *model.params]
    phi = sp.lambdify(args, der.objective, "mpmath")
    grad = [sp.lambdify(args, g, "mpmath") for g in der.gradient]
    with mpmath.workdps(60):
        th = [mpmath.mpf(float(t)) for t in theta]
        rows = [[mpmath.mpf(float(v)) for v in row] for row in X]
        n = len(rows)
        value = sum(phi(*r, *th) for r in rows) / n
        gradient = [sum(g(*r, *th) for r in rows) / n for g in grad]
    return value, gradient


def test_mixture_far_row_is_finite_and_exact() -> None:
    model = symsm.Model(MIXTURE, [x], [w, m1, m2], name="mixture_lse")
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-1, 1, 60), rng.normal(2, 1, 60), [45.0]])[:, None]
    theta = np.array([0.5, -1.0, 2.0])
    ref_value, ref_grad = _reference(model, theta, X)
    for path in ("auto", "graph"):
        loss = model.compile(path=path)
        value, grad = loss.value_and_grad(theta, X)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), path
        assert value == pytest.approx(float(ref_value), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(grad, [float(g) for g in ref_grad], rtol=1e-11, atol=1e-12)
        assert np.all(np.isfinite(loss.per_sample(theta, X)))


@pytest.mark.parametrize(
    "expr",
    [
        MIXTURE,
        sp.log(1 + sp.exp(x)),
        -sp.log(1 + sp.exp(-m1 * x)),
        sp.log(w * sp.exp(x * m1)),
        sp.log(w * (sp.exp(x) + sp.exp(-x))),
        sp.log(sp.exp(x - m1) - w * sp.exp(-x)),
    ],
)
def test_rewrite_is_an_identity(expr: sp.Expr) -> None:
    """The rewritten expression and its x-derivatives equal the original's (at points where both are finite)."""
    stable = stable_log_f(expr)
    with mpmath.workdps(40):
        for point in [{x: 0.3, m1: -1.2, m2: 2.0, w: 0.7}, {x: 2.5, m1: 0.4, m2: -0.5, w: 1.9}]:
            for k in range(3):
                a = sp.diff(expr, x, k).evalf(40, subs=point)
                b = sp.diff(stable, x, k).evalf(40, subs=point)
                if a.is_real:
                    assert abs(a - b) <= 1e-30 * max(1, abs(a))


def test_plain_models_are_untouched() -> None:
    gauss = -((x - m1) ** 2) / (2 * w**2)
    assert stable_log_f(gauss) is gauss
    assert stable_log_f(sp.log(sp.cosh(x - m1))) == sp.log(sp.cosh(x - m1))


def test_nonfinite_names_rows_and_tells_data_from_parameters() -> None:
    s = sp.Symbol("s", positive=True)
    model = symsm.Model(4 * sp.sqrt(x - m1) - x / s, [x], [m1, s], name="shifted_root")  # real for x ≥ m1 only
    loss = model.compile(path="graph")
    X = np.array([[1.0], [2.0], [-3.0], [4.0], [-5.0]])
    match = r"2 of N = 5 rows, first row 2 \(x = -3\), row 4 .*data problem.*not defined"
    with pytest.raises(symsm.NonFiniteError, match=match) as info:
        loss.value_and_grad(np.array([0.0, 1.0]), X)
    assert info.value.rows == (2, 4) and not info.value.domain
    with pytest.raises(symsm.NonFiniteError, match=r"every row .* parameter problem") as info:
        loss.value(np.array([10.0, 1.0]), X)
    assert info.value.domain
    match = r"fit: at the starting point θ₀ \(the data are the problem\).*row 2"
    with pytest.raises(symsm.NonFiniteError, match=match):
        symsm.fit(loss, X, theta0=np.array([0.0, 1.0]))
