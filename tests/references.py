"""Independent references computed from log f alone, at high precision.

log f is evaluated by mpmath (50 digits) from the model's sympy expression — evaluation only, never symsm's
derivation — and every derivative is a central difference of that evaluation with a tiny step, so the
references are exact to about 1e-20: the score ∂ᵢ log f, ∂ᵢ² log f, directional derivatives along v (sliced
objectives) and the score at x + σε (denoising). Each objective's integrand is then written out from them.
"""

from __future__ import annotations

from collections.abc import Callable

import mpmath
import numpy as np
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

DPS = 50
STEP = mpmath.mpf("1e-15")


def _plain(expr: sp.Expr) -> sp.Expr:
    """log1p(a) → log(1 + a), expm1(a) → exp(a) − 1: exact at 50 digits, and printable for mpmath."""
    return expr.replace(log1p, lambda a: sp.log(1 + a)).replace(expm1, lambda a: sp.exp(a) - 1)


class LogDensity:
    """log f(x; θ) of a model evaluated in mpmath; derivatives by central differences at 50 digits."""

    def __init__(self, model) -> None:
        self.model = model
        self._f = sp.lambdify((list(model.data), list(model.params)), _plain(model.log_f), modules="mpmath")

    def __call__(self, x, theta) -> mpmath.mpf:
        with mpmath.workdps(DPS):
            return self._f(list(x), list(theta))

    def _mp(self, v) -> list:
        return [mpmath.mpf(float(a)) for a in v]

    def derivatives(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score, ∂ᵢ² log f), each (N, d) in float64."""
        n, d = X.shape
        score, second = np.empty((n, d)), np.empty((n, d))
        th = self._mp(theta)
        with mpmath.workdps(DPS):
            for t in range(n):
                x = self._mp(X[t])
                f0 = self._f(x, th)
                for i in range(d):
                    xp, xm = list(x), list(x)
                    xp[i] += STEP
                    xm[i] -= STEP
                    fp, fm = self._f(xp, th), self._f(xm, th)
                    score[t, i] = float((fp - fm) / (2 * STEP))
                    second[t, i] = float((fp - 2 * f0 + fm) / STEP**2)
        return score, second

    def along(self, theta: np.ndarray, x, v) -> tuple[float, float]:
        """(g′(0), g″(0)) of g(t) = log f(x + t v): vᵀs and vᵀHv."""
        th, x, v = self._mp(theta), self._mp(x), self._mp(v)
        with mpmath.workdps(DPS):
            g0 = self._f(x, th)
            gp = self._f([a + STEP * b for a, b in zip(x, v, strict=True)], th)
            gm = self._f([a - STEP * b for a, b in zip(x, v, strict=True)], th)
            return float((gp - gm) / (2 * STEP)), float((gp - 2 * g0 + gm) / STEP**2)

    # ------------------------------------------------------------------ integrands per row
    def exact(self, theta, X) -> np.ndarray:
        s, h2 = self.derivatives(theta, X)
        return np.sum(h2 + 0.5 * s * s, axis=1)

    def weighted(self, theta, X, h: Callable, dh: Callable) -> np.ndarray:
        s, h2 = self.derivatives(theta, X)
        return np.sum(h(X) * h2 + 0.5 * h(X) * s * s + dh(X) * s, axis=1)

    def sliced(self, theta, X, draws, m: int, variance_reduced: bool = False) -> np.ndarray:
        n, d = X.shape
        out = np.empty(n)
        s = self.derivatives(theta, X)[0] if variance_reduced else None
        for t in range(n):
            terms = []
            for k in range(m):
                first, second = self.along(theta, X[t], draws[t, k * d : (k + 1) * d])
                terms.append(second if variance_reduced else second + 0.5 * first**2)
            out[t] = np.mean(terms) + (0.5 * np.sum(s[t] ** 2) if variance_reduced else 0.0)
        return out

    def denoising(self, theta, X, draws, m: int, sigma: float) -> np.ndarray:
        n, d = X.shape
        out = np.zeros(n)
        for k in range(m):
            eps = draws[:, k * d : (k + 1) * d]
            s = self.derivatives(theta, X + sigma * eps)[0]
            out += 0.5 * np.sum((s + eps / sigma) ** 2, axis=1)
        return out / m


def fd_gradient(f: Callable[[np.ndarray], float], theta: np.ndarray, rel_step: float = 1e-6) -> np.ndarray:
    """∂f/∂θ_k by central differences (4th order: two steps), a step scaled to each entry."""
    grad = np.empty(theta.size)
    for k in range(theta.size):
        h = rel_step * max(1.0, abs(theta[k]))
        e = np.zeros(theta.size)
        e[k] = h
        grad[k] = (8 * (f(theta + e) - f(theta - e)) - (f(theta + 2 * e) - f(theta - 2 * e))) / (12 * h)
    return grad
