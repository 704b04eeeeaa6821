"""Score matching on Dask arrays, public: ``symsm.distributed.value_and_grad(loss, theta, X)`` and friends
(the implementation is symsm.runtime.dask)."""

from .runtime.dask import (
    exact_hessian,
    fit_data,
    gradient_moments,
    moments,
    quadratic_form,
    threads_per_task,
    value,
    value_and_grad,
)

__all__ = [
    "exact_hessian",
    "fit_data",
    "gradient_moments",
    "moments",
    "quadratic_form",
    "threads_per_task",
    "value",
    "value_and_grad",
]
