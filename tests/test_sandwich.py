"""The sandwich standard errors of `symsm.fit` against a sandwich computed independently in numpy.

The coverage tests (tests/test_hyvarinen2005.py) catch SEs off by 2×, not by 1.2×; these compare the numbers
themselves. The reference uses only the hand-written integrands of tests/models.py and tests/domain_models.py:
per-row θ-gradients of the integrand by central differences, H by central differences of their mean, V their
covariance (divisor N), cov = H⁻¹VH⁻¹/N. Also checked: the fit's H, V, the per-row gradients and the exact
Hessian kernel, and that the estimate is a stationary point of the hand-written J̃. Closed form and L-BFGS-B,
on Rᵈ and on [0, ∞)ᵈ, on both derivation paths.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from domain_models import nonnegative_ggm, truncated_normal
from models import Case, student_t

import symsm

BACKEND = "numba"  # the default CPU backend (to be renamed "llvm")
PATHS = ("sympy", "graph")


def gaussian_natural() -> Case:
    """log f = −½xᵀMx + hᵀx (quadratic in θ: the closed form)."""
    d = 2
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    M = symsm.symmetric("M", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    model = symsm.Model(-(x.T * M * x)[0, 0] / 2 + (h.T * x)[0, 0], list(x), {"M": M, "h": h}, name="sandwich_gauss")

    def unpack(theta):
        p = model.unpack(theta)
        return np.asarray(p["M"], float), np.ravel(p["h"])

    def score(theta, X):
        Mv, hv = unpack(theta)
        return hv - X @ Mv

    def hess(theta, X):
        Mv, _ = unpack(theta)
        return np.broadcast_to(-np.diag(Mv), X.shape)

    rng = np.random.default_rng(42)
    X = rng.multivariate_normal([1.0, -1.0], [[2.0, 0.5], [0.5, 1.0]], size=1500)
    return Case(model.name, model, score, hess, model.pack({"M": np.eye(d), "h": np.zeros(d)}), X)


def student_t_case() -> Case:
    case = student_t(2)
    rng = np.random.default_rng(7)
    truth = np.array([0.5, -1.0, 1.5, 5.0])
    w = rng.chisquare(truth[3], size=(1500, 1)) / truth[3]
    case.X = truth[:2] + truth[2] * rng.standard_normal((1500, 2)) / np.sqrt(w)
    case.theta = truth
    return case


CASES = {
    "gaussian_closed_form": gaussian_natural,
    "student_t_lbfgs": student_t_case,
    "ggm_nonnegative_closed_form": lambda: nonnegative_ggm("t2"),
    "truncated_normal_lbfgs": lambda: truncated_normal("t2_bounded"),
}


def per_row_gradients(case, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """∂θ of the hand-written integrand at every row (N, P), by 4th-order central differences."""
    G = np.empty((X.shape[0], theta.size))
    for k in range(theta.size):
        h = 1e-4 * max(1.0, abs(theta[k]))
        e = np.zeros(theta.size)
        e[k] = h

        def f(t):
            return case.integrand(t, X)

        G[:, k] = (8 * (f(theta + e) - f(theta - e)) - (f(theta + 2 * e) - f(theta - 2 * e))) / (12 * h)
    return G


def reference_sandwich(case, theta: np.ndarray, X: np.ndarray):
    """(H, V, cov) at θ: H by central differences of the mean per-row gradient, V with divisor N."""
    P, n = theta.size, X.shape[0]
    H = np.empty((P, P))
    for k in range(P):
        h = 1e-4 * max(1.0, abs(theta[k]))
        e = np.zeros(P)
        e[k] = h

        def g(t):
            return per_row_gradients(case, t, X).mean(axis=0)

        H[:, k] = (8 * (g(theta + e) - g(theta - e)) - (g(theta + 2 * e) - g(theta - 2 * e))) / (12 * h)
    H = (H + H.T) / 2
    G = per_row_gradients(case, theta, X)
    V = np.cov(G.T, bias=True)
    Hinv = np.linalg.inv(H)
    return H, V, Hinv @ V @ Hinv / n


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_sandwich_against_numpy(name: str, path: str) -> None:
    case = CASES[name]()
    loss = case.model.compile(backend=BACKEND, path=path)
    X = case.X
    res = symsm.fit(loss, X, case.theta)
    assert res.converged, res.message
    theta = res.theta
    # θ̂ is a stationary point of the hand-written J̃
    grad = per_row_gradients(case, theta, X).mean(axis=0)
    assert np.max(np.abs(grad)) < 1e-6 * max(1.0, np.max(np.abs(res.hessian))), grad
    H, V, cov = reference_sandwich(case, theta, X)
    np.testing.assert_allclose(loss.per_sample_grad(theta, X), per_row_gradients(case, theta, X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loss.hessian(theta, X), H, rtol=1e-5, atol=1e-7 * np.max(np.abs(H)))
    np.testing.assert_allclose(res.hessian, H, rtol=1e-5, atol=1e-7 * np.max(np.abs(H)))
    np.testing.assert_allclose(res.grad_cov, V, rtol=1e-5, atol=1e-8 * np.max(np.abs(V)))
    np.testing.assert_allclose(res.cov, cov, rtol=1e-4, atol=1e-7 * np.max(np.abs(cov)))
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(cov)), rtol=1e-4)
