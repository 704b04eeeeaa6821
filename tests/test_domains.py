"""Generalized score matching on the non-negative orthant [0, ∞)ᵈ (``Model(domain="nonnegative", weight=...)``).

What is checked, and against what:

* a truncated normal on (0, ∞) (μ = 0.5, σ = 1, n = 1000, seeded): the weighted estimator recovers μ and σ
  within 3 of its reported standard errors, for each weight; the plain objective (domain "real") on the same
  data is many of its own standard errors off (it gives the sample mean and standard deviation, checked too);
  the reported standard errors against a sandwich built from the hand-written integrand by finite differences;
* the weighted objective's values, per-sample values, scores and θ-gradients against the hand-written numpy
  integrand Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] of tests/domain_models.py and central
  differences, for the weights t², t²/(1 + t²) and 1 − e^(−t), on the numba and numba-python backends;
* a non-negative Gaussian graphical model (d = 3, an exponential family): the closed form, its (A, b, c)
  against A = mean Σᵢ hᵢ ∂ᵢF ∂ᵢFᵀ, b = mean Σᵢ [hᵢ(∂ᵢ²F + ∂ᵢc ∂ᵢF) + hᵢ′ ∂ᵢF] written by hand, and L-BFGS-B on
  the same objective;
* data outside the domain (ValueError naming the first offending row and column), weight validation, the
  cache key, model files and the CLI with domain and weight, and the CUDA kernels' PTX (the CUDA numbers
  are compared with the CPU under the simulator in tests/cuda/test_cuda_domains.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from domain_models import (
    WEIGHTS,
    ggm_features,
    nonnegative_ggm,
    truncated_normal,
    truncated_normal_sample,
)
from models import central_difference_gradient
from required import require_module

import symsm
from symsm.core.errors import ModelError
from symsm.model.model import WEIGHT_VARIABLE
from symsm.model.modelfile import ModelFileError, load_model

MU, SIGMA, N_TRUNCATED, SEED = 0.5, 1.0, 1000, 2024
BACKENDS = ["numba", "numba-python"]


@pytest.fixture(scope="module")
def truncated_data() -> np.ndarray:
    return truncated_normal_sample(MU, SIGMA, N_TRUNCATED, SEED)


# ------------------------------------------------------------------------------------------- the truncated normal


def _hand_sandwich_se(case, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Standard errors sqrt(diag(H⁻¹VH⁻¹)/N) from the hand-written integrand alone: per-row θ-gradients and the
    Hessian of J̃ by central differences (V: the covariance of the per-row gradients)."""
    P, n = theta.size, X.shape[0]

    def row_grads(th):
        out = np.empty((n, P))
        for k in range(P):
            step = 1e-6 * max(1.0, abs(th[k]))
            e = np.zeros(P)
            e[k] = step
            out[:, k] = (case.integrand(th + e, X) - case.integrand(th - e, X)) / (2 * step)
        return out

    G = row_grads(theta)
    V = np.cov(G, rowvar=False, bias=True)
    H = np.empty((P, P))
    for k in range(P):
        step = 1e-4 * max(1.0, abs(theta[k]))
        e = np.zeros(P)
        e[k] = step
        H[:, k] = (row_grads(theta + e).mean(axis=0) - row_grads(theta - e).mean(axis=0)) / (2 * step)
    H = (H + H.T) / 2
    Hinv = np.linalg.inv(H)
    return np.sqrt(np.diag(Hinv @ V @ Hinv) / n)


@pytest.mark.parametrize("weight", sorted(WEIGHTS))
def test_truncated_normal_is_recovered_by_the_weighted_estimator(truncated_data, weight):
    case = truncated_normal(weight)
    X = truncated_data
    assert X.shape == (N_TRUNCATED, 1) and X.min() > 0
    res = symsm.fit(case.model, X)
    assert res.converged and res.method == "lbfgs"  # (μ, σ): the score is not affine in θ
    truth = np.array([MU, SIGMA])
    z = (res.theta - truth) / res.se
    print(f"\n{weight}: mu = {res.theta[0]:.4f} ± {res.se[0]:.4f}, sigma = {res.theta[1]:.4f} ± {res.se[1]:.4f}")
    assert np.all(np.abs(z) < 3), (res.theta, res.se, z)
    # θ̂ is a stationary point of the hand-written objective, and the reported SEs are its sandwich SEs
    g = central_difference_gradient(lambda th: case.objective(th, X), res.theta)
    assert np.all(np.abs(g) < 1e-6), g
    np.testing.assert_allclose(res.se, _hand_sandwich_se(case, res.theta, X), rtol=1e-4)


def test_plain_objective_is_biased_on_the_same_data(truncated_data):
    X = truncated_data
    plain = symsm.fit(truncated_normal(domain="real").model, X)
    weighted = symsm.fit(truncated_normal("t2").model, X)
    print(
        f"\nplain (domain='real'): mu = {plain.theta[0]:.4f} ± {plain.se[0]:.4f}, "
        f"sigma = {plain.theta[1]:.4f} ± {plain.se[1]:.4f}"
        f"\nnonnegative, h = t^2: mu = {weighted.theta[0]:.4f} ± {weighted.se[0]:.4f}, "
        f"sigma = {weighted.theta[1]:.4f} ± {weighted.se[1]:.4f}"
    )
    assert plain.converged
    # Plain score matching of a normal gives the sample mean and standard deviation: the truncated data's,
    # which sit far from (μ, σ) = (0.5, 1) — more than 10 of the plain fit's own standard errors.
    np.testing.assert_allclose(plain.theta, [X.mean(), X.std()], rtol=1e-6)
    z_plain = (plain.theta - [MU, SIGMA]) / plain.se
    assert z_plain[0] > 10 and z_plain[1] < -10, z_plain
    # the two estimators disagree by far more than the weighted one's uncertainty
    assert np.all(np.abs(plain.theta - weighted.theta) > 3 * weighted.se)


# ------------------------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight", sorted(WEIGHTS))
@pytest.mark.parametrize("make", [truncated_normal, nonnegative_ggm], ids=["truncated_normal", "ggm3"])
def test_weighted_objective_and_gradient_match_numpy_and_finite_differences(make, weight, backend):
    case = make(weight)
    loss = case.model.compile(backend=backend)
    X = case.X[:200].copy()
    X[0, :] = 0.0  # rows on the boundary are data too: h(0) = 0, h′(0) finite
    for theta in (case.theta, case.theta * 0.8 + 0.1):
        J, g = loss.value_and_grad(theta, X)
        assert case.objective(theta, X) == pytest.approx(J, rel=1e-12, abs=1e-12)
        assert loss.value(theta, X) == pytest.approx(J, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(loss.per_sample(theta, X), case.integrand(theta, X), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(loss.score(theta, X), case.score(theta, X), rtol=1e-12, atol=1e-12)
        want = central_difference_gradient(lambda th: case.objective(th, X), theta)
        np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-8)
        # and central differences of the compiled value itself
        np.testing.assert_allclose(g, central_difference_gradient(lambda th: loss.value(th, X), theta), atol=1e-7)


def test_the_weight_changes_the_objective_and_the_plain_one_is_unweighted():
    X = truncated_normal_sample(MU, SIGMA, 50, 5)
    theta = np.array([0.3, 1.4])
    values = {}
    for weight in WEIGHTS:
        values[weight] = truncated_normal(weight).model.compile().value(theta, X)
    plain = truncated_normal(domain="real")
    s, hd = plain.score(theta, X), plain.hessian_diag(theta, X)
    assert plain.model.compile().value(theta, X) == pytest.approx(np.mean(hd + 0.5 * s * s), rel=1e-12)
    assert len({round(v, 10) for v in values.values()}) == len(WEIGHTS)


# ------------------------------------------------------------------------------------------- exponential family


@pytest.mark.parametrize("cubic", [False, True], ids=["ggm", "ggm_with_base_measure"])
@pytest.mark.parametrize("weight", ["t2", "t2_bounded"])
def test_ggm_closed_form_matches_hand_written_quadratic_form_and_lbfgs(weight, cubic):
    case = nonnegative_ggm(weight, cubic=cubic)
    der = case.model.derive()
    assert der.is_quadratic
    loss = case.model.compile()
    X = case.X
    n = X.shape[0]
    A, b, c = loss.quadratic_form(X)
    dF, d2F, dc = ggm_features(X, cubic=cubic)
    h, dh = case.weight.h(X), case.weight.dh(X)
    A_hand = np.einsum("ni,nik,nil->kl", h, dF, dF) / n
    b_hand = (np.einsum("ni,nik->k", h, d2F + dc[:, :, None] * dF) + np.einsum("ni,nik->k", dh, dF)) / n
    np.testing.assert_allclose(A, A_hand, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(b, b_hand, rtol=1e-12, atol=1e-13)
    # c completes J̃ = ½θᵀAθ + bᵀθ + c (the hand-written objective at two points)
    for theta in (case.theta, -0.5 * case.theta):
        assert 0.5 * theta @ A @ theta + b @ theta + c == pytest.approx(case.objective(theta, X), rel=1e-12)

    closed = symsm.fit(loss, X)
    assert closed.method == "closed_form"
    np.testing.assert_allclose(closed.theta, np.linalg.solve(A_hand, -b_hand), rtol=1e-10)
    # L-BFGS-B on the same objective: alone (no Newton polish) to its tolerance, then polished to roundoff
    iterative = symsm.fit(loss, X, method="lbfgs", options={"polish": False, "gtol": 1e-10, "ftol": 1e-15})
    assert iterative.method == "lbfgs" and iterative.converged
    np.testing.assert_allclose(iterative.theta, closed.theta, atol=1e-5)
    assert iterative.loss == pytest.approx(closed.loss, abs=1e-10)
    polished = symsm.fit(loss, X, method="lbfgs")
    np.testing.assert_allclose(polished.theta, closed.theta, atol=1e-10)
    np.testing.assert_allclose(polished.se, closed.se, rtol=1e-8)
    assert np.all(np.isfinite(closed.se)) and np.all(closed.se > 0)


# ------------------------------------------------------------------------------------------- data outside the domain


def test_data_outside_the_domain_names_the_first_offending_row_and_column():
    case = nonnegative_ggm()
    loss = case.model.compile()
    X = case.X[:50].copy()
    X[7, 0] = -0.5
    X[3, 2] = -1e-9  # the first in row order: row 3, column 2 (the row comes first, then the column)
    X[3, 1] = 0.0  # the boundary itself is inside
    pattern = r"X has values outside the model's domain \[0, ∞\)\^3.*2 negative.*row 3, column 2 \(x2\): -1e-09"
    for call in (
        lambda: loss.value_and_grad(case.theta, X),
        lambda: loss.value(case.theta, X),
        lambda: loss.per_sample(case.theta, X),
        lambda: loss.quadratic_form(X),
        lambda: symsm.fit(case.model, X),
        lambda: symsm.fit(loss, X, method="lbfgs"),
    ):
        with pytest.raises(ValueError, match=pattern):
            call()
    X[3, 2] = 0.0
    with pytest.raises(ValueError, match=r"1 negative.*row 7, column 0 \(x0\): -0.5"):
        symsm.fit(case.model, X)
    X[7, 0] = 0.0
    assert np.isfinite(loss.value(case.theta, X))
    # the same data on R^d are fine: the check belongs to the domain
    real = truncated_normal(domain="real").model.compile()
    assert np.isfinite(real.value(np.array([0.0, 1.0]), -np.ones((3, 1))))


# ------------------------------------------------------------------------------------------- the weight


def _model(**kwargs) -> symsm.Model:
    x = sp.Symbol("x", real=True)
    mu = sp.Symbol("mu", real=True)
    return symsm.Model(-((x - mu) ** 2) / 2, [x], [mu], name="w", **kwargs)


def test_weight_forms_and_default():
    t = WEIGHT_VARIABLE
    assert _model(domain="nonnegative").weight_expr == t**2  # Hyvärinen (2007)
    assert _model().weight_expr is None and _model().weight is None and _model().coordinate_weights() is None
    u = sp.Symbol("u", positive=True)
    forms = [
        lambda v: v**2 / (1 + v**2),
        sp.Lambda(u, u**2 / (1 + u**2)),
        "t**2/(1 + t**2)",
    ]
    models = [_model(domain="nonnegative", weight=w) for w in forms]
    assert all(m.weight_expr == t**2 / (1 + t**2) for m in models)
    assert len({m.hash for m in models}) == 1  # the argument's name does not enter the cache key
    assert models[0].weight == sp.Lambda(t, t**2 / (1 + t**2))
    x = models[0].data[0]
    assert models[0].coordinate_weights() == (x**2 / (1 + x**2),)
    hashes = {_model().hash, _model(domain="nonnegative").hash, models[0].hash}
    assert len(hashes) == 3  # the domain and the weight are part of the model's identity
    assert _model(domain="nonnegative", weight=sp.tanh).weight_expr == sp.tanh(t)  # a sympy function: h(t) = tanh t


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain": "interval"}, r"domain must be one of \('real', 'nonnegative'.*\) or a symsm.Box.*got 'interval'"),
        ({"weight": lambda t: t**2}, r"weight applies to domain='nonnegative'"),
        ({"domain": "nonnegative", "weight": 3}, r"weight must be a one-argument callable.*got int"),
        ({"domain": "nonnegative", "weight": lambda a, b: a * b}, r"one variable h\(t\).*takes 2 arguments"),
        ({"domain": "nonnegative", "weight": sp.Lambda(sp.symbols("a b"), 1)}, r"Lambda of 2 variables"),
        ({"domain": "nonnegative", "weight": lambda t: 1 + t}, r"must vanish at 0.*h\(0\) = 1"),
        ({"domain": "nonnegative", "weight": lambda t: 0 * t + 2}, r"is constant"),
        ({"domain": "nonnegative", "weight": lambda t: -(t**2)}, r"must be positive for t > 0"),
        (
            {"domain": "nonnegative", "weight": lambda t: t**2 - t},
            r"must be positive for t > 0.*t\*\*2 - t is -1.*at t = 1e-08",
        ),
        ({"domain": "nonnegative", "weight": lambda t: t * sp.sin(t)}, r"must be positive for t > 0"),
        ({"domain": "nonnegative", "weight": sp.sqrt}, r"h'\(0\) = oo.*differentiable at 0"),
        (
            {"domain": "nonnegative", "weight": lambda t: sp.Abs(t) * t},
            r"weight contains the non-smooth function Abs.*must be continuous and piecewise smooth",
        ),
        ({"domain": "nonnegative", "weight": lambda t: t**2 * sp.Symbol("a")}, r"also depends on a"),
        ({"domain": "nonnegative", "weight": lambda t: sp.I * t**2}, r"must be real and finite"),
        ({"domain": "nonnegative", "weight": lambda t: np.exp(-t)}, r"calling it with a sympy Symbol failed"),
        ({"domain": "nonnegative", "weight": lambda t: t > 1}, r"must give a sympy expression"),
        ({"domain": "nonnegative", "weight": "t**2 + __import__('os')"}, r"^weight: .*variable t"),
    ],
)
def test_bad_domain_or_weight_is_refused_with_the_reason(kwargs, message):
    with pytest.raises(ModelError, match=message):
        _model(**kwargs)


def test_from_string_takes_domain_and_weight():
    model = symsm.Model.from_string(
        "-(x - mu)**2/(2*s**2)", data="x", params="mu s", positive="s", domain="nonnegative", weight="1 - exp(-t)"
    )
    assert model.domain == "nonnegative" and model.weight_expr == 1 - sp.exp(-WEIGHT_VARIABLE)
    X = truncated_normal_sample(MU, SIGMA, 40, 1)
    case = truncated_normal("one_minus_exp")
    assert model.compile().value(case.theta, X) == pytest.approx(case.objective(case.theta, X), rel=1e-12)


# ------------------------------------------------------------------------------------------- model files and CLI

TOML = """
name = "truncated_normal_file"
data = ["x"]
params = ["mu", {name = "sigma", positive = true}]
log_f = "-(x - mu)**2/(2*sigma**2)"
domain = "nonnegative"
weight = "t**2/(1 + t**2)"
"""


def test_model_file_with_domain_and_weight(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(TOML)
    model = load_model(path)
    assert model.domain == "nonnegative" and model.weight_expr == WEIGHT_VARIABLE**2 / (1 + WEIGHT_VARIABLE**2)
    case = truncated_normal("t2_bounded")
    X = case.X[:60]
    assert model.compile().value(case.theta, X) == pytest.approx(case.objective(case.theta, X), rel=1e-12)
    path.write_text(TOML.replace('weight = "t**2/(1 + t**2)"', ""))
    assert load_model(path).weight_expr == WEIGHT_VARIABLE**2  # the default


@pytest.mark.parametrize(
    ("replace", "key", "problem"),
    [
        (('domain = "nonnegative"', 'domain = "real"'), "weight", r"applies to domain = .nonnegative., .box."),
        (('weight = "t**2/(1 + t**2)"', "weight = 2"), "weight", r"expected a formula in t"),
        (('weight = "t**2/(1 + t**2)"', 'weight = "1 + t"'), "weight", r"must vanish at 0"),
        (('domain = "nonnegative"', 'domain = "positive"'), "domain", r"expected one of 'real', 'nonnegative'"),
    ],
)
def test_model_file_errors_name_the_key(tmp_path, replace, key, problem):
    path = tmp_path / "m.toml"
    path.write_text(TOML.replace(*replace))
    with pytest.raises(ModelFileError, match=problem) as info:
        load_model(path)
    assert info.value.key == key


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("symsm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "symsm.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_cli_derive_and_fit_follow_the_domain(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(TOML)
    out = _cli("derive", str(path), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["domain"] == "nonnegative" and data["weight"] == "t**2/(t**2 + 1)"
    x, mu = sp.symbols("x mu", real=True)
    s = sp.Symbol("sigma", positive=True)
    h, dh = x**2 / (1 + x**2), sp.diff(x**2 / (1 + x**2), x)
    want = h * (-1 / s**2) + h * (x - mu) ** 2 / (2 * s**4) - dh * (x - mu) / s**2  # written out by hand
    from symsm.model.parse import parse_formula

    got = parse_formula(data["objective"], {"x": x, "mu": mu, "sigma": s})
    assert sp.simplify(got - want) == 0
    X = truncated_normal_sample(MU, SIGMA, 30, 2)
    X[4, 0] = -0.25
    np.save(tmp_path / "X.npy", X)
    out = _cli("fit", str(path), "--data", str(tmp_path / "X.npy"))
    assert out.returncode == 1 and "row 4, column 0 (x): -0.25" in out.stderr, out.stderr


# ------------------------------------------------------------------------------------------- CUDA without a GPU


@pytest.mark.slow
def test_weighted_cuda_kernels_compile_to_ptx():
    require_module("numba_cuda")
    from symsm.runtime.device import simulator_enabled

    if simulator_enabled():
        pytest.skip("PTX needs numba-cuda's real compiler (NUMBA_ENABLE_CUDASIM is set)")
    for dtype in (np.float64, np.float32):
        loss = nonnegative_ggm("one_minus_exp").model.compile(backend="cuda", dtype=dtype)
        ptx = loss.ptx(cc=(8, 0))
        assert sorted(ptx) == sorted(("value_and_grad", "value", "per_sample", "score"))
        for kernel, text in ptx.items():
            assert ".target sm_80" in text and ".entry" in text and f"{kernel}_kernel" in text, kernel
