"""Manifold score matching on the unit sphere (``Model(domain="sphere")``), checked against references that
share no code with symsm:

* the Laplace–Beltrami operator and the projected score: symsm's per-sample integrand for a Fisher–Bingham
  log f on S², with and without a data weight h(x), against ½h‖∇_S g‖² + hΔ_S g + ⟨∇_S h, ∇_S g⟩ computed by
  central differences in spherical coordinates (Δ_S G = G_θθ + cot θ G_θ + G_φφ / sin²θ) — the formula
  Δ_S g = Σᵢ∂ᵢ²g − xᵀ(∇²g)x − (d−1)xᵀ∇g is not used by the reference;
* the integration by parts itself: by quadrature on S², E_p[integrand] = ½E_p[h‖∇_S g − ∇_S log p‖²] −
  ½E_p[h‖∇_S log p‖²] for a density p and a model g that differ;
* vMF on S²: the estimate equals the closed-form minimiser of the manifold objective, derived here with numpy
  (k̂ = (d − 1)(I − S)⁻¹ x̄, S = mean xxᵀ), to 1e-10, and its SEs equal a sandwich computed here;
* values and θ-gradients on both derivation paths and the numba-python backend against the hand-written
  integrand and central differences; rows off the sphere refused with the first row and its norm.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.core.errors import ModelError

X_SYMS = sp.symbols("x0:3", real=True)
K = sp.symbols("k0:3", real=True)
M_ENTRIES = sp.symbols("m00 m01 m02 m11 m12", real=True)  # M symmetric with m22 = −m00 − m11 (trace zero)


def _m_matrix(m):
    m00, m01, m02, m11, m12 = m
    return np.array([[m00, m01, m02], [m01, m11, m12], [m02, m12, -m00 - m11]])


def fisher_bingham(weight=None) -> symsm.Model:
    x = sp.Matrix(X_SYMS)
    M = sp.Matrix(_m_matrix(M_ENTRIES).tolist())
    log_f = sum(k * xi for k, xi in zip(K, X_SYMS, strict=True)) + (x.T * M * x)[0, 0]
    return symsm.Model(log_f, X_SYMS, [*K, *M_ENTRIES], name="fb", domain="sphere", weight=weight)


def vmf() -> symsm.Model:
    return symsm.Model(
        sum(k * xi for k, xi in zip(K, X_SYMS, strict=True)), X_SYMS, list(K), name="vmf3", domain="sphere"
    )


def sphere_points(n: int, seed: int, mean=(2.0, 1.0, 0.5)) -> np.ndarray:
    X = np.random.default_rng(seed).normal(mean, 1.0, size=(n, 3))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


THETA = np.array([0.7, -0.4, 1.1, 0.5, -0.3, 0.2, -0.6, 0.35])


def hand_fb(theta: np.ndarray, X: np.ndarray, weight: str | None = None) -> np.ndarray:
    """Per-sample ½h‖P∇g‖² + hΔ_S g + (P∇h)ᵀ(P∇g) for g = kᵀx + xᵀMx, written by hand (∇g = k + 2Mx,
    ∇²g = 2M, Δ_S g = tr 2M − xᵀ2Mx − 2 xᵀ∇g at d = 3)."""
    k, M = theta[:3], _m_matrix(theta[3:])
    grad = k + 2 * X @ M
    a = np.einsum("ij,ij->i", X, grad)
    proj = grad - X * a[:, None]
    lap = np.trace(2 * M) - 2 * np.einsum("ij,jk,ik->i", X, M, X) - 2 * a
    if weight is None:
        return 0.5 * np.einsum("ij,ij->i", proj, proj) + lap
    h = 1 + X[:, 0] ** 2
    dh = np.zeros_like(X)
    dh[:, 0] = 2 * X[:, 0]
    return h * (0.5 * np.einsum("ij,ij->i", proj, proj) + lap) + np.einsum("ij,ij->i", dh, proj)


# ------------------------------------------------------------------ the operator, by spherical coordinates


def _spherical(t, p):
    return np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], axis=-1)


def _sphere_derivatives(fun, t, p, step=1e-4):
    """G_θ, G_φ, G_θθ, G_φφ of G(θ, φ) = fun(x(θ, φ)) by central differences."""
    G = lambda tt, pp: fun(_spherical(tt, pp))  # noqa: E731
    g0 = G(t, p)
    gt = (G(t + step, p) - G(t - step, p)) / (2 * step)
    gp = (G(t, p + step) - G(t, p - step)) / (2 * step)
    gtt = (G(t + step, p) - 2 * g0 + G(t - step, p)) / step**2
    gpp = (G(t, p + step) - 2 * g0 + G(t, p - step)) / step**2
    return gt, gp, gtt, gpp


@pytest.mark.parametrize("weight", [None, "1 + x0**2"])
def test_integrand_against_spherical_coordinates(weight) -> None:
    rng = np.random.default_rng(1)
    t, p = rng.uniform(0.3, 2.8, 40), rng.uniform(0, 2 * np.pi, 40)
    X = _spherical(t, p)
    k, M = THETA[:3], _m_matrix(THETA[3:])
    g = lambda Y: Y @ k + np.einsum("...i,ij,...j->...", Y, M, Y)  # noqa: E731
    gt, gp, gtt, gpp = _sphere_derivatives(g, t, p)
    lap = gtt + gt * np.cos(t) / np.sin(t) + gpp / np.sin(t) ** 2
    grad_sq = gt**2 + gp**2 / np.sin(t) ** 2
    if weight is None:
        expected = 0.5 * grad_sq + lap
    else:
        h = 1 + X[:, 0] ** 2
        ht, hp, _, _ = _sphere_derivatives(lambda Y: 1 + Y[..., 0] ** 2, t, p)
        expected = h * (0.5 * grad_sq + lap) + ht * gt + hp * gp / np.sin(t) ** 2
    loss = fisher_bingham(weight).compile()
    np.testing.assert_allclose(loss.per_sample(THETA, X), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loss.per_sample(THETA, X), hand_fb(THETA, X, weight), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight", [None, "1 + x0**2"])
def test_integration_by_parts_by_quadrature(weight) -> None:
    """E_p[integrand(g)] = ½E_p[h‖∇_S g − ∇_S log p‖²] − ½E_p[h‖∇_S log p‖²], p ∝ exp(g_p), on a product grid
    (Gauss–Legendre in cos θ, uniform in φ: exact for these smooth integrands to far below the tolerance)."""
    c, wc = np.polynomial.legendre.leggauss(80)
    phi = np.linspace(0, 2 * np.pi, 160, endpoint=False)
    C, PHI = np.meshgrid(c, phi, indexing="ij")
    S = np.sqrt(1 - C**2)
    X = np.stack([S * np.cos(PHI), S * np.sin(PHI), C], axis=-1).reshape(-1, 3)
    w = np.repeat(wc, phi.size) * (2 * np.pi / phi.size)
    theta_p = np.array([1.0, 0.5, -0.3, 0.4, 0.1, -0.2, 0.3, 0.0])
    kp, Mp = theta_p[:3], _m_matrix(theta_p[3:])
    dens = np.exp(X @ kp + np.einsum("ij,jk,ik->i", X, Mp, X))
    w = w * dens / np.sum(w * dens)

    def proj_grad(theta):
        grad = theta[:3] + 2 * X @ _m_matrix(theta[3:])
        return grad - X * np.einsum("ij,ij->i", X, grad)[:, None]

    h = np.ones(len(X)) if weight is None else 1 + X[:, 0] ** 2
    sp_, sg = proj_grad(theta_p), proj_grad(THETA)
    rhs = 0.5 * np.sum(w * h * np.sum((sg - sp_) ** 2, 1)) - 0.5 * np.sum(w * h * np.sum(sp_**2, 1))
    lhs = np.sum(w * fisher_bingham(weight).compile().per_sample(THETA, X))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


# ------------------------------------------------------------------ values and gradients on every path


@pytest.mark.parametrize("path,backend", [("sympy", "llvm"), ("graph", "llvm"), ("graph", "numba-python")])
def test_value_and_grad_against_numpy(path, backend) -> None:
    X = sphere_points(300, 3)
    loss = fisher_bingham().compile(backend=backend, path=path)
    J, grad = loss.value_and_grad(THETA, X)
    np.testing.assert_allclose(J, np.mean(hand_fb(THETA, X)), rtol=1e-12)
    eps = 1e-6
    fd = [(np.mean(hand_fb(THETA + eps * e, X)) - np.mean(hand_fb(THETA - eps * e, X))) / (2 * eps) for e in np.eye(8)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_closed_form_parts_against_numpy() -> None:
    """A = mean FᵀPF, b, c₀ of the Fisher–Bingham (an exponential family) against the hand-written integrand:
    it is quadratic, so A, b and c₀ are its second differences, first differences and value at θ = 0."""
    X = sphere_points(400, 4)
    A, b, c0 = fisher_bingham().compile().quadratic_form(X)
    J = lambda th: np.mean(hand_fb(th, X))  # noqa: E731
    E = np.eye(8)
    A_ref = np.array([[J(E[i] + E[j]) - J(E[i]) - J(E[j]) + J(0 * E[0]) for j in range(8)] for i in range(8)])
    b_ref = np.array([(J(E[i]) - J(-E[i])) / 2 for i in range(8)])
    np.testing.assert_allclose(A, A_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=1e-10, atol=1e-12)
    assert c0 == pytest.approx(J(0 * E[0]), abs=1e-12)


# ------------------------------------------------------------------ vMF on S²: the closed form and its SEs


@pytest.mark.parametrize("path", ["sympy", "graph"])
def test_vmf_closed_form_and_sandwich(path) -> None:
    X = sphere_points(2000, 5)
    n, d = X.shape
    # J̃(k) = mean[½(‖k‖² − (xᵀk)²) − (d − 1)xᵀk] = ½kᵀ(I − S)k − (d − 1)x̄ᵀk
    S, xbar = X.T @ X / n, X.mean(0)
    k_hat = np.linalg.solve(np.eye(d) - S, (d - 1) * xbar)
    res = symsm.fit(vmf().compile(path=path), X)
    assert res.method == "closed_form"
    np.testing.assert_allclose(res.theta, k_hat, rtol=1e-10, atol=1e-10)
    G = k_hat - X * (X @ k_hat)[:, None] - (d - 1) * X  # per-row ∂J/∂k
    H = np.eye(d) - S
    V = np.cov(G.T, bias=True)
    Hinv = np.linalg.inv(H)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(Hinv @ V @ Hinv / n)), rtol=1e-8)


# ------------------------------------------------------------------ rows off the sphere, bad arguments


def test_rows_off_the_sphere_are_refused() -> None:
    X = sphere_points(10, 6)
    X[3] *= 1.1
    X[7] *= 0.5
    loss = vmf().compile()
    with pytest.raises(ValueError, match=r"row 3, with norm 1\.1"):
        loss.value(np.zeros(3), X)
    X[3] /= 1.1
    X[3] *= 1 + 1e-12  # within the float64 tolerance
    with pytest.raises(ValueError, match="row 7"):
        loss.value(np.zeros(3), X)
    X[7] /= np.linalg.norm(X[7])
    loss.value(np.zeros(3), X)


def test_bad_arguments() -> None:
    log_f = K[0] * X_SYMS[0] + K[1] * X_SYMS[1]
    with pytest.raises(ModelError, match="transform applies to domain='simplex'"):
        symsm.Model(log_f, X_SYMS, K[:2], domain="sphere", transform="sqrt")
    with pytest.raises(ModelError, match="depend on the data only"):
        symsm.Model(log_f, X_SYMS, K[:2], domain="sphere", weight=K[0] * X_SYMS[0])
    with pytest.raises(ModelError, match="a_c must be"):
        symsm.Model(log_f, X_SYMS, K[:2], domain="sphere", weight="minsq", a_c=-1)
    with pytest.raises(ValueError, match="supports the domains"):
        vmf().compile(objective="sliced")


# ------------------------------------------------------------------ Dask: partial sums per chunk


def test_dask_chunks_equal_in_memory() -> None:
    """J̃, ∇J̃ and the fit from a chunked dask array (synchronous scheduler) equal the in-memory ones, and a row
    off the sphere in a later chunk is refused (the moment-matching shortcut is off: its points are off the
    sphere)."""
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    X = sphere_points(1000, 8)
    loss = fisher_bingham().compile()
    with dask.config.set(scheduler="synchronous"):
        Xd = da.from_array(X, chunks=250)
        J, g = loss.value_and_grad(THETA, Xd)
        J0, g0 = loss.value_and_grad(THETA, X)
        np.testing.assert_allclose(J, J0, rtol=1e-13)
        np.testing.assert_allclose(g, g0, rtol=1e-12, atol=1e-13)
        r_dask, r_mem = symsm.fit(loss, Xd), symsm.fit(loss, X)
        np.testing.assert_allclose(r_dask.theta, r_mem.theta, rtol=1e-10)
        np.testing.assert_allclose(r_dask.se, r_mem.se, rtol=1e-8)
        bad = X.copy()
        bad[600] *= 2
        with pytest.raises(ValueError, match=r"norm 2\.0"):
            loss.value(THETA, da.from_array(bad, chunks=250))
