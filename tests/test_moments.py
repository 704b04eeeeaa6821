"""symsm.runtime.moments: matching points reproduce mean and covariance; losses quadratic in x use them exactly."""

from __future__ import annotations

import numpy as np
import pytest
from models import CASES

from symsm.runtime.moments import moment_points, moments


@pytest.mark.parametrize("d", [1, 3, 8])
def test_points_match_mean_and_covariance(d):
    rng = np.random.default_rng(d)
    X = rng.standard_normal((1000, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d) * 10
    mean, cov = moments(X)
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(X.T, bias=True).reshape(d, d), rtol=1e-11, atol=1e-11)
    P = moment_points(X)
    assert P.shape == (2 * d, d)
    np.testing.assert_allclose(P.mean(axis=0), X.mean(axis=0), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(np.cov(P.T, bias=True).reshape(d, d), cov, rtol=1e-10, atol=1e-10)


def test_far_from_zero_mean_keeps_its_digits():
    rng = np.random.default_rng(1)
    X = 1e6 + rng.standard_normal((5000, 2))  # raw second moments would cancel 12 digits
    _, cov = moments(X)
    np.testing.assert_allclose(cov, np.cov(X.T, bias=True), rtol=1e-8)


@pytest.fixture(scope="module")
def gaussian():
    case = CASES["gaussian_full"]()
    return case, case.model.compile(), case.model.compile(backend="numba-python")


def test_quadratic_model_uses_points_and_matches_every_row(gaussian):
    case, loss, reference = gaussian
    assert loss._module.QUADRATIC_IN_DATA
    for X in (case.X, case.X + 100.0, np.repeat(case.X[:1], 50, axis=0), np.c_[case.X[:, :2], case.X[:, 0]]):
        v, g = loss.value_and_grad(case.theta, X)
        v_rows, g_rows = reference.value_and_grad(case.theta, X)  # the plain pass over every row
        scale = np.abs(reference.per_sample(case.theta, X)).mean()
        assert abs(v - v_rows) <= 1e-11 * scale
        np.testing.assert_allclose(g, g_rows, rtol=1e-9, atol=1e-11 * (np.abs(g_rows).max() + scale))
        assert loss.value(case.theta, X) == pytest.approx(v, rel=1e-13, abs=1e-13)


def test_non_quadratic_models_do_not_use_points(compiled_cases):
    for name in ("ica_logcosh", "student_t", "gaussian_mixture"):
        assert not compiled_cases[name][1]._module.QUADRATIC_IN_DATA
