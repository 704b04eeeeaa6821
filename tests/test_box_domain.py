"""Generalized score matching on a box (``Model(domain=symsm.Box(lower, upper))``), and genscore's named weights.

What is checked, and against what:

* a truncated normal on a box (d = 2, [−0.5, 1]², n = 3000, simulated by rejection, seeded): the box-weighted
  estimator (closed form: an exponential family) recovers the truth within 3 of its reported standard errors,
  and the plain objective on Rᵈ fitted to the same data is more than 10 of its own standard errors off;
* a 3-D Gaussian graphical model on a box with a two-sided, a lower-only and an upper-only coordinate: values,
  per-row values, scores and θ-gradients against the hand-written numpy integrand with hᵢ = h(distᵢ(xᵢ)),
  distᵢ = min(xᵢ − aᵢ, bᵢ − xᵢ) (tests/domain_models.py) and central differences, for h = t² and a capped
  h = min(t², 1), on the LLVM and numba-python backends and both derivation paths; its quadratic form (A, b, c)
  against A = mean Σᵢ hᵢ ∂ᵢF ∂ᵢFᵀ, b = mean Σᵢ [hᵢ ∂ᵢ²F + hᵢ′ ∂ᵢF] written by hand, and the closed form against
  L-BFGS-B;
* rows off the box refused naming the first offending row, column and bound; the Box's own validation;
  "nonnegative" is the box [0, ∞)ᵈ with its cache key unchanged, and a box model's key follows its bounds;
* genscore's named weights against their definitions in genscore's get_h_hp (written out in numpy here).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from domain_models import box_ggm, box_sample, ggm_features
from models import central_difference_gradient

import symsm
from symsm.core.errors import ModelError
from symsm.model import NAMED_WEIGHTS
from symsm.model.model import WEIGHT_VARIABLE

# ------------------------------------------------------------------------------------------- the target


def _truncated_normal_2d(domain):
    x = sp.symbols("x0:2", real=True)
    K = symsm.symmetric("K", 2)
    eta = sp.symbols("eta0:2", real=True)
    xv = sp.Matrix(x)
    log_f = -(xv.T * K * xv)[0, 0] / 2 + sum(e * xi for e, xi in zip(eta, x, strict=True))
    return symsm.Model(log_f, list(x), {"K": K, "eta": list(eta)}, name="tn2", domain=domain)


def test_truncated_normal_on_a_box_is_recovered_where_the_plain_fit_is_far_off():
    mean, cov = np.array([0.4, 0.1]), np.array([[1.0, 0.3], [0.3, 0.8]])
    lower, upper = np.array([-0.5, -0.5]), np.array([1.0, 1.0])
    X = box_sample(mean, cov, lower, upper, 3000, 5)
    box = _truncated_normal_2d(symsm.Box(-0.5, 1.0))
    K = np.linalg.inv(cov)
    K = (K + K.T) / 2
    truth = box.pack({"K": K, "eta": K @ mean})
    res = symsm.fit(box, X)
    assert res.method == "closed_form"
    z = (res.theta - truth) / res.se
    assert np.all(np.abs(z) < 3), (res.theta, truth, z)
    plain = symsm.fit(_truncated_normal_2d("real"), X)
    z_plain = (plain.theta - truth) / plain.se
    assert np.max(np.abs(z_plain)) > 10, z_plain


# ------------------------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize(
    ("weight", "backend", "path"),
    [("t2", "llvm", "sympy"), ("t2", "numba-python", "graph"), ("min_t2", "llvm", "graph")],
)
def test_box_objective_and_gradient_match_numpy_and_finite_differences(weight, backend, path):
    case = box_ggm(weight)
    loss = case.model.compile(backend=backend, path=path)
    X = case.X[:200].copy()
    X[0] = [-1.0, 0.0, 2.0]  # rows on the boundary are data too: h(0) = 0
    X[1] = [1.5, 3.0, -4.0]
    for theta in (case.theta, case.theta * 0.8 + 0.1):
        J, g = loss.value_and_grad(theta, X)
        assert pytest.approx(case.objective(theta, X), rel=1e-12, abs=1e-12) == J
        np.testing.assert_allclose(loss.per_sample(theta, X), case.integrand(theta, X), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(loss.score(theta, X), case.score(theta, X), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, central_difference_gradient(lambda th: case.objective(th, X), theta), rtol=1e-6)


def test_box_quadratic_form_matches_hand_written_and_lbfgs():
    case = box_ggm("min_t2")
    loss = case.model.compile()
    X = case.X
    n = X.shape[0]
    A, b, c = loss.quadratic_form(X)
    dF, d2F, _ = ggm_features(X)
    h, dh = case.weights(X)
    A_hand = np.einsum("ni,nik,nil->kl", h, dF, dF) / n
    b_hand = (np.einsum("ni,nik->k", h, d2F) + np.einsum("ni,nik->k", dh, dF)) / n
    np.testing.assert_allclose(A, A_hand, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(b, b_hand, rtol=1e-12, atol=1e-13)
    assert 0.5 * case.theta @ A @ case.theta + b @ case.theta + c == pytest.approx(
        case.objective(case.theta, X), rel=1e-12
    )
    closed = symsm.fit(loss, X)
    assert closed.method == "closed_form" and np.all(closed.se > 0)
    np.testing.assert_allclose(closed.theta, np.linalg.solve(A_hand, -b_hand), rtol=1e-10)
    polished = symsm.fit(loss, X, method="lbfgs")
    np.testing.assert_allclose(polished.theta, closed.theta, atol=1e-8)
    np.testing.assert_allclose(polished.se, closed.se, rtol=1e-6)


def test_a_coordinate_without_bounds_is_unweighted():
    model = symsm.Model.from_string("-(x - m)**2/2 - y**2/2", "x y", "m", domain=symsm.Box([0, -math.inf], math.inf))
    x, _ = model.data
    assert model.coordinate_weights() == (x**2, sp.Integer(1))
    X = np.abs(np.random.default_rng(1).normal(size=(50, 2)))
    theta = np.array([0.3])
    s = -(X[:, 0] - 0.3)
    want = np.mean(X[:, 0] ** 2 * (-1 + 0.5 * s**2) + 2 * X[:, 0] * s + (-1 + 0.5 * X[:, 1] ** 2))
    assert model.compile().value(theta, X) == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------------------- the box itself


def test_rows_off_the_box_name_the_first_offending_row_column_and_bound():
    case = box_ggm()
    loss = case.model.compile()
    X = case.X[:40].copy()
    X[9, 0] = 1.75
    X[6, 2] = 2.5
    X[6, 1] = 0.0  # the bound itself is inside
    pattern = r"outside the model's box domain x0 ∈ \[-1, 1.5\] × x1 ∈ \[0, ∞\) × x2 ∈ \(-∞, 2\] \(2 in all\)"
    for call in (lambda: loss.value_and_grad(case.theta, X), lambda: loss.quadratic_form(X)):
        with pytest.raises(ValueError, match=pattern + r".*row 6, column 2 \(x2\): 2.5, above its upper bound 2"):
            call()
    X[6, 2] = 0.0
    with pytest.raises(ValueError, match=r"row 9, column 0 \(x0\): 1.75, above its upper bound 1.5"):
        symsm.fit(case.model, X)
    X[9, 0] = -1.25
    with pytest.raises(ValueError, match=r"row 9, column 0 \(x0\): -1.25, below its lower bound -1"):
        loss.value(case.theta, X)
    X[9, 0] = -1.0
    assert np.isfinite(loss.value(case.theta, X))


@pytest.mark.parametrize(
    ("lower", "upper", "message"),
    [
        (1.0, 1.0, r"lower = 1.0 must be below upper = 1.0"),
        ([0, 2], [1, 1], r"lower\[1\] = 2.0 must be below upper\[1\] = 1.0"),
        (math.inf, math.inf, r"must be below"),
        (0, -math.inf, r"must be below"),
        (float("nan"), 1, r"lower is NaN"),
        ("0", 1, r"lower must be a number or a sequence of numbers"),
        ([0, "a"], 1, r"lower\[1\] must be a real number"),
        ([], 1, r"lower is empty"),
        ([0, 0], [1, 1, 1], r"lower has 2 bounds and upper 3"),
        ([0, 0, 0], 1, r"lower has 3 bounds but the model has d = 2"),
    ],
)
def test_bad_boxes_are_refused_with_the_reason(lower, upper, message):
    with pytest.raises(ModelError, match=message):
        symsm.Model.from_string("-(x**2 + y**2)*s", "x y", "s", domain=symsm.Box(lower, upper))


def test_domain_names_and_weights_are_checked():
    with pytest.raises(ModelError, match=r"domain 'box' needs its bounds: pass domain=symsm.Box"):
        symsm.Model.from_string("-x**2*s", "x", "s", domain="box")
    with pytest.raises(ModelError, match=r"domain must be one of \('real', 'nonnegative'.*\) or a symsm.Box"):
        symsm.Model.from_string("-x**2*s", "x", "s", domain="interval")
    with pytest.raises(ModelError, match=r"weight applies to domain='nonnegative' or a symsm.Box"):
        symsm.Model.from_string("-x**2*s", "x", "s", weight="t**2")
    with pytest.raises(ModelError, match=r"must vanish at 0"):
        symsm.Model.from_string("-x**2*s", "x", "s", domain=symsm.Box(0, 1), weight="1 + t")


def test_nonnegative_is_the_box_from_zero_and_keeps_its_cache_key():
    nonneg = symsm.Model.from_string("-x**2*s", "x", "s", domain="nonnegative")
    box = symsm.Model.from_string("-x**2*s", "x", "s", domain=symsm.Box(0, math.inf))
    assert nonneg.box == box.box == symsm.Box([0.0], [math.inf])
    assert nonneg.coordinate_weights() == box.coordinate_weights()
    assert "box" not in nonneg.canonical()  # the key "nonnegative" models always had
    other = symsm.Model.from_string("-x**2*s", "x", "s", domain=symsm.Box(0, 2))
    assert len({nonneg.hash, box.hash, other.hash}) == 3


# ------------------------------------------------------------------------------------------- genscore's weights

# genscore's get_h_hp definitions of h, written out in numpy (p = para, q = para2)
GENSCORE_H = {
    "asinh": lambda t, p, q: np.arcsinh(p * t),
    "cosh": lambda t, p, q: np.cosh(p * t) - 1,
    "exp": lambda t, p, q: np.exp(p * t) - 1,
    "identity": lambda t, p, q: t,
    "log_pow": lambda t, p, q: np.log1p(t) ** p,
    "mcp": lambda t, p, q: (p * t - t**2 / 2 / q) * (t <= q * p) + q * p**2 / 2 * (t > q * p),
    "min_asinh": lambda t, p, q: np.minimum(np.arcsinh(p * t), q),
    "min_cosh": lambda t, p, q: np.minimum(np.cosh(p * t) - 1, q),
    "min_exp": lambda t, p, q: np.minimum(np.exp(p * t) - 1, q),
    "min_log_pow": lambda t, p, q: np.minimum(np.log1p(t), q) ** p,
    "min_pow": lambda t, p, q: np.minimum(t, q) ** p,
    "min_sinh": lambda t, p, q: np.minimum(np.sinh(p * t), q),
    "min_softplus": lambda t, p, q: np.minimum(np.log1p(np.exp(p * t)) - np.log(2), q),
    "pow": lambda t, p, q: t**p,
    "scad": lambda t, p, q: (
        (t <= p) * p * t
        + ((p < t) & (t < q * p)) * (2 * q * p * t - t**2 - p**2) / (2 * (q - 1))
        + (t >= q * p) * p**2 * (q + 1) / 2
    ),
    "sinh": lambda t, p, q: np.sinh(p * t),
    "softplus": lambda t, p, q: np.log1p(np.exp(p * t)) - np.log(2),
    "tanh": lambda t, p, q: np.tanh(p * t),
    "truncated_sin": lambda t, p, q: np.sin(p * t) * (p * t <= np.pi / 2) + (p * t > np.pi / 2),
    "truncated_tan": lambda t, p, q: np.tan(p * t) * (p * t <= np.pi / 4) + (p * t > np.pi / 4),
}


@pytest.mark.parametrize("name", sorted(NAMED_WEIGHTS))
def test_named_weights_follow_genscore(name):
    n_params, default2, _ = NAMED_WEIGHTS[name]
    params = (1.5, 2.5)[:n_params]
    model = symsm.Model.from_string("-x**2*s", "x", "s", domain=symsm.Box(0, 5), weight=(name, *params))
    p = params[0] if n_params else 1.0
    q = params[1] if n_params == 2 else float(default2)
    t = np.linspace(0.01, 5, 301)
    h = sp.lambdify(WEIGHT_VARIABLE, model.weight_expr, "numpy")
    np.testing.assert_allclose(h(t) + 0 * t, GENSCORE_H[name](t, p, q), rtol=1e-12, atol=1e-12)
    # h′ (exact, piecewise) against central differences of genscore's h, away from the kinks
    dh = sp.lambdify(
        WEIGHT_VARIABLE,
        sp.diff(model.weight_expr, WEIGHT_VARIABLE),
        [{"Heaviside": lambda u, h0=0.5: np.heaviside(u, h0)}, "numpy"],
    )
    fd = (GENSCORE_H[name](t + 1e-6, p, q) - GENSCORE_H[name](t - 1e-6, p, q)) / 2e-6
    smooth = np.abs(np.diff(fd, prepend=fd[0])) < 0.5  # drop points beside a kink
    np.testing.assert_allclose((dh(t) + 0 * t)[smooth], fd[smooth], rtol=1e-5, atol=1e-5)
    # the bare name takes genscore's defaults
    assert symsm.Model.from_string("-x**2*s", "x", "s", domain="nonnegative", weight=name).weight_expr is not None


def test_named_weight_errors():
    def model(weight):
        return symsm.Model.from_string("-x**2*s", "x", "s", domain="nonnegative", weight=weight)

    with pytest.raises(ModelError, match=r"unknown named weight 'min_pw'"):
        model(("min_pw", 1))
    with pytest.raises(ModelError, match=r"min_pow takes 2 parameter"):
        model(("min_pow", 1, 2, 3))
    with pytest.raises(ModelError, match=r"para2 must be positive"):
        model(("min_pow", 1, -2))
    with pytest.raises(ModelError, match=r"scad needs para2 > 1"):
        model(("scad", 1, 1))
    with pytest.raises(ModelError, match=r"h'\(0\) = oo"):  # h′ must be finite where data may lie
        model(("pow", 0.5))


# ------------------------------------------------------------------------------------------- LaTeX, files, CLI, Dask


def test_latex_shows_the_box_its_weights_and_the_limits_at_its_ends():
    from symsm.latex import derivation_latex

    case = box_ggm("min_t2")
    tex = derivation_latex(case.model.derive())
    assert r"\in [-1, 1.5] \times [0, \infty) \times (-\infty, 2]" in tex
    assert r"\int_{[-1, 1.5] \times [0, \infty) \times (-\infty, 2]} f(x;\theta)" in tex
    assert r"h(x_{0}) &= \min\left(1, \min\left(\frac{3}{2} - x_{0}, x_{0} + 1\right)^{2}\right)" in tex  # exact
    assert r"h(x_{2}) &= \min\left(1, \left(2 - x_{2}\right)^{2}\right)" in tex
    for limit in (r"x_{0} \to -1^{+}", r"x_{0} \to 1.5^{-}", r"x_{1} \to 0^{+}", r"x_{2} \to -\infty"):
        assert rf"\lim_{{{limit}}}" in tex, limit
    assert r"integration by parts in $x_{i}$ over $[a_{i}, b_{i}]$" in tex and "piece by piece" in tex
    # a one-dimensional box [0, 1]: the interval itself
    one = symsm.Model.from_string("-(x - m)**2/2", "x", "m", domain=symsm.Box(0, 1))
    assert r"$x \in [0, 1]$" in derivation_latex(one.derive())


BOX_LOG_F = (
    "-(K[0,0]*x0**2 + K[1,1]*x1**2 + K[2,2]*x2**2)/2 - K[0,1]*x0*x1 - K[0,2]*x0*x2 - K[1,2]*x1*x2"
    " + eta0*x0 + eta1*x1 + eta2*x2"
)
BOX_TOML = f"""
name = "box_file"
data = ["x0", "x1", "x2"]
params = [{{name = "K", shape = [3, 3], symmetric = true}}, "eta0", "eta1", "eta2"]
log_f = "{BOX_LOG_F}"
domain = "box"
lower = [-1, 0, -inf]
upper = [1.5, inf, 2]
weight = "min(t**2, 1)"
"""


def test_model_file_with_a_box(tmp_path):
    from symsm.model.modelfile import load_model

    path = tmp_path / "box.toml"
    path.write_text(BOX_TOML)
    model = load_model(path)
    case = box_ggm("min_t2")
    assert model.domain == "box" and model.box == case.model.box
    X = case.X[:80]
    assert model.compile().value(case.theta, X) == pytest.approx(case.objective(case.theta, X), rel=1e-12)
    path.write_text(BOX_TOML.replace('weight = "min(t**2, 1)"', 'weight = ["min_pow", 2, 1]'))
    assert load_model(path).weight_expr == sp.Min(WEIGHT_VARIABLE, 1) ** 2  # genscore's min_pow(2, 1)
    path.write_text(BOX_TOML.replace("lower = [-1, 0, -inf]\n", "").replace("upper = [1.5, inf, 2]", "upper = 3"))
    assert load_model(path).box == symsm.Box(-math.inf, 3).resolve(3)


@pytest.mark.parametrize(
    ("replace", "key", "problem"),
    [
        (("lower = [-1, 0, -inf]\nupper = [1.5, inf, 2]\n", ""), "domain", r"needs its bounds"),
        (("lower = [-1, 0, -inf]", "lower = [-1, 0]"), "lower", r"has 2 bounds; expected a number or 3"),
        (("lower = [-1, 0, -inf]", 'lower = [-1, "a", 0]'), "lower[1]", r"expected a number"),
        (("upper = [1.5, inf, 2]", "upper = [1.5, -1, 2]"), "lower", r"lower\[1\] = 0.0 must be below upper\[1\] = -1"),
        (('domain = "box"', 'domain = "nonnegative"'), "lower", r'applies to domain = "box" only'),
        (('weight = "min(t**2, 1)"', "weight = [2, 1]"), "weight", r"a named weight or \[name, para, para2\]"),
        (('weight = "min(t**2, 1)"', 'weight = ["min_pow", "2"]'), "weight[1]", r"expected a number"),
        (('weight = "min(t**2, 1)"', 'weight = "max(t, 1)"'), "weight", r"must vanish at 0"),
    ],
)
def test_box_model_file_errors_name_the_key(tmp_path, replace, key, problem):
    from symsm.model.modelfile import ModelFileError, load_model

    path = tmp_path / "box.toml"
    path.write_text(BOX_TOML.replace(*replace))
    with pytest.raises(ModelFileError, match=problem) as info:
        load_model(path)
    assert info.value.key == key


def test_cli_derive_reports_the_box_and_fit_refuses_rows_off_it(tmp_path):
    from test_domains import _cli

    path = tmp_path / "box.toml"
    path.write_text(BOX_TOML)
    out = _cli("derive", str(path), "--json")
    assert out.returncode == 0, out.stderr
    import json

    data = json.loads(out.stdout)
    assert data["domain"] == "box" and data["lower"] == [-1.0, 0.0, None] and data["upper"] == [1.5, None, 2.0]
    X = box_ggm().X[:40].copy()
    X[4, 2] = 2.25
    np.save(tmp_path / "X.npy", X)
    out = _cli("fit", str(path), "--data", str(tmp_path / "X.npy"))
    assert out.returncode == 1 and "row 4, column 2 (x2): 2.25, above its upper bound 2" in out.stderr, out.stderr


def test_dask_passes_follow_the_box():
    da = pytest.importorskip("dask.array")
    import dask

    from symsm.runtime import dask as sd

    case = box_ggm("min_t2")
    loss = case.model.compile()
    X = case.X
    with dask.config.set(scheduler="sync"):
        value, grad = sd.value_and_grad(loss, case.theta, da.from_array(X, chunks=(150, 3)))
        want_value, want_grad = loss.value_and_grad(case.theta, X)
        assert value == pytest.approx(want_value, rel=1e-12)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-11)
        distributed = sd.quadratic_form(loss, da.from_array(X, chunks=(150, 3)))
        for got, want in zip(distributed, loss.quadratic_form(X), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
        bad = X.copy()
        bad[160, 0] = -3.0
        with pytest.raises(ValueError, match=r"row 10, column 0 \(x0\): -3.0, below its lower bound -1.*chunk 1"):
            sd.value(loss, case.theta, da.from_array(bad, chunks=(150, 3)))


def test_randomised_objectives_refuse_a_box():
    model = box_ggm().model
    for objective in ("sliced", "denoising"):
        with pytest.raises(ValueError, match=f"objective '{objective}' supports the domains \\('real',\\).*'box'"):
            model.compile(objective=objective)


@pytest.mark.slow
def test_box_cuda_kernels_with_min_max_and_the_step_compile_to_ptx():
    """numba-cuda's real compiler (no GPU needed) types min, max and the step's conditional in both dtypes."""
    from required import require_module

    require_module("numba_cuda")
    from symsm.runtime.device import simulator_enabled

    if simulator_enabled():
        pytest.skip("PTX needs numba-cuda's real compiler (NUMBA_ENABLE_CUDASIM is set)")
    for dtype in (np.float64, np.float32):
        loss = box_ggm("t2_over_max").model.compile(backend="cuda", dtype=dtype)
        ptx = loss.ptx(cc=(8, 0))
        assert sorted(ptx) == sorted(("value_and_grad", "value", "per_sample", "score"))
        assert all(".entry" in text for text in ptx.values())
        if dtype == np.float32:  # min/max stay in float32 (no promotion to double) and are the GPU's own
            assert not any(".f64" in text for text in ptx.values())
            assert "max.f32" in ptx["value_and_grad"]
