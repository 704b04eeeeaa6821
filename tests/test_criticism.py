"""Model criticism: the KSD goodness-of-fit test and the held-out Hyvärinen score comparison.

* the KSD U-statistic against a plain numpy double sum written here from the kernel's definition (both
  kernels, several block sizes, both inner-product paths), to 1e-12;
* the kernel's ∇ₓk, ∇_yk and tr ∇ₓ∇_yk against central finite differences of k, and the fused Stein kernel
  against u assembled from those finite differences;
* the wild-bootstrap draws and p-value against a plain loop over the draws with the same signs;
* level and power on small Monte-Carlo studies with binomial tolerances (the 500-replication study is
  benchmarks/ksd_calibration.py);
* compare(): the folds, the held-out integrand, the paired standard errors, recomputed here;
* stein_latex: the model's score in the text, and the full document through pdflatex when available.
"""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

import symsm
from symsm.criticism.ksd import FUSED_DOTS_MAX_D, Kernel, ksd_sums, median_bandwidth, stein_kernel_matrix
from symsm.latex.stein import stein_latex

GAUSS = "-((x0 - m0)**2 + (x1 - m1)**2) / (2 * s**2)"


@pytest.fixture(scope="module")
def gauss() -> symsm.Model:
    return symsm.Model.from_string(GAUSS, "x0 x1", "m0 m1 s", positive="s", name="iso_gauss", init={"s": 1.0})


@pytest.fixture(scope="module")
def gauss_loss(gauss: symsm.Model):
    return gauss.compile()


@pytest.fixture(scope="module")
def student() -> symsm.Model:
    return symsm.load_model("student_t_2d")


# ------------------------------------------------------------------------------------ reference double sum
def reference_u(X: np.ndarray, S: np.ndarray, kernel: str, h: float, c: float = 1.0, beta: float = -0.5):
    """The n × n Stein kernel matrix from the definitions, by broadcasting over all pairs (small n)."""
    d = X.shape[1]
    diff = X[:, None, :] - X[None, :, :]  # x_i − x_j
    r2 = np.sum(diff**2, axis=-1)
    if kernel == "imq":
        q = c**2 + r2 / h**2
        k = q**beta
        gx = (2 * beta / h**2 * q ** (beta - 1))[..., None] * diff  # ∇ₓ k(x_i, x_j)
        tr = -2 * beta / h**2 * (2 * (beta - 1) * q ** (beta - 2) * r2 / h**2 + d * q ** (beta - 1))
    else:
        k = np.exp(-r2 / (2 * h**2))
        gx = -(k / h**2)[..., None] * diff
        tr = k * (d / h**2 - r2 / h**4)
    gy = -gx
    ss = S @ S.T
    sx_gy = np.einsum("ik,ijk->ij", S, gy)  # s(x_i)ᵀ ∇_y k(x_i, x_j)
    sy_gx = np.einsum("jk,ijk->ij", S, gx)  # s(x_j)ᵀ ∇ₓ k(x_i, x_j)
    return ss * k + sx_gy + sy_gx + tr


def reference_statistic(U: np.ndarray) -> float:
    n = U.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += U[i, j]
    return total / (n * (n - 1))


def draws(n: int, B: int, seed: int) -> np.ndarray:
    """The documented bootstrap signs, drawn here independently of symsm."""
    return np.random.default_rng(seed).integers(0, 2, size=(n, B), dtype=np.int8).astype(np.float64) * 2 - 1


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
@pytest.mark.parametrize("d", [3, FUSED_DOTS_MAX_D + 5])  # the fused inner products, and the BLAS path
@pytest.mark.parametrize("block", [1, 7, 64])
def test_statistic_equals_plain_double_sum(kernel: str, d: int, block: int) -> None:
    rng = np.random.default_rng(d + block)
    n = 29
    X = rng.standard_normal((n, d)) * 1.3 + 0.2
    S = -X @ np.diag(rng.uniform(0.5, 2.0, d)) + rng.standard_normal((n, d)) * 0.3  # a score, not the truth
    h = 1.7
    expected = reference_statistic(reference_u(X, S, kernel, h))
    total, boot = ksd_sums(X, S, Kernel(kernel, h), None, block_size=block)
    got = total / (n * (n - 1))
    assert boot.shape == (0,)
    assert abs(got - expected) <= 1e-12 * max(1.0, abs(expected))


@pytest.mark.parametrize("kernel,c,beta", [("imq", 1.0, -0.5), ("imq", 0.7, -0.3), ("gaussian", 1.0, -0.5)])
def test_kernel_derivatives_match_finite_differences(kernel: str, c: float, beta: float) -> None:
    rng = np.random.default_rng(3)
    d, eps, e2 = 3, 1e-5, 1e-4  # e2: the mixed second difference (rounding error ~ 1e-16 / e2²)
    kern = Kernel(kernel, 1.3, c, beta)
    for _ in range(5):
        x, y = rng.standard_normal(d), rng.standard_normal(d)
        I = np.eye(d)
        fd_x = np.array([(kern(x + eps * e, y) - kern(x - eps * e, y)) / (2 * eps) for e in I])
        fd_y = np.array([(kern(x, y + eps * e) - kern(x, y - eps * e)) / (2 * eps) for e in I])
        fd_tr = sum(
            (kern(x + e2 * e, y + e2 * e) - kern(x + e2 * e, y - e2 * e) - kern(x - e2 * e, y + e2 * e)
             + kern(x - e2 * e, y - e2 * e)) / (4 * e2**2)
            for e in I
        )  # fmt: skip
        np.testing.assert_allclose(kern.grad_x(x, y), fd_x, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(kern.grad_y(x, y), fd_y, rtol=1e-6, atol=1e-9)
        assert kern.trace_grad_xy(x, y) == pytest.approx(fd_tr, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("kernel", ["imq", "gaussian"])
def test_fused_stein_kernel_matches_finite_difference_terms(kernel: str) -> None:
    """Both fused loops (inner products by BLAS, and formed in the loop) against u assembled from finite
    differences of k alone."""
    rng = np.random.default_rng(5)
    n, d, eps, e2 = 6, 2, 1e-5, 1e-4
    X, S = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    kern = Kernel(kernel, 0.9)
    I = np.eye(d)
    U_fd = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            x, y = X[i], X[j]
            gx = np.array([(kern(x + eps * e, y) - kern(x - eps * e, y)) / (2 * eps) for e in I])
            gy = np.array([(kern(x, y + eps * e) - kern(x, y - eps * e)) / (2 * eps) for e in I])
            tr = sum(
                (kern(x + e2 * e, y + e2 * e) - kern(x + e2 * e, y - e2 * e) - kern(x - e2 * e, y + e2 * e)
                 + kern(x - e2 * e, y - e2 * e)) / (4 * e2**2)
                for e in I
            )  # fmt: skip
            U_fd[i, j] = S[i] @ S[j] * kern(x, y) + S[i] @ gy + S[j] @ gx + tr
    np.testing.assert_allclose(stein_kernel_matrix(X, S, kern), U_fd, rtol=1e-5, atol=1e-6)
    for i, j in [(0, 1), (2, 5)]:  # one pair through the blocked pass: 2 u(x_i, x_j)
        total, _ = ksd_sums(X[[i, j]], S[[i, j]], kern, None)
        assert total / 2 == pytest.approx(U_fd[i, j], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bootstrap_matches_plain_loop(gauss, gauss_loss, dtype: str) -> None:
    rng = np.random.default_rng(11)
    n, B, seed = 40, 300, 7
    X = rng.standard_t(4, size=(n, 2))
    theta = [0.1, -0.1, 1.2]
    res = symsm.ksd_test(gauss_loss, X, theta, n_bootstrap=B, seed=seed, block_size=16, bootstrap_dtype=dtype)
    S = gauss_loss.score(theta, X)
    np.testing.assert_allclose(S, -(X - [0.1, -0.1]) / 1.2**2, rtol=1e-14)
    h = median_bandwidth(X)
    assert res.bandwidth == h
    U = reference_u(X, S, "imq", h)
    np.fill_diagonal(U, 0.0)
    W = draws(n, B, seed)
    loop = np.array([W[:, b] @ U @ W[:, b] for b in range(B)]) / (n * (n - 1))
    stat = reference_statistic(U)
    p_loop = (1 + sum(1 for v in loop if v >= stat)) / (1 + B)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(res.bootstrap, loop, rtol=rtol, atol=rtol * np.abs(loop).max())
    assert res.statistic == pytest.approx(stat, rel=1e-12)
    assert res.p_value == p_loop
    assert 0 < res.p_value <= 1


def test_results_do_not_depend_on_blocks_or_threads(gauss_loss) -> None:
    import numba

    X = np.random.default_rng(2).standard_normal((150, 2))
    theta = [0.0, 0.0, 1.0]
    base = symsm.ksd_test(gauss_loss, X, theta, n_bootstrap=64, bootstrap_dtype="float64")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = symsm.ksd_test(gauss_loss, X, theta, n_bootstrap=64, bootstrap_dtype="float64")
    finally:
        numba.set_num_threads(before)
    small = symsm.ksd_test(gauss_loss, X, theta, n_bootstrap=64, bootstrap_dtype="float64", block_size=13)
    assert one.statistic == base.statistic
    np.testing.assert_array_equal(one.bootstrap, base.bootstrap)
    assert small.statistic == pytest.approx(base.statistic, rel=1e-12)
    np.testing.assert_allclose(small.bootstrap, base.bootstrap, rtol=1e-10, atol=1e-14)


def test_level_and_power_small_study(gauss_loss) -> None:
    """Level: 100 data sets from the model at the θ tested (n = 200, d = 2): the rejections at α = 0.05 are
    Binomial(100, 0.05) if the test is calibrated; 1..12 holds with probability 0.99. Power: 40 data sets of
    independent t₅ coordinates tested as a standard Gaussian (n = 500, d = 2): fewer than 32 rejections has
    probability < 0.01 if the power is ≥ 0.92 (benchmarks/KSD.md measures it on 500 replications)."""
    theta = [0.0, 0.0, 1.0]
    rng = np.random.default_rng(2024)
    null = [
        symsm.ksd_test(gauss_loss, rng.standard_normal((200, 2)), theta, n_bootstrap=200, seed=r).p_value
        for r in range(100)
    ]
    rejected = sum(p <= 0.05 for p in null)
    assert 1 <= rejected <= 12, rejected
    # the p-values are roughly uniform under the null: their mean is 0.5 ± 0.029 (SD of the mean of 100)
    assert abs(np.mean(null) - 0.5) < 0.1
    power = [
        symsm.ksd_test(gauss_loss, rng.standard_t(5, size=(500, 2)), theta, n_bootstrap=200, seed=r).rejects(0.05)
        for r in range(40)
    ]
    assert sum(power) >= 32, sum(power)


def test_fit_fraction_and_fit_result(gauss, gauss_loss) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(1.0, 2.0, size=(301, 2))
    res = symsm.ksd_test(gauss, X, fit_fraction=0.4, n_bootstrap=100)
    assert res.n_fit == 120 and res.n == 181
    assert res.fit is not None and res.fit.n_samples == 120
    np.testing.assert_array_equal(res.theta, res.fit.theta)
    assert res.theta[2] == pytest.approx(2.0, rel=0.2)
    assert "fitted on 120 other rows" in repr(res)
    fitted = symsm.fit(gauss_loss, X)
    on_same = symsm.ksd_test(gauss_loss, X, fitted, n_bootstrap=100)
    np.testing.assert_array_equal(on_same.theta, fitted.theta)
    assert "fitted on these rows" in repr(on_same)
    perm = np.random.default_rng(0).permutation(301)  # the documented split (seed 0)
    refit = symsm.fit(gauss_loss, X[np.sort(perm[:120])])
    np.testing.assert_allclose(res.theta, refit.theta, rtol=1e-12)
    other = symsm.fit(symsm.load_model("student_t_2d"), X)
    with pytest.raises(ValueError, match="FitResult is for parameters"):
        symsm.ksd_test(gauss_loss, X, other)
    with pytest.raises(ValueError, match="theta must be None when fit_fraction"):
        symsm.ksd_test(gauss, X, [0, 0, 1], fit_fraction=0.5)
    with pytest.raises(ValueError, match="fit_fraction must be in"):
        symsm.ksd_test(gauss, X, fit_fraction=1.5)
    with pytest.raises(ValueError, match="theta is required"):
        symsm.ksd_test(gauss, X)


def test_rejects_misfit_and_result_fields(gauss_loss) -> None:
    X = np.random.default_rng(9).standard_normal((300, 2)) * 2.0
    res = symsm.ksd_test(gauss_loss, X, [0.0, 0.0, 1.0], n_bootstrap=200, kernel="gaussian", bandwidth=1.5)
    assert res.rejects(0.01) and res.p_value == 1 / 201
    assert res.kernel.name == "gaussian" and res.bandwidth == 1.5 and res.bandwidth_rule == "given"
    assert res.statistic > res.bootstrap.max()
    assert res.to_dict()["n_bootstrap"] == 200
    text = repr(res)
    assert "KSD²" in text and "rejects" in text and "Gaussian" in text and "h = 1.5" in text


def test_argument_errors(gauss, gauss_loss) -> None:
    X = np.random.default_rng(0).standard_normal((20, 2))
    theta = [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="kernel must be one of"):
        symsm.ksd_test(gauss_loss, X, theta, kernel="rbf")
    with pytest.raises(ValueError, match="bandwidth must be"):
        symsm.ksd_test(gauss_loss, X, theta, bandwidth=-1.0)
    with pytest.raises(ValueError, match="bandwidth must be"):
        symsm.ksd_test(gauss_loss, X, theta, bandwidth="scott")
    with pytest.raises(ValueError, match="n_bootstrap"):
        symsm.ksd_test(gauss_loss, X, theta, n_bootstrap=0)
    with pytest.raises(ValueError, match="beta"):
        symsm.ksd_test(gauss_loss, X, theta, beta=0.5)
    with pytest.raises(ValueError, match="X"):
        symsm.ksd_test(gauss_loss, X[:, :1], theta)
    with pytest.raises(ValueError, match="at least 2 rows"):
        symsm.ksd_test(gauss_loss, X[:1], theta)
    with pytest.raises(TypeError, match="model_or_loss"):
        symsm.ksd_test("gauss", X, theta)
    half_normal = symsm.Model.from_string("-x0**2 / (2 * s**2)", "x0", "s", positive="s", domain="nonnegative")
    with pytest.raises(NotImplementedError, match="weight"):
        symsm.ksd_test(half_normal, np.abs(X[:, :1]), [1.0])


# ------------------------------------------------------------------------------------------------ compare
def multivariate_t(rng: np.random.Generator, n: int, nu: float, d: int = 2) -> np.ndarray:
    return rng.standard_normal((n, d)) / np.sqrt(rng.chisquare(nu, size=(n, 1)) / nu)


def test_compare_prefers_the_true_family_and_recomputes(gauss, student) -> None:
    X = multivariate_t(np.random.default_rng(1), 600, 4.0) + np.array([0.5, -0.5])
    cmp = symsm.compare({"gaussian": gauss, "student_t": student}, X, folds=4, seed=3)
    assert cmp.best_name == "student_t"
    assert cmp.diff[cmp.best] == 0 and cmp.diff[0] > 2 * cmp.diff_se[0]
    # the folds, documented: default_rng(seed).permutation, split into nearly equal parts
    splits = np.array_split(np.random.default_rng(3).permutation(600), 4)
    losses = [gauss.compile(), student.compile()]
    for m, loss in enumerate(losses):
        for k, test in enumerate(splits):
            test = np.sort(test)
            train = np.setdiff1d(np.arange(600), test)
            assert cmp.fits[m][k].n_samples == train.size
            theta = symsm.fit(loss, X[train]).theta
            np.testing.assert_allclose(cmp.scores[m, test], loss.per_sample(theta, X[test]), rtol=1e-9, atol=1e-12)
            assert cmp.fold_means[m, k] == pytest.approx(cmp.scores[m, test].mean(), rel=1e-12)
    d = cmp.scores[0] - cmp.scores[1]
    assert cmp.diff[0] == pytest.approx(d.mean(), rel=1e-12)
    assert cmp.diff_se[0] == pytest.approx(d.std(ddof=1) / math.sqrt(600), rel=1e-12)
    assert cmp.mean[1] == pytest.approx(cmp.scores[1].mean(), rel=1e-12)
    table = cmp.to_markdown()
    assert table.splitlines()[2].startswith("| student_t") and "best" in table
    assert "gaussian" in repr(cmp) and "lower is better" in repr(cmp)


def test_compare_errors(gauss, student) -> None:
    X = np.random.default_rng(0).standard_normal((50, 2))
    with pytest.raises(ValueError, match="at least two models"):
        symsm.compare([gauss], X)
    with pytest.raises(ValueError, match="folds"):
        symsm.compare([gauss, student], X, folds=1)
    one_d = symsm.Model.from_string("-x0**2 / (2 * s**2)", "x0", "s", positive="s")
    with pytest.raises(ValueError, match="same data dimension"):
        symsm.compare([gauss, one_d], X)
    sliced = gauss.compile(objective="sliced")
    with pytest.raises(ValueError, match="exact"):
        symsm.compare([sliced, student], X)
    with pytest.raises(ValueError, match="rows"):
        symsm.compare([gauss, student], X[:6], folds=5)


# -------------------------------------------------------------------------------------------------- LaTeX
def test_stein_latex_fragment_and_errors(gauss, student) -> None:
    text = stein_latex(gauss)
    assert r"\begin{document}" not in text
    assert r"s_{\theta,0}(x) &= " in text and "Stein operator" in text and r"\frac{1}{n(n-1)}" in text
    assert r"\texttt{iso\_gauss}" in text and r"q^{- \frac{1}{2}}" in text
    assert "y_{0}" in text  # the model's score at the second point, in the products of scores
    gaussian = stein_latex(student, kernel="gaussian", bandwidth=1.5)
    assert "1.5" in gaussian and "e^{" in gaussian and r"\nu" in gaussian
    with pytest.raises(ValueError, match="kernel"):
        stein_latex(gauss, kernel="rbf")
    half_normal = symsm.Model.from_string("-x0**2 / (2 * s**2)", "x0", "s", positive="s", domain="nonnegative")
    with pytest.raises(NotImplementedError, match="weighted"):
        stein_latex(half_normal)


@pytest.mark.pdflatex
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not on PATH")
def test_stein_latex_document_compiles(student, tmp_path) -> None:
    (tmp_path / "stein.tex").write_text(stein_latex(student, full_document=True), encoding="utf-8")
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "stein.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "stein.pdf").stat().st_size > 1000
