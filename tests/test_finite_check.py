"""The sum kernels check that X is finite in their own pass over it (symsm/backends/llvm/kernels.py,
`build_sum_block(check_finite=True)`), so value and value_and_grad read X once: infinities and NaNs anywhere
(every column, read by the formula or not; masked tails; any block) must still be refused with the message
of `as_data`, and finite data whose flag overflows must still be accepted."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.core.errors import NonFiniteDataError

D = 6  # columns 0-3 read as one transposed group, 4 and 5 one by one


@pytest.fixture(scope="module")
def model() -> symsm.Model:
    """x3 and x5 enter linearly: ∂ log f does not depend on them, so the kernels' formulas never read them."""
    x = sp.symbols(f"x0:{D}", real=True)
    m0, m1, a, b, c = sp.symbols("m0 m1 a b c", real=True)
    log_f = -sp.log(sp.cosh(x[0] - m0)) - (x[1] - m1) ** 4 / 4 + a * sp.tanh(x[2] * x[4]) + b * x[3] + c * x[5]
    return symsm.Model(log_f, x, [m0, m1, a, b, c], name="finite_check")


THETA = np.array([0.2, -0.1, 0.5, 1.0, -1.0])


def _data(n: int, dtype: type) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, D)).astype(dtype)


def _block_flag(loss: symsm.CompiledLoss, X: np.ndarray, lo: int, hi: int) -> float:
    """The finiteness output of value_and_grad's block function on rows [lo, hi) (0 when all finite)."""
    kernel = loss._module.value_and_grad
    fns = kernel.functions()
    th = np.ascontiguousarray(THETA, dtype=kernel.dtype)
    consts = np.empty(max(1, len(kernel.tables["consts"])), dtype=kernel.dtype)
    fns["prologue"](th.ctypes.data, consts.ctypes.data)
    buf = np.empty(kernel.buffer, dtype=kernel.dtype)
    out = np.zeros(kernel.n_totals + 1)
    fns["block"](th.ctypes.data, consts.ctypes.data, X.ctypes.data, lo, hi, buf.ctypes.data, out.ctypes.data)
    return float(out[-1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("row, col", [(0, 0), (7, 4), (1002, 3), (1002, 5), (517, 2)])
def test_non_finite_values_are_refused_with_the_row_column_and_name(model, dtype, row, col):
    loss = model.compile(dtype=dtype)
    assert loss._module.value_and_grad.checks_finite  # the path under test: no separate numpy pass
    X = _data(1003, dtype)  # 1003 rows: the last group of 8 (or 4) rows is masked
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[row, col] = bad
        message = rf"^X has non-finite values \(1 in all\); the first is at row {row}, column {col} \(x{col}\): {bad}$"
        with pytest.raises(ValueError, match=message):
            loss.value_and_grad(THETA, Y)
        with pytest.raises(ValueError, match=message):
            loss.value(THETA, Y)
        # the kernel itself flags the rows that hold it, and only those
        assert np.isnan(_block_flag(loss, Y, 0, 1003))
        assert np.isnan(_block_flag(loss, Y, row, row + 1))
        assert _block_flag(loss, Y, row + 1, 1003) == 0.0
        if row:
            assert _block_flag(loss, Y, 0, row) == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_first_of_several_non_finite_values_across_blocks(model, dtype):
    loss = model.compile(dtype=dtype)
    X = _data(300_001, dtype)  # many blocks, on every thread
    X[250_000, 1] = np.nan
    X[123_457, 5] = -np.inf
    X[300_000, 0] = np.inf
    with pytest.raises(ValueError, match=r"\(3 in all\); the first is at row 123457, column 5 \(x5\): -inf$"):
        loss.value_and_grad(THETA, X)
    with pytest.raises(NonFiniteDataError) as info:  # the kernel alone, on checked-for-nothing data
        loss._module.value_and_grad(THETA.astype(dtype), X)
    assert (info.value.row, info.value.column) == (123_457, 5)


def test_finite_data_whose_flag_overflows_are_accepted(model):
    """float32 rows whose columns add up beyond float32's range flag their block; the exact re-check finds
    nothing, and the result is the kernel's (x3 and x5 are not read: the same as with zeros there)."""
    loss = model.compile(dtype=np.float32)
    X = _data(5000, np.float32)
    X[:, 3] = X[:, 5] = 0.0
    expected = loss.value_and_grad(THETA, X)
    X[4321, 3] = X[4321, 5] = 3e38
    assert np.isnan(_block_flag(loss, X, 0, 5000))
    value, grad = loss.value_and_grad(THETA, X)
    assert value == expected[0]
    assert np.array_equal(grad, expected[1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_quadratic_models_refuse_non_finite_rows_through_their_moments(bad: float) -> None:
    """A model quadratic in x runs on moment-matching points (symsm/runtime/moments.py); its rows are tested
    through the moments (a non-finite entry makes them non-finite), with `as_data`'s message."""
    x = sp.symbols("x0:3", real=True)
    mu = sp.symbols("m0:3", real=True)
    loss = symsm.Model(-sum((a - b) ** 2 for a, b in zip(x, mu, strict=True)) / 2, x, list(mu)).compile()
    assert loss._module.QUADRATIC_IN_DATA  # the moments path is the one under test
    X = np.random.default_rng(3).normal(size=(1000, 3))
    theta = np.array([0.1, -0.2, 0.3])
    expected = loss.value_and_grad(theta, X)
    X[700, 1] = bad
    with pytest.raises(ValueError, match=r"X has non-finite values \(1 in all\); the first is at row 700, column 1"):
        loss.value_and_grad(theta, X)
    X[700, 1] = 0.5
    X[0, 0] = 1e200  # finite, but its square overflows: accepted by the exact test, reported as non-finite J̃
    with pytest.raises(ValueError) as info:
        loss.value_and_grad(theta, X)
    assert "X has non-finite values" not in str(info.value)
    assert np.isfinite(expected[0])
