"""Models on the non-negative orthant [0, ∞)ᵈ shared by the tests of generalized score matching, each with
hand-written numpy references (score, ∂ᵢ² log f, the weights h and h′), never taken from symsm's derivation.

The weighted integrand (Hyvärinen 2007; Yu, Drton & Shojaie 2019) is written out here independently:
    ℓ(x; θ) = Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f],   hᵢ = h(xᵢ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy as sp

import symsm


@dataclass(frozen=True)
class Weight:
    """A coordinate weight h(t): as symsm is given it, and as numpy evaluates h and h′ (derived by hand)."""

    name: str
    spec: object  # what Model(weight=...) receives (None: the default t²)
    h: Callable[[np.ndarray], np.ndarray]
    dh: Callable[[np.ndarray], np.ndarray]


WEIGHTS: dict[str, Weight] = {
    "t2": Weight("t2", None, lambda t: t**2, lambda t: 2 * t),
    "t2_bounded": Weight(
        "t2_bounded", lambda t: t**2 / (1 + t**2), lambda t: t**2 / (1 + t**2), lambda t: 2 * t / (1 + t**2) ** 2
    ),
    # given as a sympy Lambda in another variable name: the model must rename it to its own t
    "one_minus_exp": Weight(
        "one_minus_exp",
        sp.Lambda(sp.Symbol("u"), 1 - sp.exp(-sp.Symbol("u"))),
        lambda t: -np.expm1(-t),
        lambda t: np.exp(-t),
    ),
}

#: capped and kinked weights (min, max: h′ piecewise, a.e.); the data never sit exactly on a kink
CAPPED: dict[str, Weight] = {
    "min_t2": Weight("min_t2", "min(t**2, 1)", lambda t: np.minimum(t**2, 1), lambda t: np.where(t < 1, 2 * t, 0.0)),
    # genscore's min_log_pow with para = 2, para2 = 1: min(log(1 + t), 1)²
    "min_log_pow": Weight(
        "min_log_pow",
        "min(log(1 + t), 1)**2",
        lambda t: np.minimum(np.log1p(t), 1) ** 2,
        lambda t: np.where(t < np.e - 1, 2 * np.log1p(t) / (1 + t), 0.0),
    ),
    # a callable with max: t² up to 1, then 1/t
    "t2_over_max": Weight(
        "t2_over_max",
        lambda t: t**2 / sp.Max(1, t**3),
        lambda t: t**2 / np.maximum(1, t**3),
        lambda t: np.where(t < 1, 2 * t, -1 / np.maximum(t, 1) ** 2),
    ),
}


ALL_WEIGHTS = {**WEIGHTS, **CAPPED}


@dataclass
class DomainCase:
    name: str
    model: symsm.Model
    weight: Weight
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, X) -> (N, d)
    hessian_diag: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, X) -> (N, d)
    theta: np.ndarray
    X: np.ndarray
    # a box domain (None: [0, ∞)ᵈ): the bounds, ±inf for an open side
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None

    def weights(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hᵢ, dhᵢ/dxᵢ) per row and coordinate: h(xᵢ) on [0, ∞)ᵈ; on a box h(distᵢ) with distᵢ = min(xᵢ − aᵢ,
        bᵢ − xᵢ) (one-sided where a bound is infinite) and the chain rule ±h′(distᵢ); 1 and 0 where both are."""
        if self.lower is None or self.upper is None:
            return self.weight.h(X), self.weight.dh(X)
        below, above = X - self.lower, self.upper - X
        dist = np.minimum(below, above)  # inf − x = inf: a one-sided bound picks the finite side
        sign = np.where(below < above, 1.0, -1.0)
        free = np.isinf(self.lower) & np.isinf(self.upper)
        h = np.where(free, 1.0, self.weight.h(np.where(free, 0.0, dist)))
        dh = np.where(free, 0.0, sign * self.weight.dh(np.where(free, 0.0, dist)))
        return h, dh

    def integrand(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f] per row."""
        s = self.score(theta, X)
        h, dh = self.weights(X)
        return np.sum(h * self.hessian_diag(theta, X) + 0.5 * h * s * s + dh * s, axis=1)

    def objective(self, theta: np.ndarray, X: np.ndarray) -> float:
        return float(np.mean(self.integrand(theta, X)))


def truncated_normal_sample(mu: float, sigma: float, n: int, seed: int) -> np.ndarray:
    """n draws of N(mu, sigma²) restricted to (0, ∞), by rejection from the normal (seeded), shape (n, 1)."""
    rng = np.random.default_rng(seed)
    out = np.empty(0)
    while out.size < n:
        draw = rng.normal(mu, sigma, 2 * n)
        out = np.concatenate([out, draw[draw > 0]])
    return out[:n].reshape(-1, 1)


def truncated_normal(weight: str = "t2", domain: str = "nonnegative") -> DomainCase:
    """log f = −(x − μ)²/(2σ²) on [0, ∞) with σ > 0 (not an exponential family in (μ, σ))."""
    x = sp.Symbol("x", real=True)
    mu = sp.Symbol("mu", real=True)
    sigma = sp.Symbol("sigma", positive=True)
    w = ALL_WEIGHTS[weight]
    kwargs = {"weight": w.spec} if domain == "nonnegative" else {}
    model = symsm.Model(
        -((x - mu) ** 2) / (2 * sigma**2), [x], [mu, sigma], name=f"truncated_normal_{weight}", domain=domain, **kwargs
    )

    def score(theta, X):
        return -(X - theta[0]) / theta[1] ** 2

    def hess(theta, X):
        return np.full(X.shape, -1.0 / theta[1] ** 2)

    return DomainCase(model.name, model, w, score, hess, np.array([0.3, 1.4]), truncated_normal_sample(0.5, 1, 300, 3))


def ggm_sample(n: int, seed: int) -> np.ndarray:
    """n rows of a 3-D normal (correlated, positive mean) restricted to [0, ∞)³, by rejection (seeded)."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.4, -0.2], [0.4, 1.0, 0.3], [-0.2, 0.3, 1.0]])
    chol = np.linalg.cholesky(cov)
    rows = np.empty((0, 3))
    while len(rows) < n:
        draw = np.array([0.6, 0.3, 0.8]) + rng.standard_normal((2 * n, 3)) @ chol.T
        rows = np.concatenate([rows, draw[(draw >= 0).all(axis=1)]])
    return rows[:n]


def nonnegative_ggm(weight: str = "t2", cubic: bool = False) -> DomainCase:
    """A non-negative Gaussian graphical model on [0, ∞)³: log f = −½ xᵀKx + ηᵀx (K symmetric), an exponential
    family log f = θᵀF(x) + c(x) with c = 0, or c(x) = −Σⱼ xⱼ³/6 with ``cubic`` (a base measure)."""
    d = 3
    x = sp.symbols(f"x0:{d}", real=True)
    K = symsm.symmetric("K", d)
    eta = sp.symbols(f"eta0:{d}", real=True)
    xv = sp.Matrix(x)
    log_f = -(xv.T * K * xv)[0, 0] / 2 + sum(e * xi for e, xi in zip(eta, x, strict=True))
    if cubic:
        log_f -= sum(xi**3 for xi in x) / 6
    w = ALL_WEIGHTS[weight]
    name = f"nonnegative_ggm_{weight}{'_cubic' if cubic else ''}"
    model = symsm.Model(log_f, list(x), {"K": K, "eta": list(eta)}, name=name, domain="nonnegative", weight=w.spec)

    def unpack(theta):
        p = model.unpack(theta)
        return np.asarray(p["K"], dtype=float), np.ravel(p["eta"])

    def score(theta, X):
        Kv, ev = unpack(theta)
        s = ev - X @ Kv
        return s - X**2 / 2 if cubic else s

    def hess(theta, X):
        Kv, _ = unpack(theta)
        h = np.broadcast_to(-np.diag(Kv), X.shape)
        return h - X if cubic else h

    theta = model.pack({"K": [[1.2, -0.3, 0.2], [-0.3, 1.0, -0.25], [0.2, -0.25, 0.9]], "eta": [0.5, 0.2, 0.6]})
    return DomainCase(model.name, model, w, score, hess, theta, ggm_sample(400, 11))


def ggm_features(X: np.ndarray, cubic: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For log f = θᵀF(x) + c(x) with θ = (K_00, K_01, K_02, K_11, K_12, K_22, η_0, η_1, η_2), by hand:
    ∂ᵢF (N, d, P), ∂ᵢ²F (N, d, P) and ∂ᵢc (N, d)."""
    n, d = X.shape
    pairs = [(j, k) for j in range(d) for k in range(j, d)]
    P = len(pairs) + d
    dF = np.zeros((n, d, P))
    d2F = np.zeros((n, d, P))
    for col, (j, k) in enumerate(pairs):
        if j == k:  # F = −x_j²/2: ∂_j F = −x_j, ∂_j² F = −1
            dF[:, j, col] = -X[:, j]
            d2F[:, j, col] = -1.0
        else:  # F = −x_j x_k (the two symmetric entries): ∂_j F = −x_k, ∂_k F = −x_j, second derivatives 0
            dF[:, j, col] = -X[:, k]
            dF[:, k, col] = -X[:, j]
    for j in range(d):  # F = x_j
        dF[:, j, len(pairs) + j] = 1.0
    dc = -(X**2) / 2 if cubic else np.zeros_like(X)
    return dF, d2F, dc


def box_sample(
    mean: np.ndarray, cov: np.ndarray, lower: np.ndarray, upper: np.ndarray, n: int, seed: int
) -> np.ndarray:
    """n rows of N(mean, cov) restricted to the box lower ≤ x ≤ upper, by rejection (seeded)."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov)
    rows = np.empty((0, len(mean)))
    while len(rows) < n:
        draw = mean + rng.standard_normal((4 * n, len(mean))) @ chol.T
        rows = np.concatenate([rows, draw[((draw >= lower) & (draw <= upper)).all(axis=1)]])
    return rows[:n]


#: a 3-D box with a two-sided, a lower-only and an upper-only coordinate
BOX_LOWER = np.array([-1.0, 0.0, -np.inf])
BOX_UPPER = np.array([1.5, np.inf, 2.0])
BOX_MEAN = np.array([0.6, 0.3, 0.8])
BOX_COV = np.array([[1.0, 0.4, -0.2], [0.4, 1.0, 0.3], [-0.2, 0.3, 1.0]])


def box_ggm(weight: str = "t2", lower: np.ndarray = BOX_LOWER, upper: np.ndarray = BOX_UPPER) -> DomainCase:
    """A Gaussian graphical model restricted to a box: log f = −½ xᵀKx + ηᵀx (K symmetric), an exponential family;
    data by rejection from N(BOX_MEAN, BOX_COV) (the truth: K = BOX_COV⁻¹, η = K·BOX_MEAN)."""
    d = len(lower)
    x = sp.symbols(f"x0:{d}", real=True)
    K = symsm.symmetric("K", d)
    eta = sp.symbols(f"eta0:{d}", real=True)
    xv = sp.Matrix(x)
    log_f = -(xv.T * K * xv)[0, 0] / 2 + sum(e * xi for e, xi in zip(eta, x, strict=True))
    w = ALL_WEIGHTS[weight]
    box = symsm.Box(list(lower), list(upper))
    model = symsm.Model(
        log_f, list(x), {"K": K, "eta": list(eta)}, name=f"box_ggm{d}_{weight}", domain=box, weight=w.spec
    )

    def unpack(theta):
        p = model.unpack(theta)
        return np.asarray(p["K"], dtype=float), np.ravel(p["eta"])

    def score(theta, X):
        Kv, ev = unpack(theta)
        return ev - X @ Kv

    def hess(theta, X):
        Kv, _ = unpack(theta)
        return np.broadcast_to(-np.diag(Kv), X.shape)

    mean, cov = BOX_MEAN[:d], BOX_COV[:d, :d]
    K0 = np.linalg.inv(cov)
    K0 = (K0 + K0.T) / 2  # exactly symmetric
    theta = model.pack({"K": K0, "eta": K0 @ mean})
    X = box_sample(mean, cov, lower, upper, 400, 17)
    return DomainCase(model.name, model, w, score, hess, theta, X, lower=np.asarray(lower), upper=np.asarray(upper))
