"""Observation weights for J̃, ∇J̃ and the moments of the per-row gradients, without touching the kernels.

With weights w_t ≥ 0 every mean over rows becomes Σ_t w_t (·)_t / Σ_t w_t: J̃_w(θ) from the loss's own
``per_sample`` kernel, ∇J̃_w and the sandwich's V from the ``grad_rows`` fitting kernel (on the structured path
from the block program's per-row accumulator contributions, symsm/runtime/accumulate.py), chunk by chunk (never an
N × P matrix). Integer weights give exactly what repeating the rows gives (up to rounding).
The quadratic form with weights is in symsm/runtime/sparse.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.arrays import as_data, as_theta
from .accumulate import _buffer, _chunks, _row_gradients, _with_draws
from .sparse import check_weights

if TYPE_CHECKING:
    from .loss import CompiledLoss

__all__ = ["weighted_gradient_moments", "weighted_value", "weighted_value_and_grad"]


def _host(loss: CompiledLoss, X: Any) -> np.ndarray:
    if hasattr(X, "__dask_graph__"):
        raise NotImplementedError("weights= with dask data is not supported yet; compute the data or drop weights")
    return as_data(loss.model, X)


def weighted_value(loss: CompiledLoss, theta: Any, X: Any, weights: Any) -> float:
    """Σ_t w_t φ_t(θ) / Σ_t w_t, φ_t the per-row integrand."""
    data = _host(loss, X)
    w = check_weights(weights, data.shape[0])
    assert w is not None
    return float(w @ loss.per_sample(theta, data) / w.sum())


def weighted_value_and_grad(loss: CompiledLoss, theta: Any, X: Any, weights: Any) -> tuple[float, np.ndarray]:
    """(J̃_w(θ), ∇J̃_w(θ)): the weighted means of the per-row integrand and of its θ-gradient."""
    data = _host(loss, X)
    n = data.shape[0]
    w = check_weights(weights, n)
    assert w is not None
    model = loss.model
    th = as_theta(model, theta)
    value = float(w @ loss.per_sample(th, data))
    total = float(w.sum())
    blocks = _row_gradients(loss, th)
    if blocks is not None:  # the structured path: the rows' accumulator contributions, weighted, through J
        return value / total, blocks.weighted_sum(data, w) / total
    rows = _with_draws(loss, data)
    P = model.n_params
    grad = np.zeros(P)
    module = loss.fit_module
    buf = _buffer(n, P)
    for start, stop in _chunks(n, P):
        out = buf[: stop - start]
        module.grad_rows(th, rows[start:stop], out)
        grad += w[start:stop] @ out
    return value / total, grad / total


def _gradient_blocks(loss: CompiledLoss, th: np.ndarray, data: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, per-row θ-gradients of a chunk of rows): from the block program on the structured path, else
    from the grad_rows fitting kernel (one reused buffer)."""
    blocks = _row_gradients(loss, th)
    if blocks is not None:
        yield from blocks.gradient_blocks(data)
        return
    rows = _with_draws(loss, data)
    P = loss.model.n_params
    module = loss.fit_module
    buf = _buffer(data.shape[0], P)
    for start, stop in _chunks(data.shape[0], P):
        out = buf[: stop - start]
        module.grad_rows(th, rows[start:stop], out)
        yield start, out


def weighted_gradient_moments(loss: CompiledLoss, theta: Any, X: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and covariance (divisor Σw) of the per-row θ-gradients, about a shift (the first row)."""
    data = _host(loss, X)
    n = data.shape[0]
    w = check_weights(weights, n)
    assert w is not None
    model = loss.model
    th = as_theta(model, theta)
    P = model.n_params
    shift: np.ndarray | None = None
    s1 = np.zeros(P)
    s2 = np.zeros((P, P))
    for start, out in _gradient_blocks(loss, th, data):
        stop = start + out.shape[0]
        if shift is None:
            shift = out[0].copy()
        out -= shift
        wt = w[start:stop]
        s1 += wt @ out
        s2 += (out * wt[:, None]).T @ out
    assert shift is not None
    total = float(w.sum())
    m = s1 / total
    cov = s2 / total - np.outer(m, m)
    return shift + m, (cov + cov.T) / 2
