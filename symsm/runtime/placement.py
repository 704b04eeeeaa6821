"""Where the data live, decided in one place: host arrays, Dask arrays (symsm/runtime/dask.py: per-chunk sums
on the workers) and device arrays (GPU memory: a CUDA loss's `to_device` handle, numba or CuPy arrays).

Every operation that takes data — J̃ and ∇J̃, the quadratic form, the moments of the per-row gradients, the
exact Hessian, the data of a fit — asks `executor(X)` which executor runs it; nothing else looks at the type
of X. A CUDA loss evaluates host and device arrays itself (symsm/runtime/device.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..core.arrays import as_data
from . import accumulate

if TYPE_CHECKING:
    from .loss import CompiledLoss

__all__ = ["HOST", "Executor", "executor", "fit_data", "is_dask", "is_device"]


def is_dask(X: Any) -> bool:
    """A dask array (or any dask collection of rows)."""
    return hasattr(X, "__dask_graph__")


def is_device(X: Any) -> bool:
    """An array in GPU memory: numba device arrays (real or simulated) and anything exporting
    ``__cuda_array_interface__`` (CuPy, a CUDA loss's DeviceData)."""
    return bool(getattr(X, "__cuda_ndarray__", False)) or hasattr(X, "__cuda_array_interface__")


class Executor(Protocol):
    """The operations that reduce over the rows of X, for one place the rows can live."""

    def value(self, loss: CompiledLoss, theta: Any, X: Any) -> float: ...
    def value_and_grad(self, loss: CompiledLoss, theta: Any, X: Any) -> tuple[float, np.ndarray]: ...
    def quadratic_form(self, loss: CompiledLoss, X: Any) -> tuple[np.ndarray, np.ndarray, float]: ...
    def gradient_moments(self, loss: CompiledLoss, theta: Any, X: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def exact_hessian(self, loss: CompiledLoss, theta: Any, X: Any) -> np.ndarray: ...


class _Host:
    """Rows in host memory: the loss's own kernels and the fitting accumulators (symsm/runtime/accumulate.py)."""

    def value(self, loss: CompiledLoss, theta: Any, X: Any) -> float:
        return loss.host_value(theta, X)

    def value_and_grad(self, loss: CompiledLoss, theta: Any, X: Any) -> tuple[float, np.ndarray]:
        return loss.host_value_and_grad(theta, X)

    quadratic_form = staticmethod(accumulate.quadratic_form)
    gradient_moments = staticmethod(accumulate.gradient_moments)
    exact_hessian = staticmethod(accumulate.exact_hessian)


HOST: Executor = _Host()


def _dask() -> ModuleType:
    """symsm/runtime/dask.py, imported when a dask array first arrives (Dask is an optional dependency)."""
    from . import dask

    return dask


def executor(X: Any) -> Executor:
    """The executor for rows X: symsm.runtime.dask for a dask array, else the host's."""
    return _dask() if is_dask(X) else HOST  # the module has the protocol's functions


def fit_data(loss: CompiledLoss, X: Any) -> tuple[Any, Any]:
    """(rows, host) for a fit: `rows` for the optimisation's evaluations, `host` for its fitting sums.

    X is validated once. A dask array gives its own pair (symsm.runtime.dask.fit_data). Device arrays stay on
    the device for the optimisation and are copied to the host once, for the fitting kernels.
    """
    if is_dask(X):
        return _dask().fit_data(loss, X)
    if not isinstance(X, np.ndarray) and (is_device(X) or hasattr(X, "copy_to_host")):
        if hasattr(X, "copy_to_host"):
            host = X.copy_to_host()
        elif hasattr(X, "get"):
            host = X.get()
        else:
            raise TypeError(
                f"X is a GPU array of type {type(X).__name__} without copy_to_host() or get(); pass a host array "
                "or loss.to_device(X)"
            )
        return X, as_data(loss.model, host)
    data = as_data(loss.model, X, dtype=loss.dtype)
    return data, data
