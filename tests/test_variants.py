"""Objective variants (symsm/derive/objectives.py): sliced, variance-reduced sliced and denoising score matching.

Every value is checked against hand-written numpy: the score of tests/models.py and, for the sliced terms,
Hessian-vector products vᵀHv written out by hand per model (or, for models without one, central differences
of the hand-written score along v). Draws come from the objective's own `draw` (numpy.random.default_rng),
which is what the kernels see.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from models import CASES, Case, central_difference_gradient
from required import require_module

import symsm
from symsm.derive.graph import ExprGraph
from symsm.derive.objectives import MAX_DIRECTIONS, Denoising, Exact, Sliced, SlicedVR, make_objective
from symsm.ir.graph_kernels import ModelGraph

# ------------------------------------------------------------------ hand-written references


def _hvp_gaussian_full(case: Case, theta, X, V):
    M = case.model.unpack(theta)["M"]
    return -np.einsum("ni,ij,nj->n", V, M, V)


def _hvp_ica(case: Case, theta, X, V):
    d = X.shape[1]
    W = theta.reshape(d, d)
    g2 = 1.0 - np.tanh(X @ W.T) ** 2
    return -np.sum(g2 * (V @ W.T) ** 2, axis=1)


def _hvp_student_t(case: Case, theta, X, V):
    d = X.shape[1]
    u = X - theta[:d]
    s, nu = theta[d], theta[d + 1]
    D = nu * s**2 + np.sum(u * u, axis=1)
    return -(nu + d) * (np.sum(V * V, axis=1) / D - 2 * np.sum(u * V, axis=1) ** 2 / D**2)


def _hvp_polynomial(case: Case, theta, X, V):
    _, _, c, e, g = theta
    h00, h11 = 2 * e - 3 * X[:, 0] ** 2, 2 * g - 3 * X[:, 1] ** 2
    return h00 * V[:, 0] ** 2 + 2 * c * V[:, 0] * V[:, 1] + h11 * V[:, 1] ** 2


HVP = {  # by the model's name in tests/models.py
    "gaussian_full_3": _hvp_gaussian_full,
    "ica_3": _hvp_ica,
    "student_t_2": _hvp_student_t,
    "poly_expfam": _hvp_polynomial,
}


def vHv(case: Case, theta, X, V) -> np.ndarray:
    """vᵀ(∇ₓ² log f)v per row: by hand where written out, else central differences of the hand score."""
    if case.name in HVP:
        return HVP[case.name](case, theta, X, V)
    h = 1e-4
    up = np.sum(V * case.score(theta, X + h * V), axis=1)
    down = np.sum(V * case.score(theta, X - h * V), axis=1)
    return (up - down) / (2 * h)


def reference_per_sample(case: Case, objective, theta, X, draws) -> np.ndarray:
    """The per-sample integrand of `objective` in numpy, at the given draws."""
    d = X.shape[1]
    M = objective.n_directions
    s = case.score(theta, X)
    total = np.zeros(X.shape[0])
    for m in range(M):
        block = draws[:, m * d : (m + 1) * d]
        if isinstance(objective, Denoising):
            sigma = objective.noise_scale
            total += 0.5 * np.sum((case.score(theta, X + sigma * block) + block / sigma) ** 2, axis=1)
        elif isinstance(objective, SlicedVR):
            total += vHv(case, theta, X, block)
        else:
            total += vHv(case, theta, X, block) + 0.5 * np.sum(block * s, axis=1) ** 2
    total /= M
    if isinstance(objective, SlicedVR):
        total += 0.5 * np.sum(s * s, axis=1)
    return total


@pytest.fixture(scope="module")
def compiled():
    """{(case name, objective): (case, loss)}, compiled on first use and shared by the tests of this module."""
    store: dict = {}

    def get(name: str, objective, seed: int = 7):
        key = (name, objective, seed)
        if key not in store:
            case = CASES[name]()
            store[key] = (case, case.model.compile(objective=objective, seed=seed))
        return store[key]

    return get


OBJECTIVES = [
    Sliced(n_directions=2),
    Sliced(directions="gaussian", n_directions=2),
    SlicedVR(directions="gaussian", n_directions=2),
    Denoising(noise_scale=0.4, n_directions=2),
]
MODELS = ["gaussian_full", "ica_logcosh", "student_t", "smooth_functions"]


# ------------------------------------------------------------------ the graph helpers


def test_graph_directional_derivatives_equal_sympy():
    """g(t) = log f(x + t v): g′(0) and g″(0) from `ExprGraph.directional` equal sympy's diff in t."""
    model = CASES["smooth_functions"]().model
    objective = Sliced(n_directions=1)
    mg = ModelGraph(model, objective)
    g = mg.graph
    v = objective.aux_symbols(model)
    t = sp.Symbol("t")
    shifted = model.log_f.xreplace({x: x + t * vi for x, vi in zip(model.data, v, strict=True)})
    seeds = dict(zip(mg.x, mg.aux, strict=True))
    first = g.directional(mg.log_f, seeds, {})
    second = g.directional(first, seeds, {})
    point = {sym: sp.Rational(k + 2, 7) * (-1) ** k for k, sym in enumerate((*model.data, *v, *model.params))}
    for node, order in ((first, 1), (second, 2)):
        expected = float(sp.diff(shifted, t, order).xreplace({t: 0}).xreplace(point))
        assert float(g.expression(node).xreplace(point)) == pytest.approx(expected, rel=1e-12)
    # the same second derivative from the score: D_v(vᵀs) — what the sliced objective builds
    _, second_from_score = objective.directional_terms(mg, 0)
    assert float(g.expression(second_from_score).xreplace(point)) == pytest.approx(
        float(sp.diff(shifted, t, 2).xreplace({t: 0}).xreplace(point)), rel=1e-12
    )


def test_graph_substitute_equals_sympy_xreplace():
    model = CASES["student_t"]().model
    g = ExprGraph(4)
    x = [g.leaf(s, "data", i) for i, s in enumerate(model.data)]
    eps = [g.leaf(sp.Symbol(f"e{i}", real=True), "data", 2 + i) for i in range(2)]
    for p in model.params:
        g.leaf(p, "theta")
    f = g.from_sympy(model.log_f)
    shifted = g.substitute(f, {xi: g.add(xi, g.mul(g.const(0.5), e)) for xi, e in zip(x, eps, strict=True)}, {})
    e_syms = [g.payload[e][1] for e in eps]
    expected = model.log_f.xreplace({xi: xi + e / 2 for xi, e in zip(model.data, e_syms, strict=True)})
    point = {s: sp.Rational(k + 3, 5) for k, s in enumerate((*model.data, *e_syms, *model.params))}
    assert float(g.expression(shifted).xreplace(point)) == pytest.approx(float(expected.xreplace(point)), rel=1e-13)
    assert g.substitute(g.leaves[model.params[0]], {x[0]: eps[0]}, {}) == g.leaves[model.params[0]]  # θ only


# ------------------------------------------------------------------ options and draws


def test_objective_options_are_checked():
    assert make_objective("sliced") == Sliced() and make_objective("denoising", noise_scale=1) == Denoising(1.0)
    for bad in (0, -1, 1.5, True, MAX_DIRECTIONS + 1, "2"):
        with pytest.raises(ValueError, match="n_directions must be an integer between 1 and"):
            Sliced(n_directions=bad)
        with pytest.raises(ValueError, match="n_directions"):
            Denoising(n_directions=bad)
    with pytest.raises(ValueError, match=r"directions must be one of \('rademacher', 'gaussian'\), got 'normal'"):
        make_objective("sliced", directions="normal")
    for bad in (0, -0.1, float("nan"), float("inf"), "0.1", True, None):
        with pytest.raises(ValueError, match="noise_scale must be a positive finite number"):
            Denoising(noise_scale=bad)
    with pytest.raises(TypeError, match="objective 'sliced_vr'"):
        make_objective("sliced_vr", noise_scale=0.1)
    model = CASES["student_t"]().model
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        model.compile(objective="sliced", seed=-1)


def test_draws_are_deterministic_and_have_the_documented_distribution():
    model = CASES["ica_logcosh"]().model  # d = 3
    rad = Sliced(n_directions=4).draw(model, 20_000, seed=3)
    assert rad.shape == (20_000, 12) and set(np.unique(rad)) == {-1.0, 1.0}
    np.testing.assert_array_equal(rad, Sliced(n_directions=4).draw(model, 20_000, seed=3))
    gauss = Sliced(directions="gaussian", n_directions=4).draw(model, 20_000, seed=3)
    for V in (rad, gauss):  # E vvᵀ = I for each direction (3 × 3 blocks), within Monte-Carlo error
        for m in range(4):
            block = V[:, 3 * m : 3 * m + 3]
            np.testing.assert_allclose(block.T @ block / len(block), np.eye(3), atol=0.05)
    eps = Denoising(noise_scale=0.3, n_directions=2).draw(model, 100, seed=1)
    assert eps.shape == (100, 6)
    assert not np.array_equal(eps, Denoising(noise_scale=0.3, n_directions=2).draw(model, 100, seed=2))


# ------------------------------------------------------------------ values and gradients at fixed draws


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: f"{o.name}-{getattr(o, 'directions', 'noise')}")
def test_per_sample_values_match_numpy(compiled, name, objective):
    case, loss = compiled(name, objective)
    X, theta = case.X, case.theta
    draws = objective.draw(case.model, X.shape[0], loss.seed)
    np.testing.assert_array_equal(loss.draws(X.shape[0]), draws)
    expected = reference_per_sample(case, objective, theta, X, draws)
    rtol = 1e-10 if case.name in HVP or isinstance(objective, Denoising) else 1e-6  # central differences otherwise
    scale = np.mean(np.abs(expected))
    np.testing.assert_allclose(loss.per_sample(theta, X), expected, rtol=rtol, atol=rtol * scale)
    value, _ = loss.value_and_grad(theta, X)
    assert value == pytest.approx(np.mean(expected), rel=rtol, abs=rtol * scale)
    assert loss.value(theta, X) == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(loss.score(theta, X), case.score(theta, X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["gaussian_full", "ica_logcosh", "student_t", "polynomial_exp_family"])
@pytest.mark.parametrize("objective", OBJECTIVES[1:], ids=lambda o: o.name)
def test_gradients_match_finite_differences_at_fixed_draws(compiled, name, objective):
    """∇θJ̃ of the kernels against central differences of the hand-written objective (exact Hessian-vector
    products, so the differences are clean) and of the kernels' own J̃, at the same draws."""
    case, loss = compiled(name, objective)
    X, theta = case.X[:200], case.theta
    draws = loss.draws(X.shape[0]).copy()

    def reference(th):
        return float(np.mean(reference_per_sample(case, objective, th, X, draws)))

    value, grad = loss.value_and_grad(theta, X)
    assert value == pytest.approx(reference(theta), rel=1e-11)
    np.testing.assert_allclose(grad, central_difference_gradient(reference, theta), rtol=1e-6, atol=1e-7)
    own = central_difference_gradient(lambda th: loss.value(th, X), theta)
    np.testing.assert_allclose(grad, own, rtol=1e-6, atol=1e-7)
    per_row = loss.per_sample_grad(theta, X)  # the fitting kernels, built on the graph from the same integrand
    np.testing.assert_allclose(per_row.mean(axis=0), grad, rtol=1e-10, atol=1e-12)
    t = 17  # one row's gradient against central differences of that row's hand-written integrand
    row_ref = central_difference_gradient(
        lambda th: float(reference_per_sample(case, objective, th, X[t : t + 1], draws[t : t + 1])[0]), theta
    )
    np.testing.assert_allclose(per_row[t], row_ref, rtol=1e-6, atol=1e-7)


def test_resample_changes_the_draws_not_the_kernels(compiled):
    case, loss = compiled("student_t", Sliced(n_directions=2), seed=11)
    X = case.X
    before = loss.value(case.theta, X)
    loss.resample(12)
    after = loss.value(case.theta, X)
    assert after != pytest.approx(before, rel=1e-9)
    draws = Sliced(n_directions=2).draw(case.model, X.shape[0], 12)
    assert after == pytest.approx(np.mean(reference_per_sample(case, Sliced(n_directions=2), case.theta, X, draws)))
    fresh = case.model.compile(objective="sliced", n_directions=2, seed=12)
    assert fresh.key == loss.key and fresh.value(case.theta, X) == after
    # the direction distribution is data, not code: one compiled module for both
    assert case.model.compile(objective="sliced", directions="gaussian", n_directions=2).key == loss.key
    loss.resample(11)
    assert loss.value(case.theta, X) == before


def test_numba_python_backend_reads_the_auxiliary_columns():
    case = CASES["student_t"]()
    objective = Denoising(noise_scale=0.7)
    loss = case.model.compile(backend="numba-python", objective=objective, seed=4)
    draws = objective.draw(case.model, case.X.shape[0], 4)
    expected = reference_per_sample(case, objective, case.theta, case.X, draws)
    np.testing.assert_allclose(loss.per_sample(case.theta, case.X), expected, rtol=1e-12)


def test_variants_refuse_a_bounded_domain():
    x = sp.Symbol("x", real=True)
    a = sp.Symbol("a", real=True)
    model = symsm.Model(-a * x - x**2 / 2, [x], [a], domain="nonnegative", name="half_gaussian")
    for objective in ("sliced", "sliced_vr", "denoising"):
        with pytest.raises(ValueError, match=f"objective '{objective}' supports the domains"):
            model.compile(objective=objective)


# ------------------------------------------------------------------ sliced: unbiased for the exact objective


@pytest.mark.parametrize("name", ["gaussian_full", "ica_logcosh", "student_t", "gaussian_mixture"])
@pytest.mark.parametrize("kind", ["sliced", "sliced_vr"])
@pytest.mark.parametrize("directions", ["rademacher", "gaussian"])
def test_sliced_expectation_is_the_exact_objective(compiled, name, kind, directions):
    """E_v[vᵀHv + ½(vᵀs)²] = tr H + ½‖s‖² when E vvᵀ = I.

    The case's rows are repeated R = 40 times, so each sample x meets R·M = 80 independent directions (drawn
    per row); given X the per-row differences (sliced − exact) are independent with mean zero, and their mean
    is zero within 4 standard errors. M = 2 keeps the kernels those of the tests above (a kernel with 64
    directions per row costs about a minute to compile, for the same test).

    The bound is tight enough to catch a wrong estimator: (vᵀs)² not halved would be many standard errors
    away, and 4 standard errors are far smaller than the integrand itself."""
    objective = make_objective(kind, directions=directions, n_directions=2)
    case, loss = compiled(name, objective)
    X = np.tile(case.X, (40, 1))
    exact = case.integrand(case.theta, X)  # hand-written Σᵢ [∂ᵢ² log f + ½(∂ᵢ log f)²]
    values = loss.per_sample(case.theta, X)
    diff = values - exact
    se = diff.std(ddof=1) / np.sqrt(diff.size)
    assert abs(diff.mean()) <= 4 * se, (diff.mean(), se)
    assert loss.value(case.theta, X) == pytest.approx(np.mean(exact), abs=4 * se)
    # the draws are what the kernels saw: the same per-row values from numpy
    expected = reference_per_sample(case, objective, case.theta, X, loss.draws(X.shape[0]))
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6 * np.mean(np.abs(expected)))
    # power: 4 SE is far smaller than the integrand and than the bias of an unhalved (vᵀs)² term
    s = case.score(case.theta, X)
    assert 4 * se < 0.25 * np.mean(np.abs(exact))
    assert 0.5 * np.mean(np.sum(s * s, axis=1)) > 10 * se


# ------------------------------------------------------------------ fitting


def _gaussian(d: int) -> symsm.Model:
    """A Gaussian in natural parameters: log f = −½ xᵀMx + hᵀx (every score affine in θ)."""
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    M = symsm.symmetric("M", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    return symsm.Model(-(x.T * M * x)[0, 0] / 2 + (h.T * x)[0, 0], list(x), {"M": M, "h": h}, name=f"gauss_nat_{d}")


@pytest.mark.slow
def test_denoising_estimates_the_covariance_plus_noise():
    """DSM fits the data convolved with N(0, σ²I): for a Gaussian its covariance estimate is S + σ²I, not S.

    N = 1e5 rows, σ ∈ {1, 0.5, 0.3} (well above N^(−1/4) ≈ 0.056, where the variance ~1/(Nσ²) would take
    over). Each estimate of M is within 4 sandwich standard errors of (S + σ²I)⁻¹, far from S⁻¹ (the exact
    score-matching estimate, equal to the maximum-likelihood one) at σ = 1, and the estimates approach S as σ
    shrinks along the grid."""
    d = 3
    model = _gaussian(d)
    rng = np.random.default_rng(2024)
    C = np.array([[2.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 0.8]])
    X = rng.multivariate_normal([1.0, -2.0, 0.5], C, size=100_000)
    S = np.cov(X.T, bias=True)
    exact = symsm.fit(model, X)
    assert exact.method == "closed_form"
    np.testing.assert_allclose(exact.params["M"], np.linalg.inv(S), rtol=1e-8)
    iu = np.triu_indices(d)
    distances = []
    for sigma in (1.0, 0.5, 0.3):
        res = symsm.fit(model, X, objective=Denoising(noise_scale=sigma), seed=5)
        assert res.method == "closed_form" and res.hessian_method == "quadratic_form" and res.converged
        M_hat, se = res.params["M"], res.se_params["M"]
        target = np.linalg.inv(S + sigma**2 * np.eye(d))
        z = np.abs(M_hat - target)[iu] / se[iu]
        assert np.all(z < 4), (sigma, z)
        if sigma == 1.0:  # the bias is visible: far outside the standard errors of S⁻¹
            assert np.max(np.abs(M_hat - np.linalg.inv(S))[iu] / se[iu]) > 20
        distances.append(np.linalg.norm(np.linalg.inv(M_hat) - S))
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.2 * distances[0]


def test_closed_form_of_variants_equals_lbfgs_on_the_same_objective():
    """For an exponential family every variant is quadratic in θ: the closed form (A, b, c from P + 1 float64
    gradient passes) is the minimiser L-BFGS-B finds on the same loss, draws included."""
    case = CASES["polynomial_exp_family"]()
    X = np.random.default_rng(5).normal(0.2, 1.1, size=(3000, 2))
    for objective in (Sliced(n_directions=3), SlicedVR(), Denoising(noise_scale=0.5)):
        loss = case.model.compile(objective=objective, seed=9)
        A, b, c = loss.quadratic_form(X)
        theta = np.array([0.1, -0.3, 0.2, -0.4, -0.6])
        assert 0.5 * theta @ A @ theta + b @ theta + c == pytest.approx(loss.value(theta, X), rel=1e-11)
        closed = symsm.fit(loss, X)
        iterative = symsm.fit(loss, X, method="lbfgs")
        assert closed.method == "closed_form" and iterative.method == "lbfgs" and iterative.converged
        np.testing.assert_allclose(closed.theta, iterative.theta, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(closed.se, iterative.se, rtol=1e-4)


def test_lbfgs_fit_of_a_sliced_objective_with_standard_errors():
    case = CASES["student_t"]()
    rng = np.random.default_rng(8)
    # a bivariate Student-t (location 0.5, scale 1.3, ν = 6): N(0, I) over the root of a shared χ²_ν / ν
    X = 0.5 + 1.3 * rng.standard_normal((4000, 2)) / np.sqrt(rng.chisquare(6, size=(4000, 1)) / 6)
    loss = case.model.compile(objective="sliced_vr", n_directions=2, seed=1)
    res = symsm.fit(loss, X)
    assert res.method == "lbfgs" and res.converged and res.hessian_method == "central_differences"
    assert np.all(np.isfinite(res.se)) and np.all(res.se > 0)
    assert np.linalg.norm(loss.value_and_grad(res.theta, X)[1]) < 1e-8
    # near the truth (location 0.5, scale 1.3, 6 degrees of freedom) within 4 SE
    assert np.all(np.abs(res.theta - [0.5, 0.5, 1.3, 6.0]) < 4 * res.se), (res.theta, res.se)
    # the sandwich's V from the graph-built per-row gradients, fed the same draws
    G = loss.per_sample_grad(res.theta, X)
    np.testing.assert_allclose(res.grad_cov, np.cov(G.T, bias=True), rtol=1e-8, atol=1e-12)
    with pytest.raises(ValueError, match="no exact Hessian kernel is generated for objective 'sliced_vr'"):
        symsm.fit(loss, X, hessian="exact")
    with pytest.raises(ValueError, match="no exact θ-Hessian kernel"):
        loss.hessian(res.theta, X)
    with pytest.raises(ValueError, match="objective and seed are fixed by the compiled loss"):
        symsm.fit(loss, X, objective="denoising")


def test_fit_compiles_a_model_with_the_objective():
    case = CASES["gaussian_normalised"]()
    X = np.random.default_rng(3).normal(0.5, 1.5, size=(2000, 1))
    res = symsm.fit(case.model, X, objective="sliced", seed=2)
    assert res.converged
    loss = case.model.compile(objective="sliced", seed=2)
    assert np.linalg.norm(loss.value_and_grad(res.theta, X)[1]) < 1e-8
    assert isinstance(make_objective(Exact()), Exact)


# ------------------------------------------------------------------ CUDA code without a GPU


def test_variant_cuda_kernels_compile_to_ptx():
    require_module("numba_cuda")
    from symsm.runtime.device import import_cuda, simulator_enabled

    if simulator_enabled():
        pytest.skip("PTX needs numba-cuda's compiler, which the simulator replaces")
    case = CASES["student_t"]()
    loss = case.model.compile(backend="cuda", objective="sliced", n_directions=2)
    ptx = loss.ptx()
    assert set(ptx) == {"value_and_grad", "value", "per_sample", "score"}
    assert all(".entry" in text for text in ptx.values())
    assert "X[i_row, 5]" in loss.source  # 2 coordinates + 2 directions × 2: the last auxiliary column is read
    cuda = import_cuda()
    from symsm.backends.cuda.columns import join_columns

    for t in ("float64", "float32"):
        text, _ = cuda.compile_ptx(join_columns.py_func, f"void({t}[:, ::1], {t}[:, ::1], {t}[:, ::1])", cc=(8, 0))
        assert ".entry" in text
