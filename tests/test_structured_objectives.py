"""The randomised objectives (sliced, sliced_vr, denoising) on the structured path (block programs).

The structured path must give the scalar path's values, gradients, per-row integrands and scores (path="graph":
the objective built on the expression graph of the same model's scalar expansion) to 1e-10 with the same draws,
agree with hand-written numpy formulas, keep its gradient consistent with finite differences at a larger d, and
run with and without the block rewrites.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_structured import _gaussian, _student_t

import symsm
from symsm.backends.blocks_numpy import BlockKernel
from symsm.core.errors import ModelError
from symsm.derive.objectives import make_objective
from symsm.derive.structured import derive_structured
from symsm.ir.blocks import build_block_programs, parse_program

D = 4
OBJECTIVES = {
    "sliced": {"n_directions": 2, "directions": "gaussian"},
    "sliced_rademacher": {"n_directions": 1},
    "sliced_vr": {"n_directions": 2},
    "denoising": {"noise_scale": 0.3, "n_directions": 2},
}


def _objective(key: str) -> tuple[str, dict]:
    return key.removesuffix("_rademacher"), OBJECTIVES[key]


def _ica(d: int = D, phi: str = "logcosh", bias: bool = False) -> symsm.Model:
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    y = W @ x
    params = [W]
    if bias:
        b = symsm.param_vector("b", d)
        y = y + b
        params.append(b)
    # log cosh, or a smooth heavy-tailed source −log(1 + y²)
    log_f = symsm.sum(-2 * symsm.log(symsm.cosh(y))) if phi == "logcosh" else -symsm.sum(symsm.log(1 + y**2))
    return symsm.Model(log_f, x, params, name=f"ica_{phi}{'_bias' if bias else ''}")


MODELS = {
    "ica": _ica,
    "ica_cauchy_bias": lambda: _ica(phi="cauchy", bias=True),
    "gaussian": lambda: _gaussian(D),
    "student_t": lambda: _student_t(D),
}


def _theta(model: symsm.Model, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = rng.normal(scale=0.4, size=model.n_params)
    positive = model.positive_mask
    theta[positive] = rng.uniform(0.7, 2.0, size=int(positive.sum()))
    return theta


def _close(a, b, rtol: float = 1e-10) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * (np.abs(b).max() + 1.0))


def _paths_agree(model, X, theta, backend: str, **options):
    """Compile `model` on the structured path (`backend`) and on the scalar path (graph, llvm) with the same
    `options` and assert that J̃, ∇J̃, J̃ alone, the per-row integrand and the score agree; return both losses."""
    structured = model.compile(path="structured", backend=backend, **options)
    scalar = model.compile(path="graph", **options)
    v1, g1 = structured.value_and_grad(theta, X)
    v2, g2 = scalar.value_and_grad(theta, X)
    _close(v1, v2)
    _close(g1, g2)
    _close(structured.value(theta, X), v2)
    _close(structured.per_sample(theta, X), scalar.per_sample(theta, X))
    _close(structured.score(theta, X), scalar.score(theta, X))
    return structured, scalar


@pytest.mark.parametrize("backend", ["llvm", "numba-python"])
@pytest.mark.parametrize("key", sorted(OBJECTIVES))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_structured_objective_equals_scalar_path(name, key, backend):
    model = MODELS[name]()
    objective, options = _objective(key)
    X = np.random.default_rng(0).normal(size=(257, D))
    theta = _theta(model)
    structured, scalar = _paths_agree(model, X, theta, backend, objective=objective, seed=3, **options)
    np.testing.assert_array_equal(structured.draws(len(X)), scalar.draws(len(X)))  # the same draws on both paths
    assert structured.derivation_path == "structured" and "columns" in structured.source


def _hand_ica_sliced(theta: np.ndarray, X: np.ndarray, V: np.ndarray, vr: bool) -> np.ndarray:
    """log f = Σ −2 log cosh(Wx): vᵀs = −2 tanh(y)·(Wv), vᵀHv = −2 Σ (1 − tanh² y)(Wv)², s = −2Wᵀ tanh y."""
    d = X.shape[1]
    W = theta.reshape(d, d)
    t = np.tanh(X @ W.T)
    terms = []
    for m in range(V.shape[1] // d):
        wv = V[:, m * d : (m + 1) * d] @ W.T
        first = -2 * np.sum(t * wv, axis=1)
        second = -2 * np.sum((1 - t**2) * wv**2, axis=1)
        terms.append(second if vr else second + first**2 / 2)
    out = np.mean(terms, axis=0)
    if vr:
        out = out + np.sum((-2 * t @ W) ** 2, axis=1) / 2
    return out


def _hand_gaussian_denoising(theta: np.ndarray, X: np.ndarray, E: np.ndarray, sigma: float) -> np.ndarray:
    """s(x̃) = −P(x̃ − μ) at x̃ = x + σε; ½‖s + ε/σ‖² averaged over the draws."""
    d = X.shape[1]
    iu = np.triu_indices(d)
    P = np.zeros((d, d))
    P[iu] = theta[: len(iu[0])]
    P.T[iu] = theta[: len(iu[0])]
    mu = theta[len(iu[0]) :]
    terms = []
    for k in range(E.shape[1] // d):
        eps = E[:, k * d : (k + 1) * d]
        s = -(X + sigma * eps - mu) @ P
        terms.append(np.sum((s + eps / sigma) ** 2, axis=1) / 2)
    return np.mean(terms, axis=0)


@pytest.mark.parametrize("vr", [False, True])
def test_sliced_ica_equals_hand_written_numpy(vr):
    model = _ica()
    X = np.random.default_rng(2).normal(size=(100, D))
    theta = _theta(model)
    loss = model.compile(path="structured", objective="sliced_vr" if vr else "sliced", n_directions=3)
    V = loss.draws(len(X))
    assert V.shape == (len(X), 3 * D) and set(np.unique(V)) == {-1.0, 1.0}  # Rademacher directions
    _close(loss.per_sample(theta, X), _hand_ica_sliced(theta, X, V, vr))


def test_denoising_gaussian_equals_hand_written_numpy():
    model = _gaussian(D)
    X = np.random.default_rng(2).normal(size=(100, D))
    theta = _theta(model)
    loss = model.compile(path="structured", objective="denoising", noise_scale=0.25, n_directions=2)
    _close(loss.per_sample(theta, X), _hand_gaussian_denoising(theta, X, loss.draws(len(X)), 0.25))


@pytest.mark.parametrize("key", sorted(OBJECTIVES))
def test_block_programs_with_and_without_rewrites(key):
    """The lowered and the rewritten programs (symsm/ir/block_passes.py) give the same results on the numpy
    executor, their text round-trips, and X's auxiliary columns are declared and read only through ``columns``."""
    model = _ica(bias=True)
    objective, options = _objective(key)
    spec = make_objective(objective, **options)
    der = derive_structured(model, spec)
    X = np.random.default_rng(4).normal(size=(300, D))
    data = np.concatenate([X, spec.draw(model, len(X), 5)], axis=1)
    theta = _theta(model)
    results = []
    for rewrite in (False, True):
        programs = build_block_programs(der, model, rewrite=rewrite)
        for kernel, program in programs.items():
            assert parse_program(program.text()).text() == program.text()
            assert program.x_width == D + spec.n_directions * D, kernel
            reads = [op for op in program.block if "X" in op.ins]
            assert reads and all(op.kind == "columns" for op in reads), kernel
        vg = BlockKernel(programs["value_and_grad"].text()).run(theta, data)
        out = np.empty(len(X))
        BlockKernel(programs["per_sample"].text()).run(theta, data, per_sample=out)
        results.append((vg[0], vg[1], out))
    (v0, g0, p0), (v1, g1, p1) = results
    _close(v1, v0)
    _close(g1, g0)
    _close(p1, p0)
    _close(v0, p0.mean())


@pytest.mark.parametrize("key", ["sliced", "denoising"])
def test_float32_within_1e5(key):
    model = _ica(bias=True)
    objective, options = _objective(key)
    X = np.random.default_rng(0).normal(size=(500, D))
    theta = _theta(model)
    l64 = model.compile(path="structured", objective=objective, **options)
    l32 = model.compile(path="structured", objective=objective, dtype=np.float32, **options)
    v64, g64 = l64.value_and_grad(theta, X)
    v32, g32 = l32.value_and_grad(theta, X)
    _close(v32, v64, rtol=1e-5)
    _close(g32, g64, rtol=1e-5)


@pytest.mark.parametrize("key", ["sliced_vr", "denoising"])
def test_gradient_matches_finite_differences_at_larger_d(key):
    d = 12
    model = _ica(d, bias=True)
    objective, options = _objective(key)
    X = np.random.default_rng(6).normal(size=(400, d))
    theta = np.random.default_rng(7).normal(scale=0.3, size=model.n_params) + np.r_[np.eye(d).ravel(), np.zeros(d)]
    loss = model.compile(path="structured", objective=objective, **options)
    _, grad = loss.value_and_grad(theta, X)
    h = 1e-6
    for k in np.random.default_rng(8).choice(model.n_params, size=8, replace=False):
        e = np.zeros_like(theta)
        e[k] = h
        fd = (loss.value(theta + e, X) - loss.value(theta - e, X)) / (2 * h)
        assert abs(fd - grad[k]) <= 1e-6 * (1 + abs(grad[k])), (k, fd, grad[k])


def test_auto_takes_the_structured_path_for_randomised_objectives():
    big = _ica(8)
    for objective in ("sliced", "sliced_vr", "denoising"):
        assert big.compile(objective=objective).derivation_path == "structured"
    assert _ica(3).compile(objective="sliced").derivation_path != "structured"  # below STRUCTURED_AUTO_MIN_DIM


# ---------------------------------------------------------------------------------------------- [0, ∞)ᵈ
def _nonnegative(name: str, weight: object = None) -> symsm.Model:
    x = symsm.data_vector("x", D)
    if name == "gaussian":  # a truncated Gaussian
        P = symsm.param_symmetric("P", D)
        mu = symsm.param_vector("mu", D)
        return symsm.Model(-(x - mu).T @ P @ (x - mu) / 2, x, [P, mu], domain="nonnegative", weight=weight)
    W = symsm.param_matrix("W", D, D)
    b = symsm.param_vector("b", D)
    y = W @ x + b
    log_f = symsm.sum(-2 * symsm.log(symsm.cosh(y))) if name == "ica" else -symsm.sum(symsm.log(1 + y**2))
    return symsm.Model(log_f, x, [W, b], domain="nonnegative", weight=weight)


@pytest.mark.parametrize("backend", ["llvm", "numba-python"])
@pytest.mark.parametrize(("name", "weight"), [("ica", None), ("cauchy", "t**3 + t"), ("gaussian", None)])
def test_nonnegative_equals_scalar_path(name, weight, backend):
    model = _nonnegative(name, weight)
    X = np.abs(np.random.default_rng(0).normal(size=(257, D)))
    theta = _theta(model)
    _paths_agree(model, X, theta, backend)


def test_nonnegative_ica_equals_hand_written_numpy():
    """Σᵢ xᵢ²(∂ᵢ²ℓ + ½(∂ᵢℓ)²) + 2xᵢ∂ᵢℓ with s = −2Wᵀtanh(y) and diag ∇²ℓ = −2(1 − tanh² y) @ (W ⊙ W)."""
    model = _nonnegative("ica")
    X = np.abs(np.random.default_rng(3).normal(size=(100, D)))
    theta = _theta(model)
    W, b = theta[: D * D].reshape(D, D), theta[D * D :]
    t = np.tanh(X @ W.T + b)
    s = -2 * t @ W
    hd = -2 * (1 - t**2) @ (W * W)
    expected = np.sum(X**2 * (hd + s**2 / 2) + 2 * X * s, axis=1)
    _close(model.compile(path="structured").per_sample(theta, X), expected)
    # the Hessian diagonal is a row product with the θ-only W ⊙ W, never a d × d Hessian a row
    der = derive_structured(model)
    grads = []
    for rewrite in (False, True):
        program = build_block_programs(der, model, rewrite=rewrite)["value_and_grad"]
        theta_shapes = {n: a.shape for n, a in program.arrays.items() if a.kind == "theta"}
        assert all(a.shape[0] <= D for a in program.arrays.values() if a.kind == "row"), rewrite
        assert any(s == (D, D) for s in theta_shapes.values()), rewrite
        v, g = BlockKernel(program.text()).run(theta, X)
        _close(v, expected.mean())
        grads.append(g)
    _close(grads[1], grads[0])


def test_nonnegative_gradient_matches_finite_differences_at_larger_d():
    d = 12
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    model = symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(W @ x))), x, [W], domain="nonnegative")
    X = np.abs(np.random.default_rng(6).normal(size=(400, d)))
    theta = (np.eye(d) + np.random.default_rng(7).normal(scale=0.3, size=(d, d))).ravel()
    loss = model.compile(path="structured")
    assert model.compile().derivation_path == "structured"  # "auto" takes it from STRUCTURED_AUTO_MIN_DIM on
    _, grad = loss.value_and_grad(theta, X)
    h = 1e-6
    for k in np.random.default_rng(8).choice(model.n_params, size=8, replace=False):
        e = np.zeros_like(theta)
        e[k] = h
        fd = (loss.value(theta + e, X) - loss.value(theta - e, X)) / (2 * h)
        assert abs(fd - grad[k]) <= 1e-6 * (1 + abs(grad[k])), (k, fd, grad[k])


def test_unsupported_domains_are_named():
    x = symsm.data_vector("x", 8)
    W = symsm.param_matrix("W", 8, 8)
    log_f = symsm.sum(-symsm.log(symsm.cosh(W @ x)))
    with pytest.raises(ModelError, match=r"'sphere' and a symsm\.Box only"):
        symsm.Model(log_f, x, [W], domain="simplex")
    with pytest.raises(ValueError, match="not 'nonnegative'"):  # the randomised objectives refuse [0, ∞)ᵈ
        _nonnegative("ica").compile(path="structured", objective="sliced")


@pytest.mark.parametrize("backend", ["llvm", "numba-python"])
@pytest.mark.parametrize(
    ("lower", "upper", "weight"), [(-1.0, 2.0, None), (-1.0, 2.0, "min(t, 1)"), (-math.inf, 2.0, "t**3 + t")]
)
def test_box_and_capped_weights_equal_scalar_path(lower, upper, weight, backend):
    """Boxes with the same interval for every coordinate (distᵢ = min(xᵢ − a, b − xᵢ)) and capped weights: the
    tables' fmin and step (H(0) = ½, as the scalar kernels: a row at the box's midpoint is included)."""
    x = symsm.data_vector("x", D)
    W = symsm.param_matrix("W", D, D)
    b = symsm.param_vector("b", D)
    log_f = symsm.sum(-2 * symsm.log(symsm.cosh(W @ x + b)))
    model = symsm.Model(log_f, x, [W, b], domain=symsm.Box(lower, upper), weight=weight)
    X = np.random.default_rng(0).uniform(-1.0, 2.0, size=(257, D))
    X[0] = 0.5  # the midpoint: min's derivative takes ½ of each side
    X[1] = 1.0  # dist = min(x + 1, 2 − x) = 1: the kink of the capped weight min(t, 1)
    theta = _theta(model)
    _paths_agree(model, X, theta, backend)


@pytest.mark.parametrize("backend", ["llvm", "numba-python"])
@pytest.mark.parametrize("weight", [None, "min(t, 1)"])
def test_box_per_coordinate_equals_scalar_path(weight, backend):
    """A box with its own interval per coordinate (two-sided, one-sided, and unbounded: weight 1): the bounds are
    θ-level constant vectors of the program (``vector``; ±∞ for an open side)."""
    x = symsm.data_vector("x", D)
    W = symsm.param_matrix("W", D, D)
    b = symsm.param_vector("b", D)
    log_f = symsm.sum(-2 * symsm.log(symsm.cosh(W @ x + b)))
    box = symsm.Box([-1.0, -math.inf, 0.0, -math.inf], [2.0, math.inf, 2.0, 2.0])
    model = symsm.Model(log_f, x, [W, b], domain=box, weight=weight)
    X = np.random.default_rng(1).uniform(0.0, 2.0, size=(257, D))
    X[0] = 0.5  # the midpoint of coordinate 0's interval (no three-way tie with the cap: conventions differ there)
    theta = _theta(model)
    _paths_agree(model, X, theta, backend)
    program = build_block_programs(derive_structured(model), model)["value_and_grad"]
    assert parse_program(program.text()).text() == program.text() and "vector" in program.text()


# ---------------------------------------------------------------------------------------------- the sphere
def _sphere(name: str, d: int = D) -> symsm.Model:
    x = symsm.data_vector("x", d)
    if name == "vmf":
        mu = symsm.param_vector("mu", d)
        return symsm.Model(mu @ x, x, [mu], domain="sphere")
    if name == "bingham":
        A = symsm.param_symmetric("A", d)
        return symsm.Model(x @ A @ x, x, [A], domain="sphere")
    W = symsm.param_matrix("W", d, d)
    b = symsm.param_vector("b", d)
    return symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(W @ x + b))), x, [W, b], domain="sphere")


def _on_sphere(n: int, d: int, seed: int) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.mark.parametrize("backend", ["llvm", "numba-python"])
@pytest.mark.parametrize("name", ["vmf", "bingham", "ica"])
def test_sphere_equals_scalar_path(name, backend):
    model = _sphere(name)
    X = _on_sphere(257, D, 0)
    theta = _theta(model)
    _paths_agree(model, X, theta, backend)


def test_sphere_vmf_equals_hand_written_numpy():
    """von Mises–Fisher log f = μᵀx on S^{d−1} (Mardia, Kent & Laha 2016): ∇ℓ = μ, ∇²ℓ = 0, a = μᵀx, so the
    integrand is ½(‖μ‖² − a²) − (d − 1)a."""
    model = _sphere("vmf")
    X = _on_sphere(100, D, 3)
    mu = _theta(model)
    a = X @ mu
    expected = (mu @ mu - a**2) / 2 - (D - 1) * a
    loss = model.compile(path="structured")
    _close(loss.per_sample(mu, X), expected)
    assert not model.expanded  # the structured path never builds the scalar expansion


def test_sphere_gradient_matches_finite_differences_at_larger_d():
    d = 12
    model = _sphere("ica", d)
    X = _on_sphere(400, d, 6)
    theta = np.random.default_rng(7).normal(scale=0.3, size=model.n_params) + np.r_[np.eye(d).ravel(), np.zeros(d)]
    loss = model.compile(path="structured")
    assert model.compile().derivation_path == "structured"  # "auto" takes it from STRUCTURED_AUTO_MIN_DIM on
    assert not model.expanded
    _, grad = loss.value_and_grad(theta, X)
    h = 1e-6
    for k in np.random.default_rng(8).choice(model.n_params, size=8, replace=False):
        e = np.zeros_like(theta)
        e[k] = h
        fd = (loss.value(theta + e, X) - loss.value(theta - e, X)) / (2 * h)
        assert abs(fd - grad[k]) <= 1e-6 * (1 + abs(grad[k])), (k, fd, grad[k])


def test_sphere_weights_are_refused_by_name():
    x = symsm.data_vector("x", D)
    mu = symsm.param_vector("mu", D)
    with pytest.raises(ModelError, match="take weight 'ones' on the sphere, got 'minsq'"):
        symsm.Model(mu @ x, x, [mu], domain="sphere", weight="minsq")


@pytest.mark.parametrize("domain", ["nonnegative", "sphere"])
def test_domains_float32_within_1e5(domain):
    model = _nonnegative("ica") if domain == "nonnegative" else _sphere("ica")
    X = _on_sphere(500, D, 9)
    X = np.abs(X) if domain == "nonnegative" else X
    theta = _theta(model)
    v64, g64 = model.compile(path="structured").value_and_grad(theta, X)
    v32, g32 = model.compile(path="structured", dtype=np.float32).value_and_grad(theta, X)
    _close(v32, v64, rtol=1e-5)
    _close(g32, g64, rtol=1e-5)


@pytest.mark.parametrize("key", ["sliced", "denoising"])
def test_per_row_gradients_of_randomised_objectives(key):
    """Standard errors' per-row θ-gradients come from the structured block program with the loss's draws
    (symsm/runtime/accumulate.py), equal to the scalar path's fitting kernels, and sum to the gradient."""
    from symsm.runtime.accumulate import _row_gradients, gradient_moments, per_sample_grad
    from symsm.runtime.weighted import weighted_value_and_grad

    model = _ica(bias=True)
    objective, options = _objective(key)
    X = np.random.default_rng(5).normal(size=(200, D))
    theta = _theta(model)
    structured = model.compile(path="structured", objective=objective, **options)
    scalar = model.compile(path="graph", objective=objective, **options)
    assert _row_gradients(structured, theta) is not None  # the block route, not a scalar expansion
    G = per_sample_grad(structured, theta, X)
    _close(G, per_sample_grad(scalar, theta, X))
    _close(G.mean(axis=0), structured.value_and_grad(theta, X)[1])
    _, cov = gradient_moments(structured, theta, X)
    _close(cov, np.cov(G.T, bias=True))
    w = np.random.default_rng(6).uniform(size=len(X))  # symsm.fit(..., weights=): the rows' gradients, weighted
    _close(weighted_value_and_grad(structured, theta, X, w)[1], w @ G / w.sum())


def test_model_files_of_vector_models_take_domains(tmp_path):
    from symsm.model.modelfile import ModelFileError, load_model

    head = f'data = {{ name = "x", size = {D} }}\nparams = [{{ name = "W", shape = [{D}, {D}] }}]\n'
    path = tmp_path / "box.toml"
    path.write_text(head + 'log_f = "sum(-log(cosh(W @ x)))"\ndomain = "box"\nlower = [0, 0, -1, 0]\nupper = 2\n')
    model = load_model(path)
    assert model.domain == "box" and model.box.arrays()[0].tolist() == [0.0, 0.0, -1.0, 0.0]
    X = np.random.default_rng(0).uniform(0.0, 2.0, size=(50, D))
    theta = _theta(model)
    _close(model.compile(path="structured").value(theta, X), model.compile(path="graph").value(theta, X))
    path.write_text(head + 'log_f = "sum(-log(cosh(W @ x)))"\ndomain = "sphere"\n')
    assert load_model(path).domain == "sphere"
    path.write_text(head + 'log_f = "sum(-log(cosh(W @ x)))"\ndomain = "simplex"\n')
    with pytest.raises(ModelFileError, match="domain"):
        load_model(path)
    path.write_text(head + 'log_f = "sum(-log(cosh(W @ x)))"\nweight = "t"\n')
    with pytest.raises(ModelFileError, match="weight"):
        load_model(path)


def test_constant_row_of_a_product_of_matrices_on_llvm():
    """−‖W V x‖²/2: the gradient's lowering has an elementwise table with no input (a constant row of width d); the
    LLVM program used to infer its width from its inputs (1), so its column sums came back as one number."""
    x = symsm.data_vector("x", D)
    W, V = symsm.param_matrix("W", D, D), symsm.param_matrix("V", D, D)
    model = symsm.Model(-symsm.sum((W @ (V @ x)) ** 2) / 2, x, [W, V])
    X = np.random.default_rng(2).normal(size=(203, D))
    theta = _theta(model)
    structured = model.compile(path="structured", backend="llvm")
    scalar = model.compile(path="graph")
    v1, g1 = structured.value_and_grad(theta, X)
    v2, g2 = scalar.value_and_grad(theta, X)
    _close(v1, v2)
    _close(g1, g2)
