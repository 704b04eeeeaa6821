"""Models shared by the tests, each with an independent numpy reference.

The references are derived by hand (score and ∂ᵢ² log f written out), never from symsm's derivation,
so comparing against them checks the derivation and the generated code together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

import symsm


@dataclass
class Case:
    name: str
    model: symsm.Model
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, X) -> (N, d)
    hessian_diag: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, X) -> (N, d)
    theta: np.ndarray
    X: np.ndarray

    def integrand(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        s = self.score(theta, X)
        return np.sum(self.hessian_diag(theta, X) + 0.5 * s * s, axis=1)

    def objective(self, theta: np.ndarray, X: np.ndarray) -> float:
        return float(np.mean(self.integrand(theta, X)))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def gaussian_full(d: int = 3) -> Case:
    """-½ (x-μ)ᵀ M (x-μ) with a symmetric precision matrix M."""
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    mu = sp.Matrix(sp.symbols(f"mu0:{d}", real=True))
    M = symsm.symmetric("M", d)
    log_f = -((x - mu).T * M * (x - mu))[0, 0] / 2
    model = symsm.Model(log_f, list(x), {"mu": mu, "M": M}, name=f"gaussian_full_{d}")

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = model.unpack(theta)
        return np.ravel(p["mu"]), p["M"]

    def score(theta, X):
        m, Mv = unpack(theta)
        return -(X - m) @ Mv  # M symmetric

    def hess(theta, X):
        _, Mv = unpack(theta)
        return np.broadcast_to(-np.diag(Mv), X.shape)

    rng = _rng(1)
    A = rng.standard_normal((d, d))
    theta = model.pack({"mu": rng.standard_normal(d), "M": A @ A.T + d * np.eye(d)})
    return Case(model.name, model, score, hess, theta, rng.standard_normal((500, d)))


def ica_logcosh(d: int = 3) -> Case:
    """Σ_k −log cosh(w_kᵀx) with a free d×d unmixing matrix W."""
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    W = symsm.matrix("W", d, d)
    y = W * x
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), list(x), {"W": W}, name=f"ica_{d}")

    def score(theta, X):
        Wv = theta.reshape(d, d)
        return -np.tanh(X @ Wv.T) @ Wv

    def hess(theta, X):
        Wv = theta.reshape(d, d)
        g2 = 1.0 - np.tanh(X @ Wv.T) ** 2
        return -(g2 @ (Wv**2))

    rng = _rng(2)
    return Case(model.name, model, score, hess, rng.standard_normal(d * d) * 0.7, rng.standard_normal((500, d)))


def student_t(d: int = 2) -> Case:
    """Multivariate Student-t with free location m, scale s > 0 and degrees of freedom ν > 0."""
    x = sp.symbols(f"x0:{d}", real=True)
    m = sp.symbols(f"m0:{d}", real=True)
    s, nu = sp.symbols("s nu", positive=True)
    r2 = sum((x[i] - m[i]) ** 2 for i in range(d))
    log_f = -(nu + d) / 2 * sp.log(1 + r2 / (nu * s**2))
    model = symsm.Model(log_f, x, [*m, s, nu], name=f"student_t_{d}")

    def parts(theta, X):
        u = X - theta[:d]
        sv, nv = theta[d], theta[d + 1]
        D = nv * sv**2 + np.sum(u * u, axis=1, keepdims=True)
        return u, nv, D

    def score(theta, X):
        u, nv, D = parts(theta, X)
        return -(nv + d) * u / D

    def hess(theta, X):
        u, nv, D = parts(theta, X)
        return -(nv + d) * (1.0 / D - 2.0 * u * u / D**2)

    rng = _rng(3)
    theta = np.array([*rng.standard_normal(d) * 0.3, 1.3, 4.0])
    X = rng.standard_t(5, size=(500, d))
    return Case(model.name, model, score, hess, theta, X)


def gaussian_mixture() -> Case:
    """log(e^{l − |x−a|²/2} + e^{−|x−b|²/2}): a two-component mixture written as a log-sum-exp."""
    x = sp.symbols("x0:2", real=True)
    a = sp.symbols("a0:2", real=True)
    b = sp.symbols("b0:2", real=True)
    lw = sp.Symbol("l", real=True)
    da = sum((x[i] - a[i]) ** 2 for i in range(2))
    db = sum((x[i] - b[i]) ** 2 for i in range(2))
    log_f = sp.log(sp.exp(lw - da / 2) + sp.exp(-db / 2))
    model = symsm.Model(log_f, x, {"a": a, "b": b, "l": lw}, name="gaussian_mixture")

    def parts(theta, X):
        av, bv, lv = theta[0:2], theta[2:4], theta[4]
        ea = lv - 0.5 * np.sum((X - av) ** 2, axis=1)
        eb = -0.5 * np.sum((X - bv) ** 2, axis=1)
        top = np.maximum(ea, eb)
        ra = np.exp(ea - top) / (np.exp(ea - top) + np.exp(eb - top))
        ga, gb = -(X - av), -(X - bv)
        return ra[:, None], ga, gb

    def score(theta, X):
        ra, ga, gb = parts(theta, X)
        return ra * ga + (1 - ra) * gb

    def hess(theta, X):
        ra, ga, gb = parts(theta, X)
        s = ra * ga + (1 - ra) * gb
        return ra * ga**2 + (1 - ra) * gb**2 - s**2 - 1.0

    rng = _rng(4)
    theta = np.array([1.0, -0.5, -1.0, 0.8, 0.3])
    X = np.concatenate([rng.normal([1, -0.5], 1, (250, 2)), rng.normal([-1, 0.8], 1, (250, 2))])
    return Case(model.name, model, score, hess, theta, X)


def polynomial_exp_family() -> Case:
    """A 2-D exponential family: a x0 + b x1 + c x0 x1 + e x0² + g x1² − (x0⁴ + x1⁴)/4."""
    x0, x1 = sp.symbols("x0 x1", real=True)
    a, b, c, e, g = sp.symbols("a b c e g", real=True)
    log_f = a * x0 + b * x1 + c * x0 * x1 + e * x0**2 + g * x1**2 - (x0**4 + x1**4) / 4
    model = symsm.Model(log_f, [x0, x1], [a, b, c, e, g], name="poly_expfam")

    def score(theta, X):
        av, bv, cv, ev, gv = theta
        u, v = X[:, 0], X[:, 1]
        return np.stack([av + cv * v + 2 * ev * u - u**3, bv + cv * u + 2 * gv * v - v**3], axis=1)

    def hess(theta, X):
        _, _, _, ev, gv = theta
        return np.stack([2 * ev - 3 * X[:, 0] ** 2, 2 * gv - 3 * X[:, 1] ** 2], axis=1)

    rng = _rng(5)
    return Case(model.name, model, score, hess, np.array([0.3, -0.2, 0.4, -0.5, -0.25]), rng.normal(size=(500, 2)))


def gaussian_normalised() -> Case:
    """A normal density with its normalising constant −log σ − ½ log 2π, which must drop out."""
    x = sp.Symbol("x", real=True)
    mu = sp.Symbol("mu", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    log_f = -((x - mu) ** 2) / (2 * sigma**2) - sp.log(sigma) - sp.log(2 * sp.pi) / 2
    model = symsm.Model(log_f, [x], [mu, sigma], name="gaussian_normalised")

    def score(theta, X):
        return -(X - theta[0]) / theta[1] ** 2

    def hess(theta, X):
        return np.full(X.shape, -1.0 / theta[1] ** 2)

    rng = _rng(6)
    return Case(model.name, model, score, hess, np.array([0.4, 1.7]), rng.normal(0.5, 1.5, (500, 1)))


def smooth_functions() -> Case:
    """A model that uses many of the supported functions at once (sqrt, atan, sin, exp, log1p, erf)."""
    x0, x1 = sp.symbols("x0 x1", real=True)
    a, b, c = sp.symbols("a b c", real=True)
    log_f = -sp.sqrt(1 + (x0 - a) ** 2) + b * sp.atan(x1) + c * sp.sin(x0) - sp.log(1 + x1**2) + sp.erf(x0 * x1) / 3
    model = symsm.Model(log_f, [x0, x1], [a, b, c], name="smooth_functions")

    def score(theta, X):
        av, bv, cv = theta
        u, v = X[:, 0], X[:, 1]
        q = np.sqrt(1 + (u - av) ** 2)
        ge = 2 / np.sqrt(np.pi) * np.exp(-((u * v) ** 2)) / 3
        return np.stack([-(u - av) / q + cv * np.cos(u) + ge * v, bv / (1 + v**2) - 2 * v / (1 + v**2) + ge * u], 1)

    def hess(theta, X):
        av, bv, cv = theta
        u, v = X[:, 0], X[:, 1]
        q = np.sqrt(1 + (u - av) ** 2)
        ge = 2 / np.sqrt(np.pi) * np.exp(-((u * v) ** 2)) / 3
        h0 = -1 / q**3 - cv * np.sin(u) + ge * v * (-2 * u * v * v)
        h1 = -2 * bv * v / (1 + v**2) ** 2 - (2 - 2 * v**2) / (1 + v**2) ** 2 + ge * u * (-2 * u * u * v)
        return np.stack([h0, h1], 1)

    rng = _rng(7)
    return Case(model.name, model, score, hess, np.array([0.2, 0.7, -0.4]), rng.normal(size=(500, 2)))


CASES: dict[str, Callable[[], Case]] = {
    "gaussian_full": gaussian_full,
    "ica_logcosh": ica_logcosh,
    "student_t": student_t,
    "gaussian_mixture": gaussian_mixture,
    "polynomial_exp_family": polynomial_exp_family,
    "gaussian_normalised": gaussian_normalised,
    "smooth_functions": smooth_functions,
}


def central_difference_gradient(
    f: Callable[[np.ndarray], float], theta: np.ndarray, rel_step: float = 1e-6
) -> np.ndarray:
    """∂f/∂θ_k by central differences with a step scaled to each entry."""
    grad = np.empty_like(theta, dtype=float)
    for k in range(theta.size):
        h = rel_step * max(1.0, abs(theta[k]))
        e = np.zeros_like(theta, dtype=float)
        e[k] = h
        grad[k] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad
