"""The fitting kernels and their chunked host-side accumulations (symsm/runtime/accumulate.py,
symsm/ir/fit_kernels.py), against the hand-written numpy references of tests/models.py."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from models import CASES

import symsm
from symsm.ir import fit_kernels as fitting
from symsm.runtime import accumulate


@pytest.fixture(params=sorted(CASES))
def compiled(request, compiled_cases):
    return compiled_cases[request.param]


def _per_row_gradient_reference(case, theta, X, rel_step=1e-6):
    """∂θ_k of the hand-written integrand at every row, by central differences."""
    out = np.empty((X.shape[0], theta.size))
    for k in range(theta.size):
        h = rel_step * max(1.0, abs(theta[k]))
        e = np.zeros_like(theta)
        e[k] = h
        out[:, k] = (case.integrand(theta + e, X) - case.integrand(theta - e, X)) / (2 * h)
    return out


def _hessian_reference(case, theta, X, rel_step=1e-4):
    """The mean θ-Hessian of the hand-written objective, by central differences of central differences."""
    P = theta.size
    H = np.empty((P, P))
    for k in range(P):
        h = rel_step * max(1.0, abs(theta[k]))
        e = np.zeros(P)
        e[k] = h
        up = _per_row_gradient_reference(case, theta + e, X, rel_step).mean(axis=0)
        down = _per_row_gradient_reference(case, theta - e, X, rel_step).mean(axis=0)
        H[:, k] = (up - down) / (2 * h)
    return (H + H.T) / 2


def test_per_sample_grad_matches_reference(compiled):
    case, loss = compiled
    G = loss.per_sample_grad(case.theta, case.X)
    assert G.shape == (case.X.shape[0], case.model.n_params)
    ref = _per_row_gradient_reference(case, case.theta, case.X)
    np.testing.assert_allclose(G, ref, rtol=1e-6, atol=1e-7 * (np.abs(ref).max() + 1))


def test_exact_hessian_matches_reference(compiled):
    case, loss = compiled
    H = loss.hessian(case.theta, case.X)
    ref = _hessian_reference(case, case.theta, case.X)
    assert np.array_equal(H, H.T)
    np.testing.assert_allclose(H, ref, rtol=1e-5, atol=1e-6 * (np.abs(ref).max() + 1))


def test_central_difference_hessian_agrees_with_exact(compiled):
    case, loss = compiled
    exact = loss.hessian(case.theta, case.X)
    approx = accumulate.central_difference_hessian(loss, case.theta, case.X)
    np.testing.assert_allclose(approx, exact, rtol=1e-6, atol=1e-7 * np.abs(exact).max())


def test_gradient_moments_in_small_chunks_equal_numpy(compiled, monkeypatch):
    case, loss = compiled
    X = np.tile(case.X, (3, 1))
    G = _per_row_gradient_reference(case, case.theta, X)
    monkeypatch.setattr(accumulate, "CHUNK_BYTES", 8 * 7 * 64)  # 64 rows of 7 values: many chunks
    monkeypatch.setattr(accumulate, "MIN_CHUNK_ROWS", 1)
    mean, V = accumulate.gradient_moments(loss, case.theta, X)
    scale = np.abs(G).max() + 1
    np.testing.assert_allclose(mean, G.mean(axis=0), rtol=1e-6, atol=1e-7 * scale)
    np.testing.assert_allclose(V, np.cov(G.T, bias=True).reshape(V.shape), rtol=1e-5, atol=1e-7 * scale**2)


def test_chunks_bound_the_block_of_per_row_outputs(compiled, monkeypatch):
    """Never an N × P matrix for the whole data: every kernel call sees at most CHUNK_BYTES of outputs."""
    case, loss = compiled
    monkeypatch.setattr(accumulate, "CHUNK_BYTES", 8 * 1024)
    monkeypatch.setattr(accumulate, "MIN_CHUNK_ROWS", 16)
    X = np.tile(case.X, (4, 1))
    seen = []
    real = loss.fit_module.grad_rows

    class Spy:
        def grad_rows(self, theta, data, out):
            seen.append(out.nbytes)
            return real(theta, data, out)

    monkeypatch.setitem(loss.__dict__, "fit_module", Spy())
    accumulate.gradient_moments(loss, case.theta, X)
    P = case.model.n_params
    assert len(seen) == -(-X.shape[0] // max(16, 8 * 1024 // (8 * P)))
    assert max(seen) <= max(8 * 1024, 16 * 8 * P)


def _hand_derived_quadratic_form(X):
    """poly_expfam: score_i = a_iᵀθ + c_i with a_0 = [1, 0, x1, 2x0, 0], c_0 = −x0³ (and symmetrically)."""
    u, v = X[:, 0], X[:, 1]
    one, zero = np.ones_like(u), np.zeros_like(u)
    a0 = np.stack([one, zero, v, 2 * u, zero], axis=1)
    a1 = np.stack([zero, one, u, zero, 2 * v], axis=1)
    c0, c1 = -(u**3), -(v**3)
    da0 = np.array([0, 0, 0, 2, 0.0])  # ∂_0 a_0
    da1 = np.array([0, 0, 0, 0, 2.0])  # ∂_1 a_1
    A = (a0.T @ a0 + a1.T @ a1) / len(u)
    b = da0 + da1 + (c0 @ a0 + c1 @ a1) / len(u)
    c = np.mean(-3 * u**2 - 3 * v**2 + 0.5 * (c0**2 + c1**2))
    return A, b, c


@pytest.mark.parametrize("layout", ["sums", "rows"])
def test_quadratic_form_matches_hand_derived_numpy(layout, monkeypatch):
    case = CASES["polynomial_exp_family"]()
    if layout == "rows":  # the per-row features with BLAS, in many small chunks
        monkeypatch.setattr(fitting, "QUADRATIC_SUMS_MAX_TERMS", 0)
        monkeypatch.setattr(accumulate, "CHUNK_BYTES", 8 * 16 * 100)
        monkeypatch.setattr(accumulate, "MIN_CHUNK_ROWS", 1)
    loss = case.model.compile()
    assert hasattr(loss.fit_module, f"quadratic_{layout}")
    X = np.random.default_rng(11).normal(0.3, 1.2, size=(3001, 2))
    A, b, c = _hand_derived_quadratic_form(X)
    A2, b2, c2 = loss.quadratic_form(X)
    np.testing.assert_allclose(A2, A, rtol=1e-12)
    np.testing.assert_allclose(b2, b, rtol=1e-12)
    assert c2 == pytest.approx(c, rel=1e-12)
    assert np.array_equal(A2, A2.T)
    assert all(np.array_equal(p, q) for p, q in zip((A2, b2, c2), loss.quadratic_form(X), strict=True))
    for theta in np.random.default_rng(12).normal(size=(3, 5)):  # and it is J̃, by the hand-written integrand
        assert 0.5 * theta @ A2 @ theta + b2 @ theta + c2 == pytest.approx(case.objective(theta, X), rel=1e-11)


def test_quadratic_form_refuses_models_not_quadratic(compiled_cases):
    _, loss = compiled_cases["student_t"]
    with pytest.raises(ValueError, match="not quadratic in θ"):
        loss.quadratic_form(np.zeros((3, 2)))


def test_theta_only_integrand_compiles_every_kernel():
    """log f = θx has the θ-only integrand ½θ²: every reduction is N·(…) after the loop."""
    x = sp.Symbol("x", real=True)
    t = sp.Symbol("t", real=True)
    loss = symsm.Model(t * x, [x], [t], name="theta_only_integrand").compile()
    X = np.arange(5.0).reshape(-1, 1)
    assert loss.value(np.array([0.5]), X) == pytest.approx(0.125)
    np.testing.assert_allclose(loss.per_sample_grad(np.array([0.5]), X), 0.5)
    A, b, c = loss.quadratic_form(X)
    assert (A[0, 0], b[0], c) == (1.0, 0.0, 0.0)


def test_large_models_get_no_exact_hessian_kernel(compiled_cases, monkeypatch):
    case, loss = compiled_cases["student_t"]
    monkeypatch.setattr(fitting, "HESSIAN_MAX_PARAMS", 3)
    with pytest.raises(ValueError, match="central_difference_hessian"):
        loss.hessian(case.theta, case.X)
    with pytest.raises(ValueError, match="P ≤ 3"):
        fitting.build_hessian_kernels(loss.derivation)
