"""Hyvärinen (2005), "Estimation of non-normalized statistical models by score matching", reproduced.

§3.1: for a Gaussian, score matching gives the maximum-likelihood estimate exactly — in the natural
parametrisation by the closed form, in the (μ, M) parametrisation by L-BFGS-B.
§3.2: ICA with logistic sources: the estimation error decreases with the sample size T.
And the sandwich standard errors: the truth lies within ±2 SE about 95 % of the time.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.cli.demo import demo_model


def gaussian_models(d: int) -> tuple[symsm.Model, symsm.Model]:
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    M = symsm.symmetric("M", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    mu = sp.Matrix(sp.symbols(f"mu0:{d}", real=True))
    natural = symsm.Model(-(x.T * M * x)[0, 0] / 2 + (h.T * x)[0, 0], list(x), {"M": M, "h": h}, name=f"gauss_nat_{d}")
    moments = symsm.Model(
        -((x - mu).T * M * (x - mu))[0, 0] / 2,
        list(x),
        {"mu": mu, "M": M},
        name=f"gauss_mu_M_{d}",
        init={"M": np.eye(d)},
    )
    return natural, moments


def gaussian_data(d: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(d, d)) + d * np.eye(d)
    return rng.normal(size=(n, d)) @ L.T + rng.normal(size=d) * 3


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - reference)) / np.max(np.abs(reference)))


def test_gaussian_natural_parameters_closed_form_is_the_mle():
    """§3.1: log f = −½xᵀMx + hᵀx gives M̂ = S⁻¹ (S with divisor N) and ĥ = M̂x̄, exactly."""
    d = 3
    natural, _ = gaussian_models(d)
    X = gaussian_data(d, 5000, seed=31)
    res = symsm.fit(natural, X)
    assert res.method == "closed_form" and res.converged
    S = np.cov(X.T, bias=True)
    M_mle = np.linalg.inv(S)
    assert relative_error(res.params["M"], M_mle) < 1e-8
    assert relative_error(res.params["h"].ravel(), M_mle @ X.mean(axis=0)) < 1e-8


def test_gaussian_mean_precision_parameters_lbfgs_is_the_mle():
    """§3.1 with log f = −½(x − μ)ᵀM(x − μ): not quadratic in θ (Mμ), so L-BFGS-B; μ̂ = x̄, M̂ = S⁻¹."""
    d = 3
    _, moments = gaussian_models(d)
    X = gaussian_data(d, 5000, seed=32)
    res = symsm.fit(moments, X)
    assert res.method == "lbfgs" and res.converged, res.message
    assert relative_error(res.params["mu"].ravel(), X.mean(axis=0)) < 1e-6
    assert relative_error(res.params["M"], np.linalg.inv(np.cov(X.T, bias=True))) < 1e-6


# ---------------------------------------------------------------------- §3.2 ICA

ICA_N = 4
ICA_T = (500, 1000, 2000, 4000, 8000, 16000)
ICA_SEEDS = range(5)


def ica_model(n: int = ICA_N) -> symsm.Model:
    """log f = Σ_k G(w_kᵀx) + log |det W|, G(s) = −2 log cosh(πs/(2√3)): the log-density of unit-variance
    logistic sources up to a constant. log |det W| depends on θ alone and drops out of J̃."""
    x = sp.Matrix(sp.symbols(f"x0:{n}", real=True))
    W = symsm.matrix("W", n, n)
    y = W * x
    k = sp.pi / (2 * sp.sqrt(3))
    log_f = sum(-2 * sp.log(sp.cosh(k * y[i])) for i in range(n)) + sp.log(sp.Abs(W.det()))
    model = symsm.Model(log_f, list(x), {"W": W}, name=f"ica_{n}")
    assert not model.derive().objective.has(sp.Abs)  # the θ-only term is gone from the objective
    return model


def ica_error(W: np.ndarray, A: np.ndarray) -> float:
    """Hyvärinen's error: scale each row of ŴA so its largest absolute entry is 1; sum of squares, minus n."""
    B = W @ A
    B = B / np.abs(B).max(axis=1, keepdims=True)
    return float(np.sum(B**2) - B.shape[0])


def ica_fit_error(loss: symsm.runtime.compiled.CompiledLoss, T: int, seed: int) -> tuple[float, symsm.FitResult]:
    """Logistic sources (unit variance), a random normal mixing A; the data are whitened (z = Vx, V = S^−½)
    — standard ICA preprocessing; without it J̃ is not equivariant in A and L-BFGS-B from one start
    stops in local minima — W̃ is fitted from the identity and Ŵ = W̃V."""
    rng = np.random.default_rng(seed)
    S = rng.logistic(0.0, np.sqrt(3) / np.pi, size=(T, ICA_N))
    A = rng.normal(size=(ICA_N, ICA_N))
    X = S @ A.T
    w, U = np.linalg.eigh(np.cov(X.T, bias=True))
    V = U @ np.diag(w**-0.5) @ U.T
    res = symsm.fit(loss, X @ V.T, np.eye(ICA_N).ravel(), hessian="central_differences")
    return ica_error(res.params["W"] @ V, A), res


@pytest.mark.slow
def test_ica_error_decreases_with_sample_size():
    """§3.2: the median error over 5 seeds per T decreases with T, and keeps decreasing: over the 32-fold
    range of T it falls more than 20-fold (a consistent estimator's error, a sum of squared deviations,
    falls like 1/T; an inconsistent one levels off)."""
    loss = ica_model().compile()
    medians = []
    rows = []
    for T in ICA_T:
        errors = []
        for seed in ICA_SEEDS:
            error, res = ica_fit_error(loss, T, 1000 * T + seed)
            assert res.converged, (T, seed, res.message)
            errors.append(error)
        medians.append(float(np.median(errors)))
        rows.append(f"T = {T:>5}: median error {medians[-1]:.4f}   ({', '.join(f'{e:.4f}' for e in errors)})")
    table = "\n".join(rows)
    print("\nICA (n = 4 logistic sources), Hyvärinen (2005) §3.2 error vs T:\n" + table)
    assert all(b < a for a, b in itertools.pairwise(medians)), table
    assert medians[-1] < medians[0] / 20, table


# ---------------------------------------------------------------------- standard errors


def coverage_checks(z: np.ndarray) -> None:
    """z: (replications, P) of (θ̂ − θ)/SE. Pooled coverage of ±2 SE must be near 95.4 %, and every mean z²
    near 1. SEs off by 2× give coverage ≈ 100 % or 68 % and mean z² ≈ 0.25 or 4: neither passes. SEs off by
    1.2× (e.g. H⁻¹/N for H⁻¹VH⁻¹/N) are within the noise of 300 replications; tests/test_sandwich.py compares
    the SEs of these models with a sandwich computed independently in numpy, to 1e-4."""
    covered = np.abs(z) < 2
    pooled = covered.mean()
    assert 0.925 <= pooled <= 0.98, (pooled, covered.mean(axis=0))
    assert np.all(covered.mean(axis=0) >= 0.88), covered.mean(axis=0)
    mean_z2 = (z**2).mean(axis=0)
    assert np.all((mean_z2 > 0.7) & (mean_z2 < 1.4)), mean_z2


def test_standard_errors_cover_the_truth_gaussian():
    natural, _ = gaussian_models(2)
    loss = natural.compile()
    mu, Sigma = np.array([1.0, -1.0]), np.array([[2.0, 0.5], [0.5, 1.0]])
    M = np.linalg.inv(Sigma)
    truth = natural.pack({"M": M, "h": M @ mu})
    rng = np.random.default_rng(2005)
    z = []
    for _ in range(300):
        res = symsm.fit(loss, rng.multivariate_normal(mu, Sigma, size=1000))
        z.append((res.theta - truth) / res.se)
    coverage_checks(np.array(z))


@pytest.mark.slow
def test_standard_errors_cover_the_truth_student_t():
    """The demo's bivariate Student-t (location, scale, ν all free): L-BFGS-B, exact Hessian."""
    model = demo_model()
    loss = model.compile()
    truth = np.array([0.5, -1.0, 1.5, 5.0])
    rng = np.random.default_rng(20050301)
    z = []
    for _ in range(300):
        w = rng.chisquare(truth[3], size=(2000, 1)) / truth[3]
        X = truth[:2] + truth[2] * rng.standard_normal((2000, 2)) / np.sqrt(w)
        res = symsm.fit(loss, X)
        assert res.converged and res.hessian_method == "exact", res.message
        z.append((res.theta - truth) / res.se)
    coverage_checks(np.array(z))
