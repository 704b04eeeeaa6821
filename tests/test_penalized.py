"""ℓ1-penalised score matching, λ paths (eBIC, CV), observation weights, sparse quadratic forms, Windham fits.

References are built independently of symsm's derivation: A and b of Gaussian graphical models from the
hand-written features of tests/domain_models.py (`ggm_features`), and the truncated-GGM quadratic form also
from genscore's closed expressions (`get_elts_trun_gauss`: Γ_K, g_K, Γ_Kη, g_η, Γ_η) mapped to symsm's θ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from domain_models import ggm_features

import symsm
from symsm.fitting.penalized import fista, kkt_residual, penalized_mask
from symsm.runtime.sparse import sparse_quadratic_form
from symsm.runtime.weighted import weighted_value_and_grad

D = 4
K_TRUE = np.eye(D) + 0.45 * (np.eye(D, k=1) + np.eye(D, k=-1))


def _ggm(domain: str) -> symsm.Model:
    x = sp.symbols(f"x0:{D}", real=True)
    K = symsm.symmetric("K", D)
    eta = symsm.matrix("eta", D, 1)
    log_f = -sum(K[i, j] * x[i] * x[j] for i in range(D) for j in range(D)) / 2 + sum(eta[i] * x[i] for i in range(D))
    return symsm.Model(log_f, list(x), {"K": K, "eta": eta}, name=f"ggm{D}_{domain}", domain=domain)


@pytest.fixture(scope="module")
def gauss():
    model = _ggm("real")
    X = np.random.default_rng(3).multivariate_normal(np.zeros(D), np.linalg.inv(K_TRUE), size=400)
    return model.compile(), X


@pytest.fixture(scope="module")
def trunc():
    model = _ggm("nonnegative")
    rng = np.random.default_rng(4)
    chol = np.linalg.cholesky(np.linalg.inv(K_TRUE))
    rows = np.empty((0, D))
    while len(rows) < 500:
        draw = 0.5 + rng.standard_normal((2000, D)) @ chol.T
        rows = np.concatenate([rows, draw[(draw >= 0).all(axis=1)]])
    return model.compile(), rows[:500]


def _reference(X: np.ndarray, weighted: bool) -> tuple[np.ndarray, np.ndarray]:
    """A and b by hand: A = mean Σᵢ hᵢ ∂ᵢF ∂ᵢFᵀ, b = mean Σᵢ (hᵢ ∂ᵢ²F + hᵢ′ ∂ᵢF) (h = x², h′ = 2x)."""
    dF, d2F, _ = ggm_features(X)
    h = X**2 if weighted else np.ones_like(X)
    dh = 2 * X if weighted else np.zeros_like(X)
    A = np.einsum("ti,tip,tiq->pq", h, dF, dF) / len(X)
    b = (np.einsum("ti,tip->p", h, d2F) + np.einsum("ti,tip->p", dh, dF)) / len(X)
    return A, b


def _genscore_trun_gauss(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """genscore's get_elts_trun_gauss (non-centred, non-profiled; h = x², h′ = 2x), mapped to θ = (K_jk (j ≤ k),
    η): vec(K) = Dθ_K (column-major duplication), A_KK = Dᵀ blockdiag(Γ_K) D, A_Kη = Dᵀ M (M[j + kd, k] =
    Γ_Kη[j, k]), A_ηη = diag(Γ_η), b_K = −Dᵀ g_K, b_η = −g_η."""
    n, d = X.shape
    hx, hpx = X**2, 2 * X
    g_K = hpx.T @ X / n  # crossprod(hpx, x): [k, j] = mean hp_k x_j
    g_K = g_K.T.copy()  # genscore's crossprod(hpx, x) is p × p with [k, j]; vec() reads column-major → [j, k]
    Gamma_eta = hx.mean(axis=0)
    g_K[np.diag_indices(d)] += Gamma_eta
    blocks = [X.T @ (hx[:, k, None] * X) / n for k in range(d)]
    Gamma_K_eta = -X.T @ hx / n
    g_eta = -hpx.mean(axis=0)
    pairs = [(j, k) for j in range(d) for k in range(j, d)]
    Dup = np.zeros((d * d, len(pairs)))
    for c, (j, k) in enumerate(pairs):
        Dup[j + k * d, c] = 1
        Dup[k + j * d, c] = 1
    G = np.zeros((d * d, d * d))
    M = np.zeros((d * d, d))
    for k in range(d):
        G[k * d : (k + 1) * d, k * d : (k + 1) * d] = blocks[k]
        M[k * d : (k + 1) * d, k] = Gamma_K_eta[:, k]
    A = np.block([[Dup.T @ G @ Dup, Dup.T @ M], [(Dup.T @ M).T, np.diag(Gamma_eta)]])
    b = np.concatenate([-Dup.T @ g_K.ravel(order="F"), -g_eta])
    return A, b


def test_sparse_quadratic_form_matches_hand_features_and_genscore(gauss, trunc):
    for (loss, X), weighted in ((gauss, False), (trunc, True)):
        A, b, c = sparse_quadratic_form(loss, X)
        A_ref, b_ref = _reference(X, weighted)
        assert np.abs(A.toarray() - A_ref).max() <= 1e-12 * np.abs(A_ref).max()
        assert np.abs(b - b_ref).max() <= 1e-12 * max(1, np.abs(b_ref).max())
        A_dense, _b_dense, c_dense = loss.quadratic_form(X)
        assert np.abs(A.toarray() - A_dense).max() <= 1e-12 * np.abs(A_dense).max()
        assert abs(c - c_dense) <= 1e-12
    loss, X = trunc
    A, b, _ = sparse_quadratic_form(loss, X)
    A_gs, b_gs = _genscore_trun_gauss(X)
    assert np.abs(A.toarray() - A_gs).max() <= 1e-12 * np.abs(A_gs).max()
    assert np.abs(b - b_gs).max() <= 1e-12 * np.abs(b_gs).max()
    # only the blocks the score pattern allows are stored: K_jk with j, k ≠ i never meet coordinate i
    P = loss.model.n_params
    assert A.nnz < P * P


@pytest.mark.parametrize("which", ["gauss", "trunc"])
def test_block_quadratic_form_against_the_dense_reference(which, gauss, trunc):
    from symsm.runtime.sparse import block_quadratic_form

    loss, X = gauss if which == "gauss" else trunc
    A, b, _ = block_quadratic_form(loss, X)
    A_ref, b_ref = _reference(X, which == "trunc")
    scale = np.abs(A_ref).max()
    rng = np.random.default_rng(5)
    theta = rng.normal(size=A_ref.shape[0])
    theta[rng.random(theta.size) < 0.4] = 0.0  # the matrix product takes the non-zeros only
    assert np.abs(A @ theta - A_ref @ theta).max() <= 1e-12 * scale * np.abs(theta).sum()
    np.testing.assert_allclose(A @ np.eye(A.shape[0])[:, :3], A_ref[:, :3], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(A.diagonal(), np.diag(A_ref), rtol=1e-12)
    idx = np.array([0, 2, 3, 7, 9, 12])
    np.testing.assert_allclose(A.restrict(idx).toarray(), A_ref[np.ix_(idx, idx)], rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(A.toarray(), A_ref, rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(b, b_ref, rtol=0, atol=1e-12 * max(1, np.abs(b_ref).max()))
    # on ℝᵈ every block is read from the one Gram matrix of the distinct coefficients (x_1 … x_d, 1)
    if which == "gauss":
        assert A.shared and A.stored == (D + 1) ** 2 < A.nnz_blocks
    else:
        assert not A.shared and A.stored == A.nnz_blocks == D * (D + 1) ** 2


@pytest.mark.parametrize("which", ["gauss", "trunc"])
def test_path_kkt_at_every_lambda(which, gauss, trunc):
    loss, X = gauss if which == "gauss" else trunc
    res = symsm.path(loss, X, n_lambdas=30, select="ebic")
    A, b = _reference(X, which == "trunc")
    mask = res.penalized
    names = loss.model.param_names
    assert [n for n, m in zip(names, mask, strict=True) if m] == ["K_0_1", "K_0_2", "K_0_3", "K_1_2", "K_1_3", "K_2_3"]
    worst = max(kkt_residual(A @ th + b, th, lam, mask) for lam, th in zip(res.lambdas, res.thetas, strict=True))
    assert worst <= 1e-8
    assert res.df[0] == 0 and res.df[-1] > 0  # λ_max: the empty support
    # just below λ_max something enters; at λ_max exactly nothing does (λ_max is the smallest such λ)
    below = symsm.fit(loss, X, penalty=symsm.L1(res.lambdas[0] * 0.999))
    assert below.support.sum() >= 1
    assert np.all(np.diff(res.lambdas) < 0)
    assert res.kkt.max() <= 1e-8


def test_ebic_and_cv_independently(gauss):
    loss, X = gauss
    n = len(X)
    res = symsm.path(loss, X, n_lambdas=15, select="ebic", gamma=0.5)
    A, b = _reference(X, False)
    c = loss.quadratic_form(X)[2]
    gs = symsm.path(loss, X, n_lambdas=15, select="ebic", gamma=0.5, ebic_prior="binomial")
    expected, expected_fd = [], []
    for th, supp in zip(res.thetas, res.supports, strict=True):
        free = ~res.penalized | supp
        refit = np.zeros_like(th)
        refit[free] = np.linalg.solve(A[np.ix_(free, free)], -b[free])
        J = 0.5 * refit @ A @ refit + b @ refit + c
        k = int(supp.sum())
        # genscore's eBIC (R/genscore.R `eBIC`, symmetric, profiled): 2n·crit + |E|·log n + 2γ·lchoose(p(p−1)/2, |E|)
        expected.append(2 * n * J + k * math.log(n) + 2 * 0.5 * math.log(math.comb(D * (D - 1) // 2, k)))
        expected_fd.append(2 * n * J + k * math.log(n) + 4 * 0.5 * k * math.log(D))  # Foygel & Drton (2010)
    np.testing.assert_allclose(gs.ebic, expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(res.ebic, expected_fd, rtol=1e-10, atol=1e-8)
    expected = np.array(expected_fd)
    assert res.selected == int(np.flatnonzero(expected <= expected.min() + 1e-10 * abs(expected.min()))[0])
    assert sorted(res.edges) == sorted(
        ("K", i, j) for i, j in zip(*np.nonzero(np.triu(res.fit.params["K"], 1)), strict=False)
    )

    cv = symsm.path(loss, X, n_lambdas=15, select="cv", folds=4, seed=7)
    assignment = np.empty(n, dtype=np.int64)
    assignment[np.random.default_rng(7).permutation(n)] = np.arange(n) % 4
    scores = []
    for f in range(4):
        train = symsm.path(loss, X[assignment != f], lambdas=cv.lambdas, select=None, refit=False)
        A_t, b_t = _reference(X[assignment == f], False)
        c_t = loss.quadratic_form(X[assignment == f])[2]
        scores.append([0.5 * th @ A_t @ th + b_t @ th + c_t for th in train.thetas])
    np.testing.assert_allclose(cv.cv_mean, np.mean(scores, axis=0), rtol=1e-9, atol=1e-9)
    assert cv.selected == int(np.argmin(np.mean(scores, axis=0)))


def test_fista_agrees_with_coordinate_descent(gauss):
    loss, X = gauss
    lam = 0.05
    cd = symsm.fit(loss, X, penalty=symsm.L1(lam))
    mask = penalized_mask(loss.model)
    theta, _, _grad, r, _, _ = fista(
        lambda th: loss.value_and_grad(th, X), loss.model.default_theta(), lam, mask, np.full(mask.size, -np.inf)
    )
    assert r <= 1e-8
    np.testing.assert_allclose(theta, cd.theta, atol=1e-7)


def test_penalized_non_quadratic_model():
    mu, s = sp.Symbol("mu", real=True), sp.Symbol("s", positive=True)
    x = sp.symbols("x0:2", real=True)
    model = symsm.Model(-((x[0] - mu) ** 2 + (x[1] - mu) ** 2) / (2 * s**2), list(x), [mu, s], name="iso_mu_s")
    X = np.random.default_rng(0).normal(0.3, 1.2, size=(300, 2))
    res = symsm.fit(model, X, penalty=symsm.L1(0.05, on=["mu"]))
    assert res.method == "l1_fista" and res.converged and res.kkt <= 1e-8
    big = symsm.fit(model, X, penalty=symsm.L1(10.0, on=["mu"]))
    assert big.theta[0] == 0.0 and big.theta[1] > 0


def test_weights_equal_repeated_rows(gauss, trunc):
    rng = np.random.default_rng(5)
    for loss, X in (gauss, trunc):
        w = rng.integers(0, 4, size=len(X))
        rep = np.repeat(X, w, axis=0)
        A_w, b_w, c_w = sparse_quadratic_form(loss, X, w)
        A_r, b_r, c_r = loss.quadratic_form(rep)
        assert np.abs(A_w.toarray() - A_r).max() <= 1e-12 * np.abs(A_r).max()
        assert np.abs(b_w - b_r).max() <= 1e-12 and abs(c_w - c_r) <= 1e-12
        th = loss.model.default_theta() + 0.1
        v_w, g_w = weighted_value_and_grad(loss, th, X, w)
        v_r, g_r = loss.value_and_grad(th, rep)
        assert abs(v_w - v_r) <= 1e-11 * max(1, abs(v_r)) and np.abs(g_w - g_r).max() <= 1e-10
        f_w, f_r = symsm.fit(loss, X, weights=w), symsm.fit(loss, rep)
        np.testing.assert_allclose(f_w.theta, f_r.theta, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(f_w.se, f_r.se, rtol=1e-8)
        p_w = symsm.path(loss, X, weights=w, n_lambdas=10)
        p_r = symsm.path(loss, rep, n_lambdas=10)
        np.testing.assert_allclose(p_w.thetas, p_r.thetas, atol=1e-9)
        assert p_w.selected == p_r.selected


def test_weights_non_quadratic_lbfgs_matches_repeated_rows():
    mu, s = sp.Symbol("mu", real=True), sp.Symbol("s", positive=True)
    x = sp.Symbol("x", real=True)
    model = symsm.Model(-((x - mu) ** 2) / (2 * s**2) - sp.log(1 + x**2) / 10, [x], [mu, s], name="wt_nonquad")
    X = np.random.default_rng(1).normal(0.5, 1.5, size=(200, 1))
    w = np.random.default_rng(2).integers(0, 3, size=200)
    f_w = symsm.fit(model, X, weights=w)
    f_r = symsm.fit(model, np.repeat(X, w, axis=0))
    assert f_w.method == "lbfgs"
    np.testing.assert_allclose(f_w.theta, f_r.theta, rtol=1e-7)
    np.testing.assert_allclose(f_w.se, f_r.se, rtol=1e-4)


def test_windham_fixed_point_on_contaminated_data():
    a, b = sp.Symbol("a", positive=True), sp.Symbol("b", real=True)
    x = sp.Symbol("x", real=True)
    model = symsm.Model(-a * x**2 / 2 + b * x, [x], [a, b], name="gauss_natural_1d")
    rng = np.random.default_rng(0)
    clean = rng.normal(1.0, 1.0, size=950)  # a = 1, b = 1
    X = np.concatenate([clean, rng.normal(9.0, 0.3, size=50)])[:, None]
    plain = symsm.fit(model, X)
    res = symsm.fit(model, X, robust=symsm.Windham(0.5))
    assert isinstance(res, symsm.WindhamResult) and res.converged
    truth = np.array([1.0, 1.0])
    assert np.abs(res.theta - truth).max() < 0.5 * np.abs(plain.theta - truth).max()
    assert res.weights[-50:].max() < 1e-3 * res.weights[:950].mean()  # the outliers are (almost) ignored
    # the fixed point: reweighting at θ* and correcting by the tuning constants gives θ* back
    from symsm.fitting.robust import log_density, windham_weights

    w = windham_weights(log_density(model), res.theta, X, res.tuning)
    again = symsm.fit(model, X, weights=w).theta / (1 + res.tuning)
    np.testing.assert_allclose(again, res.theta, rtol=1e-9)


def test_bad_input(gauss):
    loss, X = gauss
    with pytest.raises(ValueError, match="non-negative"):
        symsm.fit(loss, X, weights=-np.ones(len(X)))
    with pytest.raises(ValueError, match="shape"):
        symsm.fit(loss, X, weights=np.ones(3))
    with pytest.raises(ValueError, match="lam must be"):
        symsm.L1(-0.1)
    with pytest.raises(ValueError, match="unknown parameter 'Q'"):
        symsm.fit(loss, X, penalty=symsm.L1(0.1, on=["Q"]))
    with pytest.raises(ValueError, match="give λ"):
        symsm.fit(loss, X, penalty=symsm.L1())
    with pytest.raises(ValueError, match="method, callback and hessian"):
        symsm.fit(loss, X, penalty=symsm.L1(0.1), method="lbfgs")
    with pytest.raises(ValueError, match="select"):
        symsm.path(loss, X, select="aic")
    with pytest.raises(ValueError, match="ebic_prior"):
        symsm.path(loss, X, ebic_prior="bic")
    x = sp.Symbol("x", real=True)
    p, q, r = sp.symbols("p q r", real=True)
    flat = symsm.Model(-(x**2) / 2 + p * x + q * x + r * x**3 / 100, [x], [p, q, r], name="flat_pq")
    with pytest.raises(ValueError, match="not identified"):
        symsm.fit(flat, np.random.default_rng(0).normal(size=(50, 1)), penalty=symsm.L1(0.1, on=["r"]))


def test_shipped_graphical_models():
    for name in ("truncated_ggm_5d", "exp_sqrt_ggm_5d"):
        model = symsm.load_model(name)
        assert model.domain == "nonnegative" and model.derive().is_quadratic
        mask = penalized_mask(model)
        assert int(mask.sum()) == 10  # the off-diagonal K entries of a 5 × 5 symmetric matrix


def test_score_of_a_long_sum_is_sympys():
    """Derivation.score differentiates a long sum term by term (only the terms involving each coordinate):
    the same expressions as sympy's diff of the whole log f."""
    from symsm.derive.derivation import SCORE_SPLIT_TERMS, _tidy

    d = 12
    x = sp.symbols(f"x0:{d}", real=True)
    K = symsm.symmetric("K", d)
    log_f = -sum(K[i, j] * x[i] * x[j] for i in range(d) for j in range(d)) / 2 - sum(
        xi**3 / 3 + sp.exp(-xi) for xi in x
    )
    assert len(sp.Add.make_args(log_f)) > SCORE_SPLIT_TERMS
    model = symsm.Model(log_f, list(x), {"K": K}, name="long_sum")
    assert model.derive().score == tuple(_tidy(sp.diff(log_f, xi)) for xi in x)


def test_closed_form_of_a_larger_model_uses_the_sparse_form():
    """truncated_ggm_5d: d·P(P+1)/2 = 1050 products per row, beyond the reduction kernel's budget; the closed
    form then takes A, b from the sparse quadratic form — equal to the hand-built ones."""
    from symsm.ir.fit_kernels import quadratic_layout

    model = symsm.load_model("truncated_ggm_5d")
    assert quadratic_layout(model.dim, model.n_params) == "rows"
    rng = np.random.default_rng(9)
    X = np.abs(rng.normal(0.5, 1.0, size=(400, 5)))
    res = symsm.fit(model, X)
    A, b = _reference(X, True)
    np.testing.assert_allclose(res.hessian, A, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.theta, np.linalg.solve(A, -b), rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(res.se))


def test_weights_with_dask_data_are_refused(gauss):
    da = pytest.importorskip("dask.array")
    loss, X = gauss
    with pytest.raises(NotImplementedError, match="weights="):
        symsm.fit(loss, da.from_array(X, chunks=100), weights=np.ones(len(X)))


@pytest.mark.parametrize("which", ["gauss", "trunc"])
def test_refit_standard_errors_on_the_support_by_hand(which, gauss, trunc):
    """The refit's sandwich SEs from the blocks and per-row gradients on F only, against a numpy sandwich
    built from hand-written per-row gradients ∇φ_t = Σᵢ hᵢ(∂ᵢF (∂ᵢFᵀθ) + ∂ᵢ²F) + hᵢ′ ∂ᵢF on F."""
    loss, X = gauss if which == "gauss" else trunc
    res = symsm.path(loss, X, n_lambdas=12, select="ebic")
    k = int(np.flatnonzero((res.df > 0) & (res.df < res.penalized.sum()))[0])  # a proper, non-empty support
    fit = symsm.path(loss, X, lambdas=[res.lambdas[k]], select="ebic", se=True).refit
    theta = fit.theta
    free = ~res.penalized | res.supports[k]
    dF, d2F, _ = ggm_features(X)
    weighted = which == "trunc"
    h = X**2 if weighted else np.ones_like(X)
    dh = 2 * X if weighted else np.zeros_like(X)
    score = np.einsum("tip,p->ti", dF, theta)
    G = np.einsum("ti,tip->tp", h * score, dF) + np.einsum("ti,tip->tp", h, d2F) + np.einsum("ti,tip->tp", dh, dF)
    G = G[:, free]
    V = np.cov(G, rowvar=False, bias=True)
    A_ref, _ = _reference(X, weighted)
    H = A_ref[np.ix_(free, free)]
    cov = np.linalg.solve(H, np.linalg.solve(H, V).T) / len(X)
    np.testing.assert_allclose(fit.se[free], np.sqrt(np.diag(cov)), rtol=1e-9)
    assert np.all(np.isnan(fit.se[~free]))
    assert "sandwich standard errors on the selected support" in fit.message
    assert np.all(np.isnan(symsm.path(loss, X, lambdas=[res.lambdas[k]]).refit.se))  # only when asked
    # the complete support: the refit is the unpenalised fit, and its SEs are symsm.fit's (dense sandwich)
    full = symsm.path(loss, X, lambdas=[0.0], select="ebic", se=True).refit
    np.testing.assert_allclose(full.se, symsm.fit(loss, X).se, rtol=1e-8)
