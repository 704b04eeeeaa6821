"""symsm.fit: the closed form, L-BFGS-B, sandwich standard errors, results and errors.

The reproduction of Hyvärinen (2005) §3.1/§3.2 and the coverage of the standard errors are in
tests/test_hyvarinen2005.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import sympy as sp
from models import CASES

import symsm
from symsm.fitting.fit import POSITIVE_LOWER_BOUND
from symsm.ir import fit_kernels as fitting

x, y = sp.symbols("x y", real=True)


@pytest.fixture(scope="module")
def quartic():
    """log f = θx − x⁴: score θ − 4x³, integrand −12x² + ½(θ − 4x³)², so θ̂ = 4·mean x³."""
    t = sp.Symbol("t", real=True)
    return symsm.Model(t * x - x**4, [x], [t], name="quartic_shift").compile()


@pytest.fixture(scope="module")
def poly():
    case = CASES["polynomial_exp_family"]()
    X = np.random.default_rng(21).normal(0.2, 1.1, size=(4000, 2))
    return case, case.model.compile(), X


def test_closed_form_of_the_issue_example(quartic):
    X = np.random.default_rng(1).standard_t(6, size=(1000, 1))
    res = symsm.fit(quartic, X)
    assert res.method == "closed_form" and res.converged and res.n_iter == 0
    assert res.theta[0] == pytest.approx(4 * np.mean(X**3), rel=1e-12)
    assert res.params == {"t": pytest.approx(4 * np.mean(X**3), rel=1e-12)}


def test_closed_form_minimises_the_objective_of_the_main_kernel(poly):
    case, loss, X = poly
    res = symsm.fit(loss, X)
    assert res.method == "closed_form" and res.hessian_method == "quadratic_form"
    value, grad = loss.value_and_grad(res.theta, X)  # the kernels of evaluation, not those of fitting
    assert value == pytest.approx(res.loss, rel=1e-12)
    assert np.abs(grad).max() < 1e-10
    assert value == pytest.approx(case.objective(res.theta, X), rel=1e-12)  # hand-written objective
    for direction in np.eye(5):  # a minimum of the hand-written objective
        assert case.objective(res.theta + 1e-3 * direction, X) > value


def test_closed_form_with_theta_free_term_equals_lbfgs(poly):
    """c(x) = −(x0⁴ + x1⁴)/4 is free of θ; L-BFGS-B alone (no Newton polish) finds the same minimum."""
    _, loss, X = poly
    closed = symsm.fit(loss, X)
    iterative = symsm.fit(loss, X, method="lbfgs", options={"polish": False})
    assert iterative.method == "lbfgs" and iterative.n_iter > 3 and iterative.converged
    np.testing.assert_allclose(iterative.theta, closed.theta, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(iterative.se, closed.se, rtol=1e-5)
    assert iterative.loss == pytest.approx(closed.loss, rel=1e-12)


def test_sandwich_matches_hand_derived_numpy():
    """1-D Gaussian, natural parameters: log f = −½ m x² + h x. Per sample the integrand is
    −m + ½(h − m x)², its gradient g = (−1 − x(h − m x), h − m x), its Hessian [[x², −x], [−x, 1]]."""
    m, h = sp.symbols("m h", real=True)
    model = symsm.Model(-m * x**2 / 2 + h * x, [x], [m, h], name="gauss_natural_1d")
    X = np.random.default_rng(3).gamma(3.0, 1.0, size=(2500, 1))  # not Gaussian: the sandwich matters
    res = symsm.fit(model, X)
    u = X[:, 0]
    A = np.array([[np.mean(u**2), -np.mean(u)], [-np.mean(u), 1.0]])
    theta = np.linalg.solve(A, [1.0, 0.0])
    r = theta[1] - theta[0] * u
    G = np.stack([-1 - u * r, r], axis=1)
    V = np.cov(G.T, bias=True)
    cov = np.linalg.inv(A) @ V @ np.linalg.inv(A) / len(u)
    np.testing.assert_allclose(res.theta, theta, rtol=1e-12)
    np.testing.assert_allclose(res.cov, cov, rtol=1e-9)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(cov)), rtol=1e-9)
    assert np.abs(G.mean(axis=0)).max() < 1e-12  # the estimating equation holds at θ̂


def test_lbfgs_exact_and_central_difference_hessians_give_the_same_result(compiled_cases):
    case, loss = compiled_cases["student_t"]
    X = np.random.default_rng(5).standard_t(5, size=(3000, 2)) * 1.3 + [0.2, -0.1]
    exact = symsm.fit(loss, X, case.theta)
    differences = symsm.fit(loss, X, case.theta, hessian="central_differences")
    assert exact.method == differences.method == "lbfgs"
    assert (exact.hessian_method, differences.hessian_method) == ("exact", "central_differences")
    assert exact.converged and differences.converged
    np.testing.assert_allclose(differences.theta, exact.theta, rtol=1e-9)
    np.testing.assert_allclose(differences.se, exact.se, rtol=1e-5)
    assert exact.grad_norm < 1e-9


def test_large_models_use_central_differences(compiled_cases, monkeypatch):
    case, loss = compiled_cases["student_t"]
    monkeypatch.setattr(fitting, "HESSIAN_MAX_PARAMS", 3)
    res = symsm.fit(loss, case.X, case.theta)
    assert res.hessian_method == "central_differences" and res.converged


def test_positive_parameters_are_bounded():
    """log f = τx with τ > 0: J̃ = ½τ², minimised on the boundary τ → 0."""
    tau = sp.Symbol("tau", positive=True)
    model = symsm.Model(tau * x, [x], [tau], name="boundary")
    X = np.random.default_rng(2).normal(size=(50, 1))
    res = symsm.fit(model, X)  # the closed form leaves the domain: bounded L-BFGS-B instead
    assert res.method == "lbfgs"
    assert 0 < res.theta[0] <= 2 * POSITIVE_LOWER_BOUND
    assert "closed form leaves the domain of tau" in res.message and "lower bound" in res.message
    with pytest.raises(ValueError, match="non-positive values to parameters declared positive: tau"):
        symsm.fit(model, X, method="closed_form")


def test_non_convergence_is_reported_not_raised(compiled_cases):
    case, loss = compiled_cases["student_t"]
    res = symsm.fit(loss, case.X, case.theta, options={"maxiter": 2, "polish": False})
    assert res.n_iter == 2 and not res.converged
    assert "ITERATIONS REACHED LIMIT" in res.message.upper()
    assert res.se.shape == (4,)


def test_callback_sees_every_iteration_and_can_stop(compiled_cases):
    case, loss = compiled_cases["student_t"]
    seen = []

    def callback(theta, value):
        seen.append((theta.copy(), value))
        return len(seen) == 3

    res = symsm.fit(loss, case.X, case.theta, callback=callback)
    assert len(seen) == 3 and res.n_iter == 3 and not res.converged
    assert "callback" in res.message
    assert seen[1][1] == pytest.approx(loss.value(seen[1][0], case.X), rel=1e-12)
    assert seen[2][1] <= seen[1][1] <= seen[0][1]


def test_result_fields_dict_and_table():
    d = 2
    xs = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    M = symsm.symmetric("M", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    model = symsm.Model(-(xs.T * M * xs)[0, 0] / 2 + (h.T * xs)[0, 0], list(xs), {"M": M, "h": h}, name="gauss2")
    X = np.random.default_rng(4).multivariate_normal([1, -1], [[2, 0.5], [0.5, 1]], size=800)
    res = symsm.fit(model, X)
    assert res.params["M"].shape == (2, 2) and res.params["M"][0, 1] == res.params["M"][1, 0] == res.theta[1]
    assert res.se_params["M"].shape == (2, 2) and res.se_params["M"][1, 0] == res.se[1]
    assert res.cov.shape == (5, 5) and np.allclose(res.cov, res.cov.T)
    assert res.n_samples == 800 and res.param_names == model.param_names
    as_dict = res.to_dict()
    text = json.dumps(as_dict, allow_nan=False)
    assert json.loads(text)["theta"] == pytest.approx(res.theta.tolist())
    assert as_dict["method"] == "closed_form" and as_dict["params"]["M"] == res.params["M"].tolist()
    table = repr(res)
    for name, value, se in zip(res.param_names, res.theta, res.se, strict=True):
        line = next(ln for ln in table.splitlines() if ln.split()[:1] == [name])
        assert line.split()[1:] == [f"{value:.7g}", "±", f"{se:.4g}"]
    assert "closed_form" in table and "N = 800" in table


def test_singular_A_names_the_unidentified_direction():
    """(a + b) x − x⁴: only a + b is identified; the flat direction is a − b."""
    a, b = sp.symbols("a b", real=True)
    model = symsm.Model((a + b) * x - x**4, [x], [a, b], name="sum_only")
    X = np.random.default_rng(6).normal(size=(100, 1))
    with pytest.raises(symsm.IdentificationError, match=r"\+1·a -1·b|-1·a \+1·b"):
        symsm.fit(model, X)


def test_data_that_do_not_identify_theta():
    """A 2-D Gaussian fitted to points on a line: the precision across the line is not identified."""
    d = 2
    xs = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    M = symsm.symmetric("M", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    model = symsm.Model(-(xs.T * M * xs)[0, 0] / 2 + (h.T * xs)[0, 0], list(xs), {"M": M, "h": h}, name="gauss2")
    t = np.random.default_rng(7).normal(size=(300, 1))
    on_a_line = np.hstack([t, 2 * t])
    with pytest.raises(symsm.IdentificationError, match="do not identify θ along") as info:
        symsm.fit(model, on_a_line)
    assert "M_0_0" in str(info.value) and "N = 300" in str(info.value)
    constant = np.hstack([t, np.full_like(t, 3.0)])
    with pytest.raises(symsm.IdentificationError, match="do not identify"):
        symsm.fit(model, constant)


def test_a_parameter_the_data_cannot_see():
    """c·y² with y ≡ 0 in the data: ∂_y log f = 2cy − 4y³ vanishes, J̃ does not depend on c (a zero row of A)."""
    a, c = sp.symbols("a c", real=True)
    model = symsm.Model(a * x + c * y**2 - x**4 - y**4, [x, y], [a, c], name="invisible")
    X = np.hstack([np.random.default_rng(8).normal(size=(50, 1)), np.zeros((50, 1))])
    with pytest.raises(symsm.IdentificationError, match=r"do not identify c: J̃ does not change with it"):
        symsm.fit(model, X)


def test_bad_input_gives_clear_errors(quartic, compiled_cases):
    X = np.random.default_rng(9).normal(size=(20, 1))
    X[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"X has non-finite values .* row 7"):
        symsm.fit(quartic, X)
    good = np.ones((5, 1))
    with pytest.raises(ValueError, match="method must be one of"):
        symsm.fit(quartic, good, method="newton")
    with pytest.raises(ValueError, match="hessian must be one of"):
        symsm.fit(quartic, good, hessian="bfgs")
    with pytest.raises(ValueError, match=r"options: unknown keys \['tol'\]"):
        symsm.fit(quartic, good, options={"tol": 1e-3})
    with pytest.raises(TypeError, match=r"symsm\.Model or a CompiledLoss"):
        symsm.fit("t*x - x**4", good)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 1\)"):
        symsm.fit(quartic, np.ones((5, 2)))
    case, loss = compiled_cases["student_t"]
    with pytest.raises(ValueError, match="method='closed_form' needs an objective quadratic"):
        symsm.fit(loss, case.X, method="closed_form")
    with pytest.raises(ValueError, match=r"theta0 must have shape \(4,\)"):
        symsm.fit(loss, case.X, np.zeros(3))
    with pytest.raises(ValueError, match="theta0: parameters declared positive must be > 0: s"):
        symsm.fit(loss, case.X, np.array([0.0, 0.0, -1.0, 3.0]))


def test_fit_starts_from_the_model_init():
    from symsm.cli.demo import TRUE_THETA, demo_data, demo_model

    model = demo_model()
    X = demo_data(4000)
    one_step = symsm.fit(model, X, options={"maxiter": 1, "polish": False})
    assert one_step.n_iter == 1 and not one_step.converged
    # L-BFGS-B's first step is along −∇J̃(θ₀), from θ₀ = init = (0, 0, 1, 3)
    theta0 = model.default_theta()
    _, g0 = model.compile().value_and_grad(theta0, X)
    step = one_step.theta - theta0
    assert step @ -g0 == pytest.approx(np.linalg.norm(step) * np.linalg.norm(g0), rel=1e-9)
    res = symsm.fit(model, X)
    assert res.converged and res.method == "lbfgs" and res.hessian_method == "exact"
    for name, value in TRUE_THETA.items():
        assert abs(res.params[name] - value) < 4 * res.se_params[name]


def test_demo_prints_the_fit(capsys):
    from symsm.cli.demo import TRUE_THETA
    from symsm.cli.main import main

    assert main(["demo", "--n", "20000", "--repeat", "1"]) == 0
    text = capsys.readouterr().out
    assert "fit: lbfgs" in text and "converged" in text and "NOT converged" not in text
    for name, true in TRUE_THETA.items():
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{name} ") and "±" in ln)
        value, se = float(line.split("=")[1].split("±")[0]), float(line.split("±")[1].split()[0])
        assert f"(true value {true:g})" in line
        assert abs(value - true) < 4 * se


def test_float32_loss_fits_to_its_precision():
    from symsm.cli.demo import demo_data, demo_model

    model = demo_model()
    X = demo_data(20000)
    single = symsm.fit(model.compile(dtype=np.float32), X)
    double = symsm.fit(model, X)
    assert single.converged and double.converged, single.message
    assert np.all(np.abs(single.theta - double.theta) < 0.02 * double.se)
    np.testing.assert_allclose(single.se, double.se, rtol=1e-3)
