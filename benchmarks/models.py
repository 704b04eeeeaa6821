"""The benchmark models: the symsm model, a parameter point, data, a hand-written JAX log f and, where one
exists, a closed-form numpy implementation of (J̃, ∇θJ̃).

Each baseline is written independently of symsm's derivation (JAX differentiates its own log f; the closed
forms are derived by hand below), so agreement between them checks symsm, not symsm against itself. The
parameter order of every baseline is read from `model.param_names`, never assumed.

Names on the command line: ``gauss<d>`` (full Gaussian, mean μ and symmetric precision M),
``ica<d>`` (ICA log cosh, W d×d), ``student<d>`` (independent Student-t coordinates, free locations μ_i,
fixed ν = 5), ``poly`` (2-D polynomial exponential family, 8 natural parameters).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

import symsm

__all__ = ["BenchModel", "make_model", "model_names"]

STUDENT_NU = 5
# 2-D polynomial exponential family: natural parameters t_k on these monomials (exponents of x0, x1),
# plus the fixed base term −(x0⁴ + x1⁴)/4 that keeps the density normalisable for small t.
POLY_MONOMIALS = ((1, 0), (0, 1), (2, 0), (1, 1), (0, 2), (3, 0), (0, 3), (2, 2))


@dataclass
class BenchModel:
    """One benchmark model. The factory returns `log_f(theta, X)`: log f of every row of X (n, d) as an (n,)
    array, written in jax.numpy from the flat θ (P,)."""

    name: str
    family: str
    description: str
    model: symsm.Model
    theta: np.ndarray
    make_data: Callable[[int, int], np.ndarray]  # (n, seed) -> (n, d) float64
    jax_log_f_factory: Callable[[], Callable[[Any, Any], Any]]
    # Optional: the per-row integrand with the score and ∂ᵢ² log f derived by hand (jax.numpy); JAX then only
    # differentiates in θ. This is the strongest JAX baseline (an expert writing the derivatives out).
    jax_integrand_factory: Callable[[], Callable[[Any, Any], Any]] | None = None
    closed_form: Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]] | None = None
    closed_form_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def d(self) -> int:
        return self.model.dim

    @property
    def P(self) -> int:
        return self.model.n_params


def model_names(spec: str) -> list[str]:
    """Split and check a comma-separated list of model names."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        _parse_name(n)
    return names


def _parse_name(name: str) -> tuple[str, int]:
    if name == "poly":
        return "poly", 2
    m = re.fullmatch(r"(gauss|ica|student)(\d+)", name)
    if not m or not 1 <= int(m.group(2)) <= 256:
        raise ValueError(f"unknown benchmark model {name!r}: expected gauss<d>, ica<d>, student<d> or poly")
    return m.group(1), int(m.group(2))


def make_model(name: str) -> BenchModel:
    family, d = _parse_name(name)
    return {"gauss": _gauss, "ica": _ica, "student": _student, "poly": lambda _d: _poly()}[family](d)


def _row_chunks(n: int, rows: int = 8192) -> list[tuple[int, int]]:
    """Row ranges for the closed forms: temporaries of a few hundred KiB stay in cache (whole-array numpy
    temporaries of N rows would mostly cost page faults)."""
    return [(lo, min(n, lo + rows)) for lo in range(0, n, rows)]


def _index(model: symsm.Model) -> dict[str, int]:
    return {n: k for k, n in enumerate(model.param_names)}


# ---------------------------------------------------------------------- full Gaussian


def _gauss(d: int) -> BenchModel:
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    mu = sp.Matrix(sp.symbols(f"mu0:{d}", real=True))
    M = symsm.symmetric("M", d)
    model = symsm.Model(-((x - mu).T * M * (x - mu))[0, 0] / 2, list(x), {"mu": mu, "M": M}, name=f"bench_gauss_{d}")
    idx = _index(model)
    mu_idx = np.array([idx[f"mu{i}"] for i in range(d)])
    m_idx = np.array([[idx[f"M_{min(i, j)}_{max(i, j)}"] for j in range(d)] for i in range(d)])
    iu = np.triu_indices(d)
    m_flat_idx = m_idx[iu]  # θ positions of the upper-triangle entries (i ≤ j)

    rng = np.random.default_rng(100 + d)
    A = rng.standard_normal((d, d)) / np.sqrt(d)
    cov = A @ A.T + 0.5 * np.eye(d)
    mean = rng.normal(0.0, 0.5, d)
    prec = np.linalg.inv(cov) * rng.uniform(0.8, 1.2)  # near, not at, the optimum
    theta = np.zeros(model.n_params)
    theta[mu_idx] = mean + rng.normal(0.0, 0.05, d)
    theta[m_flat_idx] = prec[iu]
    chol = np.linalg.cholesky(cov)

    def make_data(n: int, seed: int) -> np.ndarray:
        z = np.random.default_rng(seed).standard_normal((n, d))
        return mean + z @ chol.T

    def jax_log_f_factory():
        import jax.numpy as jnp

        mu_j, m_j = jnp.asarray(mu_idx), jnp.asarray(m_idx)

        def log_f(th, X):
            R = X - th[mu_j]
            return -0.5 * jnp.sum(R * (R @ th[m_j]), axis=1)

        return log_f

    def jax_integrand_factory():
        import jax.numpy as jnp

        mu_j, m_j = jnp.asarray(mu_idx), jnp.asarray(m_idx)

        def integrand(th, X):  # score −M(x−μ), ∂ᵢ² log f = −M_ii
            Mv = th[m_j]
            S = -(X - th[mu_j]) @ Mv
            return -jnp.trace(Mv) + 0.5 * jnp.sum(S * S, axis=1)

        return integrand

    def closed_form(th: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
        # log f = −½(x−μ)ᵀM(x−μ): score = −M(x−μ), ∂ᵢ² log f = −M_ii, so with C_μ = mean (x−μ)(x−μ)ᵀ
        #   J̃ = −tr M + ½ tr(M² C_μ),  ∂J̃/∂μ = −M² (x̄ − μ),  ∂J̃/∂M (as a free matrix) G = −I + ½(M C_μ + C_μ M);
        # the symmetric parametrisation uses one θ for M_ij and M_ji: ∂J̃/∂θ_(i,j) = G_ij + G_ji (i < j), G_ii.
        m, Mv = th[mu_idx], th[m_idx]
        C = np.zeros((d, d))
        ysum = np.zeros(d)
        for lo, hi in _row_chunks(X.shape[0]):
            Y = X[lo:hi] - m
            C += Y.T @ Y
            ysum += Y.sum(axis=0)
        C /= X.shape[0]
        ybar = ysum / X.shape[0]
        M2 = Mv @ Mv
        J = -np.trace(Mv) + 0.5 * np.sum(M2 * C)
        G = -np.eye(d) + 0.5 * (Mv @ C + C @ Mv)
        grad = np.zeros(model.n_params)
        grad[mu_idx] = -M2 @ ybar
        gsym = G + G.T
        gsym[np.diag_indices(d)] = np.diag(G)
        grad[m_flat_idx] = gsym[iu]
        return float(J), grad

    return BenchModel(
        name=f"gauss{d}",
        family="full Gaussian",
        description=f"−½(x−μ)ᵀM(x−μ), μ ∈ R^{d}, M symmetric {d}×{d}",
        model=model,
        theta=theta,
        make_data=make_data,
        jax_log_f_factory=jax_log_f_factory,
        jax_integrand_factory=jax_integrand_factory,
        closed_form=closed_form,
        closed_form_note="J̃ = −tr M + ½ tr(M² C_μ) from C_μ = (X−μ)ᵀ(X−μ)/N (BLAS), analytic gradient",
    )


# ---------------------------------------------------------------------- ICA log cosh


def _ica(d: int) -> BenchModel:
    x = sp.symbols(f"x0:{d}", real=True)
    W = symsm.matrix("W", d, d)
    y = W * sp.Matrix(x)
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), x, {"W": W}, name=f"bench_ica_{d}")
    idx = _index(model)
    w_idx = np.array([[idx[f"W_{i}_{j}"] for j in range(d)] for i in range(d)])

    rng = np.random.default_rng(200 + d)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    unmix = np.linalg.inv(mixing)
    theta = np.zeros(model.n_params)
    theta[w_idx] = unmix + rng.normal(0.0, 0.1, (d, d))

    def make_data(n: int, seed: int) -> np.ndarray:
        s = np.random.default_rng(seed).laplace(0.0, 1.0 / np.sqrt(2), (n, d))  # unit-variance sources
        return s @ mixing.T

    def jax_log_f_factory():
        import jax.numpy as jnp

        w_j = jnp.asarray(w_idx)

        def log_f(th, X):
            return -jnp.sum(jnp.log(jnp.cosh(X @ th[w_j].T)), axis=1)

        return log_f

    def jax_integrand_factory():
        import jax.numpy as jnp

        w_j = jnp.asarray(w_idx)

        def integrand(th, X):  # score −Wᵀ tanh(Wx), ∂ᵢ² log f = −Σ_k W_ki² (1 − tanh²(Wx)_k)
            Wm = th[w_j]
            T = jnp.tanh(X @ Wm.T)
            S = -T @ Wm
            return jnp.sum(-((1 - T * T) @ (Wm * Wm)) + 0.5 * S * S, axis=1)

        return integrand

    return BenchModel(
        name=f"ica{d}",
        family="ICA log cosh",
        description=f"−Σ_k log cosh((Wx)_k), W {d}×{d}",
        model=model,
        theta=theta,
        make_data=make_data,
        jax_log_f_factory=jax_log_f_factory,
        jax_integrand_factory=jax_integrand_factory,
    )


# ---------------------------------------------------------------------- Student-t, independent coordinates


def _student(d: int) -> BenchModel:
    nu = STUDENT_NU
    x = sp.symbols(f"x0:{d}", real=True)
    mu = sp.symbols(f"mu0:{d}", real=True)
    log_f = sum(-sp.Rational(nu + 1, 2) * sp.log(1 + (x[i] - mu[i]) ** 2 / nu) for i in range(d))
    model = symsm.Model(log_f, x, {"mu": list(mu)}, name=f"bench_student_{d}")
    idx = _index(model)
    mu_idx = np.array([idx[f"mu{i}"] for i in range(d)])

    rng = np.random.default_rng(300 + d)
    loc = rng.normal(0.0, 1.0, d)
    theta = np.zeros(model.n_params)
    theta[mu_idx] = loc + rng.normal(0.0, 0.1, d)

    def make_data(n: int, seed: int) -> np.ndarray:
        return loc + np.random.default_rng(seed).standard_t(nu, (n, d))

    def jax_log_f_factory():
        import jax.numpy as jnp

        mu_j = jnp.asarray(mu_idx)

        def log_f(th, X):
            return jnp.sum(-(nu + 1) / 2 * jnp.log1p((X - th[mu_j]) ** 2 / nu), axis=1)

        return log_f

    def jax_integrand_factory():
        import jax.numpy as jnp

        mu_j = jnp.asarray(mu_idx)

        def integrand(th, X):  # s = −(ν+1)u/(ν+u²), ∂² = −(ν+1)(ν−u²)/(ν+u²)²
            U = X - th[mu_j]
            D = nu + U * U
            S = -(nu + 1) * U / D
            return jnp.sum(-(nu + 1) * (nu - U * U) / (D * D) + 0.5 * S * S, axis=1)

        return integrand

    return BenchModel(
        name=f"student{d}",
        family="Student-t (diag.)",
        description=f"Σ_i −(ν+1)/2 log(1 + (x_i−μ_i)²/ν), ν = {nu} fixed, μ ∈ R^{d} free",
        model=model,
        theta=theta,
        make_data=make_data,
        jax_log_f_factory=jax_log_f_factory,
        jax_integrand_factory=jax_integrand_factory,
    )


# ---------------------------------------------------------------------- 2-D polynomial exponential family


def _poly() -> BenchModel:
    x0, x1 = sp.symbols("x0 x1", real=True)
    t = sp.symbols(f"t0:{len(POLY_MONOMIALS)}", real=True)
    feats = [x0**a * x1**b for a, b in POLY_MONOMIALS]
    log_f = sum(ti * f for ti, f in zip(t, feats, strict=True)) - (x0**4 + x1**4) / 4
    model = symsm.Model(log_f, [x0, x1], {"t": list(t)}, name="bench_poly_expfam")
    idx = _index(model)
    t_idx = np.array([idx[f"t{k}"] for k in range(len(POLY_MONOMIALS))])
    ea = np.array([a for a, _ in POLY_MONOMIALS], dtype=float)
    eb = np.array([b for _, b in POLY_MONOMIALS], dtype=float)

    rng = np.random.default_rng(400)
    theta = np.zeros(model.n_params)
    theta[t_idx] = rng.normal(0.0, 0.2, len(POLY_MONOMIALS))
    theta[t_idx[-1]] = -0.1  # the x0²x1² coefficient

    def make_data(n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).normal(0.0, 1.0, (n, 2))

    def jax_log_f_factory():
        import jax.numpy as jnp

        t_j = jnp.asarray(t_idx)

        def log_f(th, X):
            x0, x1 = X[:, 0], X[:, 1]
            phi = jnp.stack([x0**a * x1**b for a, b in POLY_MONOMIALS], axis=1)  # static integer powers
            return phi @ th[t_j] - (x0**4 + x1**4) / 4

        return log_f

    def jax_integrand_factory():
        import jax.numpy as jnp

        t_j = jnp.asarray(t_idx)

        def integrand(th, X):  # derivatives of the monomials written out
            x0, x1 = X[:, 0], X[:, 1]
            t = th[t_j]

            def mono(v0, v1, a, b):
                return v0 ** max(a, 0) * v1 ** max(b, 0) if a >= 0 and b >= 0 else jnp.zeros_like(v0)

            d0 = jnp.stack([a * mono(x0, x1, a - 1, b) for a, b in POLY_MONOMIALS], axis=1)
            d1 = jnp.stack([b * mono(x0, x1, a, b - 1) for a, b in POLY_MONOMIALS], axis=1)
            dd0 = jnp.stack([a * (a - 1) * mono(x0, x1, a - 2, b) for a, b in POLY_MONOMIALS], axis=1)
            dd1 = jnp.stack([b * (b - 1) * mono(x0, x1, a, b - 2) for a, b in POLY_MONOMIALS], axis=1)
            s0, s1 = d0 @ t - x0**3, d1 @ t - x1**3
            h0, h1 = dd0 @ t - 3 * x0**2, dd1 @ t - 3 * x1**2
            return h0 + h1 + 0.5 * (s0 * s0 + s1 * s1)

        return integrand

    top = int(max(3, ea.max(), eb.max()))  # x³ is needed by b
    ia, ib = ea.astype(int), eb.astype(int)

    def _powers(v: np.ndarray) -> np.ndarray:
        """Rows v⁰ … v^top (contiguous), and a zero row at index −1 for exponents derivatives take below 0."""
        rows = np.empty((top + 2, v.shape[0]))
        rows[0] = 1.0
        for k in range(1, top + 1):
            np.multiply(rows[k - 1], v, out=rows[k])
        rows[-1] = 0.0
        return rows

    def closed_form(th: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
        # score_i = Σ_k t_k ∂ᵢφ_k − x_i³ and ∂ᵢ² log f = Σ_k t_k ∂ᵢ²φ_k − 3x_i², so J̃ = ½tᵀAt + bᵀt + c with
        #   A = mean Σᵢ ∂ᵢφ ∂ᵢφᵀ,  b = mean Σᵢ (∂ᵢ²φ − x_i³ ∂ᵢφ),  c = mean Σᵢ (½x_i⁶ − 3x_i²),  ∇J̃ = At + b.
        # Feature arrays are 8 × rows (each feature contiguous), products through BLAS, over chunks of rows.
        n = X.shape[0]
        A = np.zeros((len(ea), len(ea)))
        bsum = np.zeros(len(ea))
        csum = 0.0
        for lo, hi in _row_chunks(n):
            Pa, Pb = _powers(X[lo:hi, 0]), _powers(X[lo:hi, 1])
            pa, pb = Pa[ia], Pb[ib]  # x0^a_k, x1^b_k
            d0 = ea[:, None] * Pa[np.where(ia >= 1, ia - 1, -1)] * pb  # ∂φ_k/∂x0
            d1 = eb[:, None] * pa * Pb[np.where(ib >= 1, ib - 1, -1)]
            dd0 = (ea * (ea - 1))[:, None] * Pa[np.where(ia >= 2, ia - 2, -1)] * pb
            dd1 = (eb * (eb - 1))[:, None] * pa * Pb[np.where(ib >= 2, ib - 2, -1)]
            A += d0 @ d0.T + d1 @ d1.T
            bsum += dd0.sum(1) + dd1.sum(1) - d0 @ Pa[3] - d1 @ Pb[3]
            a2, b2 = Pa[2], Pb[2]
            csum += float(np.sum(0.5 * a2**3 - 3 * a2 + 0.5 * b2**3 - 3 * b2))
        A /= n
        bvec = bsum / n
        c = csum / n
        tv = th[t_idx]
        grad = np.zeros(model.n_params)
        grad[t_idx] = A @ tv + bvec
        return float(0.5 * tv @ A @ tv + bvec @ tv + c), grad

    return BenchModel(
        name="poly",
        family="2-D polynomial exp. family",
        description="Σ_k t_k x0^a_k x1^b_k − (x0⁴+x1⁴)/4 on x0, x1, x0², x0x1, x1², x0³, x1³, x0²x1²",
        model=model,
        theta=theta,
        make_data=make_data,
        jax_log_f_factory=jax_log_f_factory,
        jax_integrand_factory=jax_integrand_factory,
        closed_form=closed_form,
        closed_form_note="quadratic form A, b, c of the monomial derivatives (N×8 feature matrices, BLAS)",
    )
