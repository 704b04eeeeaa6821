"""The compiled row test of the sphere and the simplex (symsm/backends/llvm/domaincheck.py) against a hand-written
numpy test of the same criterion, and the errors a loss still gives through it (first offending row, non-finite
entries reported as such).

The criterion, written here independently: sphere |Σ xⱼ² − 1| ≤ √ε; simplex every xⱼ ≥ 0 (> 0 when `positive`)
and |Σ xⱼ − 1| ≤ √ε; a NaN or ±∞ anywhere fails it.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.backends.llvm.domaincheck import BLOCK_ROWS, GROUP, rows_on_manifold


def _reference(arr: np.ndarray, domain: str, positive: bool) -> bool:
    tol = np.sqrt(np.finfo(arr.dtype).eps)
    a = arr.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if domain == "sphere":
            dev = (a * a).sum(axis=1) - 1
            return bool(np.all(np.abs(dev) <= tol))
        entries = (a > 0) if positive else (a >= 0)
        return bool(np.all(entries) and np.all(np.abs(a.sum(axis=1) - 1) <= tol))


def _rows(domain: str, n: int, d: int, dtype: type, rng: np.random.Generator) -> np.ndarray:
    if domain == "sphere":
        X = rng.normal(size=(n, d))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    else:
        X = rng.dirichlet(np.full(d, 2.0), size=n)
    return np.ascontiguousarray(X, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("domain", ["sphere", "simplex"])
@pytest.mark.parametrize("d", [1, 3, 5, 17])
def test_agrees_with_numpy_on_good_and_spoiled_rows(domain: str, d: int, dtype: type) -> None:
    rng = np.random.default_rng(d)
    n = 3 * BLOCK_ROWS + 11  # several blocks, the last one short
    X = _rows(domain, n, d, dtype, rng)
    tol = float(np.sqrt(np.finfo(dtype).eps))
    for positive in (False, True):
        assert rows_on_manifold(X, domain, positive) is _reference(X, domain, positive)
    spoilers = [
        lambda r: r * (1 + 4 * tol),  # off by a few tolerances
        lambda r: r * (1 + tol / 8),  # inside the tolerance
        lambda r: np.where(np.arange(d) == 0, np.nan, r),
        lambda r: np.where(np.arange(d) == d - 1, np.inf, r),
        lambda r: np.where(np.arange(d) == 0, -np.inf, r),
    ]
    if d > 1:
        spoilers.append(lambda r: np.concatenate([[-r[0]], r[1:]]))  # a sign flipped: norm kept, sum not
        spoilers.append(lambda r: np.concatenate([[0.0], r[1:] + r[0] / (d - 1)]))  # a zero entry, sum kept
    for where in (0, BLOCK_ROWS + 5, n - 1):  # first block, a middle one, the last row
        for spoil in spoilers:
            bad = X.copy()
            bad[where] = spoil(X[where].astype(np.float64)).astype(dtype)
            for positive in (False, True):
                assert rows_on_manifold(bad, domain, positive) is _reference(bad, domain, positive), (where, positive)


@pytest.mark.parametrize("domain", ["sphere", "simplex"])
def test_every_lane_and_the_tail_rows(domain: str) -> None:
    """Rows are tested GROUP at a time as SIMD lanes, the last N mod GROUP one by one: a spoiled row is caught in
    every position of short inputs (each lane of a group, each tail row)."""
    rng = np.random.default_rng(7)
    for n in range(1, 2 * GROUP + 2):
        X = _rows(domain, n, 5, np.float64, rng)
        assert rows_on_manifold(X, domain) is _reference(X, domain, False) is True
        for where in range(n):
            for value in (np.nan, -0.5, 2.0):
                bad = X.copy()
                bad[where, 2] = value
                assert rows_on_manifold(bad, domain) is _reference(bad, domain, False) is False, (n, where, value)


def test_declines_what_it_does_not_test() -> None:
    X = _rows("sphere", 10, 3, np.float64, np.random.default_rng(1))
    assert rows_on_manifold(X, "sphere")
    assert not rows_on_manifold(X[:, ::-1], "sphere")  # not C-contiguous: the caller's own check
    assert not rows_on_manifold(X.astype(np.float16), "sphere")
    assert not rows_on_manifold(X, "box")


X_SYMS = sp.symbols("x0:3", real=True)
K = sp.symbols("k0:3", real=True)


def test_loss_errors_unchanged_through_the_compiled_check() -> None:
    loss = symsm.Model(sum(k * x for k, x in zip(K, X_SYMS, strict=True)), X_SYMS, K, domain="sphere").compile()
    X = _rows("sphere", 1000, 3, np.float64, np.random.default_rng(2))
    value = loss.value(np.array([0.3, -0.2, 0.5]), X)
    # J̃ of vMF on S² (hand-written): the tangent score is κ − (κᵀx)x, its divergence −2κᵀx
    kappa = np.array([0.3, -0.2, 0.5])
    kx = X @ kappa
    grad = kappa - kx[:, None] * X
    assert value == pytest.approx(np.mean(-2 * kx + 0.5 * (grad**2).sum(axis=1)), rel=1e-12, abs=1e-14)
    bad = X.copy()
    bad[17, 1] = np.nan
    bad[40] *= 2
    with pytest.raises(ValueError, match=r"X has non-finite values \(1 in all\); the first is at row 17, column 1"):
        loss.value(kappa, bad)
    bad[17] = X[17]
    with pytest.raises(ValueError, match=r"row 40, with norm 2\.0"):
        loss.value_and_grad(kappa, bad)
