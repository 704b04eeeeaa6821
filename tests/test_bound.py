"""`CompiledLoss.bind` (symsm/runtime/bound.py): the bound objective equals value_and_grad and value on the same rows
(to 1e-12) on every domain, with and without observation weights; its gradient agrees with central differences of
its own value; bad rows give the errors value_and_grad gives; a non-finite J̃ raises the same NonFiniteError."""

from __future__ import annotations

import numpy as np
import pytest
from test_simplex import dirichlet
from test_sphere import fisher_bingham, sphere_points

import symsm
from symsm.core.errors import NonFiniteError
from symsm.model.modelfile import load_model
from symsm.runtime.weighted import weighted_value, weighted_value_and_grad


def _simplex(n, seed, alpha=(2.0, 3.0, 4.0)):
    return np.random.default_rng(seed).dirichlet(alpha, size=n)


def _cases():
    rng = np.random.default_rng(0)
    quartic = "-s*(x**4 + y**4)/4 + m*x - t*y**2/2 + x*y*r"
    yield "real", symsm.Model.from_string(quartic, "x y", "s m t r"), rng.normal(size=(400, 2)), [0.8, 0.3, 1.2, -0.2]
    yield (
        "real, degree 2 in x (moment points)",
        symsm.Model.from_string("-(x - m)**2/(2*s) - y**2*t/2 + x*y*r", "x y", "m s t r"),
        rng.normal(size=(400, 2)),
        [0.3, 1.4, 0.9, 0.1],
    )
    yield (
        "real, log-sum-exp (stable form)",
        symsm.Model.from_string("log(exp(-(x - m)**2/2) + w*exp(-(x - n)**2/2)) - y**2*t/2", "x y", "m n w t"),
        rng.normal(size=(400, 2)) * 3,
        [-1.0, 2.0, 0.5, 0.7],
    )
    yield (
        "nonnegative",
        symsm.Model.from_string("-s*(x**2 + y**2)/2 + m*x + (r - 1)*log(y)", "x y", "s m r", domain="nonnegative"),
        rng.gamma(2.0, size=(400, 2)),
        [1.1, 0.4, 2.0],
    )
    yield (
        "box",
        symsm.Model.from_string("-s*(x**2 + y**2)/2 + m*y + r*x*y", "x y", "s m r", domain=symsm.Box(-1, 1)),
        rng.uniform(-1, 1, size=(400, 2)),
        [1.1, 0.4, -0.3],
    )
    yield "sphere", fisher_bingham("minsq"), sphere_points(400, 1), [0.7, -0.4, 1.1, 0.5, -0.3, 0.2, -0.6, 0.35]
    yield "simplex sqrt", dirichlet(transform="sqrt", weight="minsq"), _simplex(400, 2), [0.6, 1.7, 3.2]
    yield "simplex alr", dirichlet(transform="alr"), _simplex(400, 3), [0.6, 1.7, 3.2]
    ppi = load_model("ppi_5d")
    yield "simplex sqrt (PPI)", ppi, _simplex(400, 4, (2, 2, 3, 3, 4)), np.linspace(-3, 2, ppi.n_params)


CASES = list(_cases())


@pytest.mark.parametrize(("name", "model", "X", "theta"), CASES, ids=[c[0] for c in CASES])
def test_bind_equals_value_and_grad(name, model, X, theta) -> None:
    loss = model.compile()
    theta = np.asarray(theta, dtype=float)
    bound = loss.bind(X)
    assert bound.n == X.shape[0]
    v, g = loss.value_and_grad(theta, X)
    bv, bg = bound.value_and_grad(theta)
    scale = max(1.0, abs(v))
    assert abs(bv - v) <= 1e-12 * scale
    np.testing.assert_allclose(bg, g, rtol=0, atol=1e-12 * max(1.0, np.abs(g).max()))
    assert abs(bound.value(theta) - loss.value(theta, X)) <= 1e-12 * scale
    # weights: the weighted means of symsm.runtime.weighted (per-row integrand and grad_rows kernels)
    w = np.random.default_rng(7).uniform(0.0, 3.0, size=X.shape[0])
    bw = loss.bind(X, weights=w)
    v, g = weighted_value_and_grad(loss, theta, X, w)
    bv, bg = bw.value_and_grad(theta)
    assert abs(bv - v) <= 1e-12 * max(1.0, abs(v))
    np.testing.assert_allclose(bg, g, rtol=0, atol=1e-12 * max(1.0, np.abs(g).max()))
    assert abs(bw.value(theta) - weighted_value(loss, theta, X, w)) <= 1e-12 * max(1.0, abs(v))


@pytest.mark.parametrize("index", [0, 6, 8], ids=[CASES[i][0] for i in (0, 6, 8)])
def test_bound_gradient_against_central_differences(index) -> None:
    _, model, X, theta = CASES[index]
    bound = model.compile().bind(X)
    theta = np.asarray(theta, dtype=float)
    _, grad = bound.value_and_grad(theta)
    eps = 1e-6
    fd = [(bound.value(theta + eps * e) - bound.value(theta - eps * e)) / (2 * eps) for e in np.eye(len(theta))]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(grad).max()))


def test_bind_sums_the_separable_part_once() -> None:
    """The PPI on the simplex binds its θ-affine terms (repr says which route it took), and a weighted bind too."""
    _, model, X, _ = CASES[-1]
    loss = model.compile()
    assert "separable sums" in repr(loss.bind(X))
    assert "separable sums" in repr(loss.bind(X, weights=np.ones(X.shape[0])))


def test_ppi_rows_with_zeros() -> None:
    """Compositions with zero parts (the sqrt map under minsq allows them): the split keeps every term finite there,
    as the compact integrand is."""
    _, model, X, theta = CASES[-1]
    X = X.copy()
    X[5] = [0.0, 0.2, 0.3, 0.1, 0.4]
    X[9] = [0.3, 0.0, 0.0, 0.3, 0.4]
    loss = model.compile()
    v, g = loss.value_and_grad(theta, X)
    bv, bg = loss.bind(X).value_and_grad(theta)
    assert abs(bv - v) <= 1e-12 * max(1.0, abs(v))
    np.testing.assert_allclose(bg, g, rtol=0, atol=1e-12 * max(1.0, np.abs(g).max()))


def test_inseparable_model_binds_to_the_loss_kernels() -> None:
    model = symsm.Model.from_string("-exp(a*x)", "x", "a")  # integrand a²e^{2ax}/2 − a²e^{ax}: nothing affine
    loss = model.compile()
    X = np.random.default_rng(1).normal(size=(50, 1))
    bound = loss.bind(X)
    assert "separable" not in repr(bound)
    assert bound.value_and_grad([0.3]) == loss.value_and_grad([0.3], X)


def _message(fn, *args):
    with pytest.raises(ValueError) as info:
        fn(*args)
    return type(info.value), str(info.value)


@pytest.mark.parametrize(
    ("index", "bad"),
    [
        (0, np.ones((5, 3))),  # wrong number of columns
        (0, np.ones(5)),  # not 2-D
        (0, np.array([[1.0, np.nan]] * 3)),  # not finite
        (6, np.array([[0.2, 0.3, 0.6], [0.2, 0.3, 0.5]])),  # row 0 off the simplex
        (5, np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])),  # row 1 off the sphere
    ],
)
def test_bad_rows_give_the_same_errors(index, bad) -> None:
    _, model, _, theta = CASES[index]
    loss = model.compile()
    assert _message(loss.bind, bad) == _message(loss.value_and_grad, theta, bad)


@pytest.mark.parametrize("where", ["rows", "theta"])
def test_non_finite_value_gives_the_same_error(where) -> None:
    """A row where the integrand overflows (non-finite separable sums at bind time), or θ where it overflows at
    every row (finite sums, a non-finite rest): the bound call raises what value_and_grad raises."""
    _, model, X, theta = CASES[0]
    loss = model.compile()
    X, theta = X.copy(), np.asarray(theta, dtype=float)
    if where == "rows":
        X[3] = [1e80, 0.0]
    else:
        theta[0] = 1e300
    bound = loss.bind(X)
    with pytest.raises(NonFiniteError) as want:
        loss.value_and_grad(theta, X)
    with pytest.raises(NonFiniteError) as got:
        bound.value_and_grad(theta)
    assert str(got.value) == str(want.value)
    assert (got.value.rows, got.value.domain) == (want.value.rows, want.value.domain)
    assert want.value.domain == (where == "theta")


def test_bad_weights() -> None:
    _, model, X, _ = CASES[0]
    loss = model.compile()
    with pytest.raises(ValueError, match=r"weights must have shape \(400,\)"):
        loss.bind(X, weights=np.ones(3))


@pytest.mark.parametrize("weighted", [False, True])
def test_lbfgs_fit_through_bind_is_unchanged(weighted, monkeypatch) -> None:
    """symsm.fit's L-BFGS path binds the loss from BIND_MIN_ROWS rows: the same estimate, J̃ and SEs as the fit
    that calls value_and_grad (the threshold raised past N) on the PPI of the simplex."""
    import importlib

    fit_module = importlib.import_module("symsm.fitting.fit")

    model = load_model("ppi_5d")
    X = _simplex(fit_module.BIND_MIN_ROWS, 11, (2, 2, 3, 3, 4))
    w = np.random.default_rng(12).uniform(0.5, 2.0, size=X.shape[0]) if weighted else None
    loss = model.compile()
    assert fit_module._bound(loss, fit_module._fit_data(loss, X, w)).bound is not None  # the route taken
    bound = symsm.fit(loss, X, method="lbfgs", weights=w)
    monkeypatch.setattr(fit_module, "BIND_MIN_ROWS", X.shape[0] + 1)
    plain = symsm.fit(loss, X, method="lbfgs", weights=w)
    np.testing.assert_allclose(bound.theta, plain.theta, rtol=1e-7, atol=1e-9)
    assert bound.method == plain.method == "lbfgs"
    assert abs(bound.loss - plain.loss) <= 1e-10 * max(1.0, abs(plain.loss))
    np.testing.assert_allclose(bound.se, plain.se, rtol=1e-6)


def test_dask_rows_and_float32() -> None:
    """A dask array binds to the loss's own (per-chunk) call; weights with it are refused naming X. A float32 loss
    binds in float32 (the same value to float32 rounding)."""
    da = pytest.importorskip("dask.array")
    _, model, X, theta = CASES[0]
    loss = model.compile()
    Xd = da.from_array(X, chunks=100)
    bound = loss.bind(Xd)
    assert bound.n == X.shape[0]
    v, g = loss.value_and_grad(theta, X)
    bv, bg = bound.value_and_grad(theta)
    assert abs(bv - v) <= 1e-12 * max(1.0, abs(v))
    np.testing.assert_allclose(bg, g, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotImplementedError, match="not for X of type Array"):
        loss.bind(Xd, weights=np.ones(X.shape[0]))
    loss32 = model.compile(dtype=np.float32)
    v32, g32 = loss32.value_and_grad(theta, X)
    bv, bg = loss32.bind(X).value_and_grad(theta)
    assert abs(bv - v32) <= 1e-5 * max(1.0, abs(v32))
    np.testing.assert_allclose(bg, g32, rtol=1e-4, atol=1e-5 * np.abs(g32).max())


def test_randomised_objective_binds_to_its_draws() -> None:
    """An objective with per-row draws (sliced) binds to the loss's own call on the checked rows, its draws
    included, and follows `resample`."""
    _, model, X, theta = CASES[0]
    loss = model.compile(objective="sliced", seed=3)
    bound = loss.bind(X)
    assert bound.value_and_grad(theta)[0] == loss.value_and_grad(theta, X)[0]
    loss.resample(4)
    assert bound.value(theta) == loss.value(theta, X)
    v, g = loss.value_and_grad(theta, X)
    bv, bg = bound.value_and_grad(theta)
    assert bv == v
    np.testing.assert_array_equal(bg, g)


def test_randomised_objective_on_the_structured_path_binds_to_its_draws() -> None:
    """A vector model's sliced and denoising losses (block kernels, the draws as extra columns) bound once: the
    same numbers as the loss's own calls, before and after `resample`."""
    d = 8
    x, W = symsm.data_vector("x", d), symsm.param_matrix("W", d, d)
    model = symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name="ica_bind")
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, d))
    theta = (np.eye(d) + 0.1 * rng.normal(size=(d, d))).ravel()
    for objective in ("sliced", "denoising"):
        loss = model.compile(objective=objective, seed=1)
        assert loss.derivation_path == "structured"
        bound = loss.bind(X)
        assert "kernels" in repr(bound)  # the loss's kernels on rows bound once, not the loss's own calls
        for seed in (None, 2):
            if seed is not None:
                loss.resample(seed)
            v, g = loss.value_and_grad(theta, X)
            bv, bg = bound.value_and_grad(theta)
            assert abs(bv - v) <= 1e-12 * max(1.0, abs(v))
            np.testing.assert_allclose(bg, g, rtol=0, atol=1e-12 * max(1.0, np.abs(g).max()))


def test_bound_rows_do_not_follow_later_changes_to_x() -> None:
    """bind keeps its own copy of rows that share memory with X: changing X (or the weights) afterwards leaves the
    bound loss evaluating the rows it was bound to, its sums and its rows consistent."""
    _, model, X, theta = CASES[-1]
    loss = model.compile()
    X = X.copy()
    w = np.random.default_rng(9).uniform(0.5, 2.0, size=X.shape[0])
    expected, expected_w = loss.value_and_grad(theta, X), weighted_value_and_grad(loss, theta, X, w)
    bound, bound_w = loss.bind(X), loss.bind(X, weights=w)
    X[:] = X[::-1]  # still on the simplex, other rows: a stale sum would change J̃
    X[0] = X[1]
    w[:] = 1.0
    for b, (v, g) in ((bound, expected), (bound_w, expected_w)):
        bv, bg = b.value_and_grad(theta)
        assert abs(bv - v) <= 1e-12 * max(1.0, abs(v))
        np.testing.assert_allclose(bg, g, rtol=0, atol=1e-12 * max(1.0, np.abs(g).max()))


def test_penalised_fista_fit_and_path_through_bind_are_unchanged(monkeypatch) -> None:
    """The ℓ1 fits of a non-quadratic objective (FISTA: symsm.fit with a penalty, symsm.path) evaluate through
    loss.bind from BIND_MIN_ROWS rows: the same estimates as with value_and_grad on the rows (threshold raised)."""
    import importlib

    fit_module = importlib.import_module("symsm.fitting.fit")
    model = CASES[2][1]  # log-sum-exp: not quadratic in θ
    rng = np.random.default_rng(13)
    n = fit_module.BIND_MIN_ROWS
    X = np.column_stack(
        [np.where(rng.uniform(size=n) < 0.6, rng.normal(-1, 1, n), rng.normal(2, 1, n)), rng.normal(size=n)]
    )
    loss = model.compile()
    assert fit_module._bound(loss, fit_module._fit_data(loss, X)).bound is not None  # the route taken
    start = [-0.8, 1.5, 0.7, 0.9]
    penalty = symsm.L1(0.05, on=["m", "n"])
    bound_fit = symsm.fit(loss, X, penalty=penalty, theta0=start)
    bound_path = symsm.path(loss, X, penalty=symsm.L1(on=["m", "n"]), n_lambdas=4, select="ebic")
    monkeypatch.setattr(fit_module, "BIND_MIN_ROWS", n + 1)
    plain_fit = symsm.fit(loss, X, penalty=penalty, theta0=start)
    plain_path = symsm.path(loss, X, penalty=symsm.L1(on=["m", "n"]), n_lambdas=4, select="ebic")
    assert bound_fit.method == plain_fit.method == "l1_fista"
    np.testing.assert_allclose(bound_fit.theta, plain_fit.theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bound_path.lambdas, plain_path.lambdas, rtol=1e-10)
    np.testing.assert_allclose(bound_path.thetas, plain_path.thetas, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-50, 1e40])
def test_bind_float32_weights_of_any_scale(scale) -> None:
    """Weighted means do not depend on the weights' scale: float32 kernels must not see weights that underflow
    to 0 (J̃ = 0 came back) or overflow to inf (a NonFiniteDataError about X came back)."""
    _, model, X, theta = CASES[0]
    loss = model.compile(dtype="float32")
    theta = np.asarray(theta, dtype=float)
    w = np.random.default_rng(7).uniform(0.5, 3.0, size=X.shape[0])
    v, g = weighted_value_and_grad(loss, theta, X, w)
    bv, bg = loss.bind(X, weights=w * scale).value_and_grad(theta)
    assert abs(bv - v) <= 1e-5 * max(1.0, abs(v))
    np.testing.assert_allclose(bg, g, rtol=0, atol=1e-5 * max(1.0, np.abs(g).max()))
