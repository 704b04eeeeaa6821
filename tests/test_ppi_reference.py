"""The independent PPI reference (tests/ppi_reference.py) against published numbers and finite differences.

Published numbers: tests/data/microbiome/published.json, parsed from scorematchingad's test snapshots (the
values of Scealy & Wood 2023, Tables 3 and 4, and the Windham-robust fits of Scealy et al. 2024). Each value is
compared at every digit it was published with: the reference, rounded the way the snapshot was rounded
(signif(x, 8), round(x, 8) or signif(x, 6)), must lie within half a unit of the last published digit.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from ppi_reference import (
    A_from_theta,
    alr_quadratic_parts,
    fit_ppi_sqrt,
    microbiome_tcap,
    quadratic_parts,
    upper_pairs,
    windham_ppi_alr,
)

DATA = Path(__file__).parent / "data" / "microbiome"
OUTLIERS = (2079, 2280)  # IndividualID of the two outliers Scealy & Wood removed


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads((DATA / "published.json").read_text())


@pytest.fixture(scope="module")
def counts() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with open(DATA / "helminth_2008_counts.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    table = np.array(rows[1:], dtype=float)
    return table[:, 0].astype(int), table[:, 1:], rows[0][1:]


def _half_unit_signif(v: float, digits: int) -> float:
    """Half a unit in the last place of v written with `digits` significant digits."""
    return 0.5 * 10.0 ** (math.floor(math.log10(abs(v))) - digits + 1)


def assert_signif(ref, pub, digits: int) -> None:
    """Each reference value rounds to the published value at `digits` significant digits."""
    ref, pub = np.ravel(ref), np.ravel(pub)
    assert ref.shape == pub.shape
    for i, (r, v) in enumerate(zip(ref, pub, strict=True)):
        if v == 0:
            assert r == 0, (i, r)
            continue
        tol = _half_unit_signif(v, digits) * (1 + 1e-9)
        assert abs(r - v) <= tol, f"entry {i}: reference {r!r} vs published {v!r} ({digits} significant digits)"


def assert_decimals(ref, pub, decimals: int) -> None:
    ref, pub = np.ravel(ref), np.ravel(pub)
    assert ref.shape == pub.shape
    tol = 0.5 * 10.0**-decimals * (1 + 1e-9)
    bad = np.abs(ref - pub) > tol
    assert not bad.any(), f"entries {np.flatnonzero(bad)}: {ref[bad]} vs {pub[bad]} ({decimals} decimals)"


def _upper_colmajor(A: np.ndarray) -> np.ndarray:
    """R's A[upper.tri(A, diag = TRUE)]."""
    return np.array([A[i, j] for j in range(A.shape[0]) for i in range(j + 1)])


@pytest.fixture(scope="module")
def tcap_clean(counts) -> np.ndarray:
    ids, c, cols = counts
    u = microbiome_tcap(c[~np.isin(ids, OUTLIERS)], cols)
    assert u.shape == (92, 5)
    return u


def test_table4_bL_fitted(tcap_clean, published):
    pub = published["table4_bL_fitted"]
    fit = fit_ppi_sqrt(tcap_clean, np.array(pub["beta_fixed"]), pub["acut"], include_bL=True, bdryw="minsq")
    assert list(fit.names) == pub["param_order"]
    assert_signif(fit.theta, pub["estimate"], 8)
    assert_signif(fit.se, pub["se"], 8)
    assert_signif(fit.theta / fit.se, pub["estimate_over_se"], 8)
    assert_signif(_upper_colmajor(A_from_theta(fit.theta, 5)), pub["AL_upper_tri_colmajor"], 8)
    assert_signif(fit.theta[10:], pub["bL"], 8)
    # W's scale and layout: its largest entry (column-major, 1-based index as R's which.max) and mean
    assert_decimals(fit.W.max(), pub["W_max"], 8)
    assert_signif(fit.W.mean(), pub["W_mean"], 8)
    assert int(np.argmax(fit.W.T.ravel())) + 1 == pub["W_argmax_colmajor_1based"]


def test_table3_bL_zero(tcap_clean, published):
    pub = published["table3_bL_zero"]
    beta = np.array(pub["beta_fixed"])
    fit = fit_ppi_sqrt(tcap_clean, beta, pub["acut"], include_bL=False, bdryw="minsq")
    assert list(fit.names) == pub["param_order"]
    assert_signif(fit.theta, pub["estimate"], 8)
    assert_signif(_upper_colmajor(A_from_theta(fit.theta, 5)), pub["AL_upper_tri_colmajor"], 8)
    assert_decimals(fit.theta / fit.se, pub["estimate_over_se"], 8)
    # the published W of this fit is the full one, b_L rows included
    full = fit_ppi_sqrt(tcap_clean, beta, pub["acut"], include_bL=True)
    np.testing.assert_array_equal(full.W[:10, :10], fit.W)
    assert_signif(full.W.mean(), pub["W_mean"], 8)


def test_b_zero_fit_is_the_constrained_minimum(tcap_clean, published):
    """Fixing b_L = 0 is minimising the b-including quadratic over the A block only."""
    beta = np.array(published["table3_bL_zero"]["beta_fixed"])
    full = fit_ppi_sqrt(tcap_clean, beta, 0.01, include_bL=True)
    sub = np.linalg.solve(full.W[:10, :10], full.d[:10])
    np.testing.assert_allclose(fit_ppi_sqrt(tcap_clean, beta, 0.01, include_bL=False).theta, sub, rtol=1e-12)


def _cW(value: float, parts: tuple[bool, ...]) -> np.ndarray:
    """scorematchingad's ppi_cW: `value` on A_L entries whose two components are both flagged, else 0."""
    q = len(parts) - 1
    on = np.array(parts[:q])
    M = value * np.outer(on, on)
    return np.concatenate([np.diag(M), [M[i, j] for i, j in upper_pairs(q)], value * on, np.zeros(q + 1)])


def test_windham_tcap(counts, published):
    pub = published["windham_TCAP"]
    _, c, cols = counts
    u = microbiome_tcap(c, cols)  # all 94 rows: robustness replaces removing the outliers
    # the start is R's upper triangle by column; paramvec order is the diagonal, then the upper triangle
    A_start = np.zeros((4, 4))
    k = 0
    for j in range(4):
        for i in range(j + 1):
            A_start[i, j] = A_start[j, i] = pub["start"]["AL_upper_tri_colmajor"][k]
            k += 1
    start = np.concatenate(
        [np.diag(A_start), [A_start[i, j] for i, j in upper_pairs(4)], pub["start"]["bL"], pub["start"]["beta"]]
    )
    est, iters = windham_ppi_alr(u, _cW(pub["cW"], (True, True, False, False, False)), start, beta_p=0.0)
    assert iters < 10_000
    assert_signif(A_from_theta(est[:10], 5).T.ravel(), pub["AL_colmajor_4x4"], 6)
    assert_signif(est[14:], pub["beta"], 6)


def test_windham_svctp_after_50_iterations(counts, published):
    """The published SVCTP fit stopped at FixedPoint's MaxIter = 50, before convergence: 50 steps reproduce it."""
    pub = published["windham_SVCTP"]
    _, c, cols = counts
    prop = c / c.sum(axis=1, keepdims=True)
    col = {name: i for i, name in enumerate(cols)}
    parts = [prop[:, col[n]] for n in ("Spirochaetes", "Verrucomicrobia", "Cyanobacteria/Chloroplast", "TM7")]
    pool = np.zeros(len(prop))
    for x in parts:  # 1 - (((x1 + x2) + x3) + x4), the helper's order
        pool = pool + x
    u = np.stack([*parts, 1 - pool], axis=1)
    start = np.concatenate([np.full(10, pub["start"]["AL_all_entries"]), pub["start"]["bL"], pub["start"]["beta"]])
    est, iters = windham_ppi_alr(u, _cW(pub["cW"], (True, True, True, True, False)), start, 0.0, max_iter=50)
    assert iters == 50
    assert_signif(A_from_theta(est[:10], 5).T.ravel(), pub["AL_colmajor_4x4"], 6)
    assert_signif(est[14:], pub["beta"], 6)


# ----------------------------------------------------------------------------------------------------------
# The closed forms against finite differences of the log-density (no published numbers involved)
# ----------------------------------------------------------------------------------------------------------


def _loglik_sphere(z: np.ndarray, theta: np.ndarray, beta: np.ndarray, include_bL: bool) -> float:
    p = z.size
    u = z * z
    A = A_from_theta(theta, p)
    val = u[:-1] @ A @ u[:-1] + np.sum((1 + 2 * beta) * np.log(z))
    if include_bL:
        val += theta[-(p - 1) :] @ u[:-1]
    return float(val)


def _h2(z: np.ndarray, acut: float, bdryw: str) -> float:
    return float(min(np.min(z * z) if bdryw == "minsq" else np.prod(z * z), acut**2))


def _psi_fd(z, theta, beta, acut, bdryw, include_bL, eps=1e-4) -> float:
    """h²(½|P∇ℓ|² + Δ_S ℓ) + (P∇h²)ᵀ(P∇ℓ), every derivative a central difference in R^p."""
    p = z.size
    E = np.eye(p) * eps
    f = lambda x: _loglik_sphere(x, theta, beta, include_bL)  # noqa: E731
    g = np.array([(f(z + E[i]) - f(z - E[i])) / (2 * eps) for i in range(p)])
    H = np.array(
        [
            [
                (f(z + E[i] + E[j]) - f(z + E[i] - E[j]) - f(z - E[i] + E[j]) + f(z - E[i] - E[j])) / (4 * eps**2)
                for j in range(p)
            ]
            for i in range(p)
        ]
    )
    P = np.eye(p) - np.outer(z, z)
    lap_S = np.trace(H) - z @ H @ z - (p - 1) * (z @ g)
    gh = np.array([(_h2(z + E[i], acut, bdryw) - _h2(z - E[i], acut, bdryw)) / (2 * eps) for i in range(p)])
    h2 = _h2(z, acut, bdryw)
    Pg = P @ g
    return h2 * (0.5 * Pg @ Pg + lap_S) + (P @ gh) @ Pg


@pytest.mark.parametrize("bdryw", ["minsq", "prodsq"])
@pytest.mark.parametrize("include_bL", [True, False])
def test_sqrt_quadratic_form_matches_finite_differences(bdryw, include_bL):
    """ψ(θ₁) - ψ(θ₂) from W and d equals the difference of the directly differentiated objective."""
    rng = np.random.default_rng(3)
    p = 4
    beta = np.array([-0.3, 0.2, -0.6, 0.1])
    m = (p - 1) + (p - 1) * (p - 2) // 2 + ((p - 1) if include_bL else 0)
    # a large a_c puts the points on the weight's boundary branch (h² = min z² or ∏z²), a tiny one on the flat one
    for acut, active in ((0.9, True), (0.9, True), (1e-3, False)):
        u = rng.dirichlet(np.ones(p) * 2)
        z = np.sqrt(u)
        assert (_h2(z, acut, bdryw) < acut**2) == active
        W, d = quadratic_parts(u[None], beta, acut, include_bL, bdryw)
        t1, t2 = rng.normal(size=m), rng.normal(size=m)

        def q(t, W=W, d=d):
            return 0.5 * t @ W[0] @ t - d[0] @ t

        fd = _psi_fd(z, t1, beta, acut, bdryw, include_bL) - _psi_fd(z, t2, beta, acut, bdryw, include_bL)
        np.testing.assert_allclose(q(t1) - q(t2), fd, rtol=1e-5, atol=1e-7)


def _alr_psi_fd(u: np.ndarray, paramvec: np.ndarray, eps=1e-4) -> float:
    """½|∇_y ℓ|² + Δ_y ℓ for log f_Y(y) = log f_U(u(y)) + Σ log u_i, by central differences in y."""
    p = u.size
    q = p - 1
    y0 = np.log(u[:q] / u[-1])
    A = A_from_theta(paramvec[:6], p)
    beta = paramvec[9:]

    def ell(y):
        e = np.exp(np.append(y, 0.0))
        v = e / e.sum()
        return v[:q] @ A @ v[:q] + np.sum((beta + 1) * np.log(v))

    E = np.eye(q) * eps
    g = np.array([(ell(y0 + E[i]) - ell(y0 - E[i])) / (2 * eps) for i in range(q)])
    lap = sum((ell(y0 + E[i]) - 2 * ell(y0) + ell(y0 - E[i])) / eps**2 for i in range(q))
    return 0.5 * g @ g + lap


def test_alr_quadratic_form_matches_finite_differences():
    """ψ(θ₁) - ψ(θ₂) from the alr W and d equals the difference of the directly differentiated objective."""
    rng = np.random.default_rng(5)
    beta_p = -0.2
    for u in rng.dirichlet([3.0, 2.0, 4.0, 5.0], size=3):
        W, d = alr_quadratic_parts(u[None], beta_p)
        pvs = []
        for _ in range(2):
            free = rng.normal(size=9)  # A_L (6 entries), then α_1..α_3 = β + 1
            pvs.append((free, np.concatenate([free[:6], np.zeros(3), free[6:] - 1, [beta_p]])))

        def q(t, W=W, d=d):
            return 0.5 * t @ W[0] @ t - d[0] @ t

        fd = _alr_psi_fd(u, pvs[0][1]) - _alr_psi_fd(u, pvs[1][1])
        np.testing.assert_allclose(q(pvs[0][0]) - q(pvs[1][0]), fd, rtol=1e-5, atol=1e-7)
