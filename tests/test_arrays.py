"""Bad input to a compiled loss gets a clear ValueError naming the argument; conversions are exact."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def loss_case(compiled_cases):
    return compiled_cases["student_t"]


def test_wrong_dimensions(loss_case):
    case, loss = loss_case
    with pytest.raises(ValueError, match=r"X must be a 2-D array of shape \(N, 2\)"):
        loss.value(case.theta, case.X[:, 0])
    with pytest.raises(ValueError, match=r"X must have shape \(N, 2\).*got 3 columns"):
        loss.value(case.theta, np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"theta must have shape \(4,\)"):
        loss.value(case.theta[:3], case.X)
    with pytest.raises(ValueError, match=r"theta must have shape \(4,\)"):
        loss.value(case.theta.reshape(2, 2), case.X)


def test_empty_and_non_finite(loss_case):
    case, loss = loss_case
    with pytest.raises(ValueError, match="X is empty"):
        loss.value(case.theta, np.empty((0, 2)))
    X = case.X.copy()
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"X has non-finite values .* row 7, column 1 \(x1\)"):
        loss.value_and_grad(case.theta, X)
    th = case.theta.copy()
    th[3] = np.inf
    with pytest.raises(ValueError, match="theta has non-finite values for nu"):
        loss.value(th, case.X)
    th = case.theta.copy()
    th[2] = -1.0
    with pytest.raises(ValueError, match="positive must be > 0: s"):
        loss.value(th, case.X)


def test_types_refused(loss_case):
    case, loss = loss_case
    with pytest.raises(ValueError, match="booleans"):
        loss.value(case.theta, case.X > 0)
    with pytest.raises(ValueError, match="complex128"):
        loss.value(case.theta, case.X.astype(complex))
    with pytest.raises(ValueError, match="beyond 2\\*\\*53"):
        loss.value(case.theta, np.full((3, 2), 2**60, dtype=np.int64))
    with pytest.raises(TypeError, match=r"model\.pack"):
        loss.value({"s": 1.0}, case.X)
    with pytest.raises(ValueError, match="must be an array"):
        loss.value(case.theta, [[1.0, 2.0], [3.0]])


def test_conversions_are_exact(loss_case):
    case, loss = loss_case
    ref = loss.value(case.theta, case.X)
    Xi = np.round(case.X * 4).astype(np.int32)
    assert loss.value(case.theta, Xi) == loss.value(case.theta, Xi.astype(np.float64))
    X32 = case.X.astype(np.float32)
    assert loss.value(case.theta, X32) == loss.value(case.theta, X32.astype(np.float64))
    F = np.asfortranarray(case.X)
    assert loss.value(case.theta, F) == ref
    strided = np.repeat(case.X, 2, axis=0)[::2]
    assert loss.value(case.theta, strided) == ref
    assert loss.value(list(case.theta), case.X.tolist()) == ref
    assert loss.value(case.theta.astype(np.float32).astype(np.float64), case.X) == pytest.approx(ref, rel=1e-5)


def test_pandas_dataframe(loss_case):
    pd = pytest.importorskip("pandas")
    case, loss = loss_case
    df = pd.DataFrame(case.X, columns=["x0", "x1"])
    assert loss.value(case.theta, df) == loss.value(case.theta, case.X)


def test_input_arrays_are_not_modified(loss_case):
    case, loss = loss_case
    X = case.X.copy()
    th = case.theta.copy()
    loss.value_and_grad(th, X)
    loss.score(th, X)
    assert np.array_equal(X, case.X) and np.array_equal(th, case.theta)
