"""Standard errors on the structured path: per-row θ-gradients from the block program (symsm/runtime/accumulate.py,
`_BlockRowGradients`) against hand-written ICA gradients (checked by central differences of the hand-written
integrand), the fit's sandwich against one built in numpy from them, the scalar path's SEs, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from test_structured import MODELS, _theta

import symsm
from symsm.runtime import accumulate


def _ica(d: int) -> symsm.Model:
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    return symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name=f"se_ica_{d}")


def ica_integrand(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Σ_j [∂_j² log f + ½(∂_j log f)²] for log f = −Σ_k log cosh(w_kᵀx), per row: with t = tanh(Wx) the score is
    s = −Wᵀt and ∂_j² log f = −Σ_k W_kj²(1 − t_k²)."""
    d = X.shape[1]
    W = theta.reshape(d, d)
    t = np.tanh(X @ W.T)
    s = t @ W
    return -((1 - t**2) @ (W**2).sum(axis=1)) + 0.5 * (s**2).sum(axis=1)


def ica_row_gradients(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """∂/∂W_kl of `ica_integrand` per row (N, d²), by hand: with c = 1 − t², n_k = Σ_j W_kj² and s = Wᵀt,
    −2W_kl c_k + 2n_k t_k c_k x_l + t_k s_l + (Ws)_k c_k x_l."""
    d = X.shape[1]
    W = theta.reshape(d, d)
    t = np.tanh(X @ W.T)
    c = 1 - t**2
    s = t @ W
    n = (W**2).sum(axis=1)
    G = -2 * W[None] * c[:, :, None]
    G += ((2 * n * t * c + (s @ W.T) * c)[:, :, None]) * X[:, None, :]
    G += t[:, :, None] * s[:, None, :]
    return G.reshape(X.shape[0], d * d)


def _data(d: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.laplace(size=(n, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))


def test_hand_written_gradients_equal_central_differences():
    d = 3
    X = _data(d, 50, 0)
    theta = np.eye(d).ravel() + 0.2 * np.random.default_rng(1).standard_normal(d * d)
    G = ica_row_gradients(theta, X)
    for k in range(d * d):
        e = np.zeros(d * d)
        e[k] = 1e-5
        fd = (ica_integrand(theta + e, X) - ica_integrand(theta - e, X)) / 2e-5
        np.testing.assert_allclose(G[:, k], fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_block_row_gradients_equal_the_scalar_path(name):
    """Every structured test model (symmetric groups, scalars, vectors, θ-only products): per-row gradients and V."""
    model = MODELS[name]()
    X = np.random.default_rng(0).normal(size=(400, model.dim))
    theta = _theta(model)
    structured = model.compile(path="structured")
    scalar = model.compile(path="graph")
    G = scalar.per_sample_grad(theta, X)
    np.testing.assert_allclose(structured.per_sample_grad(theta, X), G, rtol=1e-10, atol=1e-12 * np.abs(G).max())
    m1, V1 = accumulate.gradient_moments(structured, theta, X)
    np.testing.assert_allclose(m1, G.mean(axis=0), rtol=1e-10, atol=1e-12 * np.abs(G).max())
    V = np.cov(G.T, bias=True)
    np.testing.assert_allclose(V1, V, rtol=1e-9, atol=1e-12 * np.abs(V).max())


def test_structured_sandwich_against_numpy_and_the_scalar_path():
    d = 6  # P = 36: above the exact Hessian kernel's limit, so H is central differences of the block gradient
    model = _ica(d)
    X = _data(d, 4000, 2)
    loss = model.compile(path="structured")
    res = symsm.fit(loss, X, np.eye(d).ravel())
    assert res.converged, res.message
    assert res.hessian_method == "central_differences"
    theta, n = res.theta, X.shape[0]
    G = ica_row_gradients(theta, X)
    assert np.abs(G.mean(axis=0)).max() < 1e-7  # θ̂ is a stationary point of the hand-written J̃
    np.testing.assert_allclose(loss.per_sample_grad(theta, X), G, rtol=1e-9, atol=1e-11 * np.abs(G).max())
    V = np.cov(G.T, bias=True)
    H = np.empty((d * d, d * d))
    for k in range(d * d):  # 4th-order central differences of the hand-written mean gradient
        e = np.zeros(d * d)
        e[k] = 1e-3

        def g(t):
            return ica_row_gradients(t, X).mean(axis=0)

        H[:, k] = (8 * (g(theta + e) - g(theta - e)) - (g(theta + 2 * e) - g(theta - 2 * e))) / 12e-3
    H = (H + H.T) / 2
    Hinv = np.linalg.inv(H)
    cov = Hinv @ V @ Hinv / n
    np.testing.assert_allclose(res.grad_cov, V, rtol=1e-9, atol=1e-12 * np.abs(V).max())
    np.testing.assert_allclose(res.hessian, H, rtol=1e-5, atol=1e-7 * np.abs(H).max())
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(cov)), rtol=1e-4)
    scalar = symsm.fit(model.compile(path="graph"), X, np.eye(d).ravel())
    assert scalar.converged, scalar.message
    np.testing.assert_allclose(res.se, scalar.se, rtol=1e-5)
    np.testing.assert_allclose(res.cov, scalar.cov, rtol=1e-4, atol=1e-6 * np.abs(scalar.cov).max())


def test_too_large_per_row_gradients_are_refused_clearly(monkeypatch):
    d = 5
    loss = _ica(d).compile(path="structured")
    X = _data(d, 100, 3)
    monkeypatch.setattr(accumulate, "ROW_GRADIENT_MAX_BYTES", 8 * 3 * (d * d) ** 2 - 1)
    with pytest.raises(ValueError, match=r"P = 25 parameters, Q = \d+ accumulator entries.*ROW_GRADIENT_MAX_BYTES"):
        accumulate.gradient_moments(loss, np.eye(d).ravel(), X)
    with pytest.raises(ValueError, match="ROW_GRADIENT_MAX_BYTES"):
        loss.per_sample_grad(np.eye(d).ravel(), X)
    with pytest.raises(ValueError, match="per-row gradients on the structured path need"):
        symsm.fit(loss, X, np.eye(d).ravel(), hessian="central_differences", options={"maxiter": 3})


def test_weighted_structured_equals_repeated_rows_and_the_scalar_path():
    """Integer weights: the same J̃, ∇J̃ and V as repeating the rows; and the scalar path's weighted results."""
    from symsm.runtime.weighted import weighted_gradient_moments, weighted_value_and_grad

    d = 4
    model = _ica(d)
    X = _data(d, 300, 4)
    w = np.random.default_rng(5).integers(0, 4, size=X.shape[0]).astype(float)
    theta = np.eye(d).ravel() + 0.2 * np.random.default_rng(6).standard_normal(d * d)
    loss = model.compile(path="structured")
    repeated = np.repeat(X, w.astype(int), axis=0)
    value, grad = weighted_value_and_grad(loss, theta, X, w)
    v0, g0 = loss.value_and_grad(theta, repeated)
    np.testing.assert_allclose(value, v0, rtol=1e-12)
    np.testing.assert_allclose(grad, g0, rtol=1e-10, atol=1e-12 * np.abs(g0).max())
    G = ica_row_gradients(theta, repeated)
    mean, V = weighted_gradient_moments(loss, theta, X, w)
    np.testing.assert_allclose(mean, G.mean(axis=0), rtol=1e-10, atol=1e-12 * np.abs(G).max())
    np.testing.assert_allclose(V, np.cov(G.T, bias=True), rtol=1e-9, atol=1e-12 * np.abs(V).max())
    scalar = model.compile(path="graph")
    np.testing.assert_allclose(weighted_gradient_moments(scalar, theta, X, w)[1], V, rtol=1e-9, atol=1e-12)
    res = symsm.fit(loss, X, np.eye(d).ravel(), weights=w)
    ref = symsm.fit(loss, repeated, np.eye(d).ravel())
    assert res.converged and ref.converged, (res.message, ref.message)
    np.testing.assert_allclose(res.se, ref.se, rtol=1e-5)
