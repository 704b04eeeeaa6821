"""A loss bound to one data set (`CompiledLoss.bind`): J̃(θ) and ∇θJ̃(θ) on the same rows, many times.

At bind time X is validated once (shape, dtype, finite entries, the sphere's or simplex's rows) and the part of
the per-row integrand that does not need θ on every call is summed once: the integrand is split as
R(θ, x) + L₀(x) + Σₖ θₖLₖ(x) (symsm/derive/separable.py), the row means L̄₀, L̄ₖ come from one pass of the
``separable_sums`` kernel, and each call runs only R's kernel and adds L̄₀ + θ·L̄ (and L̄ to the gradient).
Where the loss's own call reduces the rows to moment-matching points (an integrand of degree ≤ 2 in x on ℝᵈ),
the points are computed once instead. With observation weights w_t the kernels read w as one more column and
every mean is Σ_t w_t(·)_t / Σ_t w_t, as `symsm.runtime.weighted` computes it.

Where none of this applies (dask or device arrays, a device backend: the loss's own call; a model too large for
the sympy integrand: the loss's own kernels on the checked rows; an objective with random draws: the loss's own
kernels on the checked rows with the draws appended once, again after `loss.resample`) the bound object gives the
same numbers through the loss's methods.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import get_backend
from ..core.arrays import as_theta
from ..core.cache import KEY_PREFIX
from . import placement
from .loader import load_module
from .sparse import check_weights

if TYPE_CHECKING:
    from .loss import CompiledLoss

__all__ = ["BoundLoss", "load_bound_module"]


class BoundLoss:
    """J̃(θ) and ∇θJ̃(θ) of `loss` on the rows X given to `loss.bind(X, weights=None)`.

    `value(θ)` and `value_and_grad(θ)` return what `loss.value(θ, X)` and `loss.value_and_grad(θ, X)` return (with
    weights: the weighted means of `symsm.runtime.weighted`), up to rounding, and raise the same errors: a
    non-finite J̃ or gradient is diagnosed by the loss's own call on the bound rows. `n` is the number of rows.
    """

    def __init__(
        self, loss: CompiledLoss, X: Any, weights: Any = None, *, moments: bool = True, copy: bool = True
    ) -> None:
        """`moments=False` (for benchmarks) evaluates every row where the moment points would apply. `copy`: keep
        a copy of host rows (and weights) that share memory with the caller's arrays, so that a later change to
        them cannot leave the sums of bind time inconsistent with the rows of later calls (symsm.fit, which holds
        the rows only for its own optimisation, passes False)."""
        self.loss = loss
        self._weights: np.ndarray | None = None
        self._module: ModuleType | None = None
        self._sums: np.ndarray | None = None  # [L̄₀, L̄₁, …] (weighted means with weights)
        self._kernels: tuple[Any, Any] | None = None  # (value_and_grad, value) kernels on self._rows
        self._scale = 1.0  # N / Σw: the kernels' means over N rows of w·(·), made means over Σw
        host = get_backend(loss.backend).where == "host"
        if placement.is_dask(X) or placement.is_device(X) or not host:
            if weights is not None:
                raise NotImplementedError(
                    "bind(X, weights=...) is supported for host (numpy) data on a host backend only, "
                    f"not for X of type {type(X).__name__} on backend {loss.backend!r}"
                )
            self._data = X  # the loss's own call, which places the work where X lives
            self.n = int(X.shape[0])
            return
        data = loss._data(X, loss.dtype, check_finite=True)
        if copy and np.may_share_memory(data, X):
            data = data.copy()
        self._data = data
        n = self.n = int(data.shape[0])
        w = self._weights = check_weights(weights, n)
        if copy and w is not None and weights is not None and np.may_share_memory(w, weights):
            w = self._weights = w.copy()
        self._draws: np.ndarray | None = None  # the draws self._rows hold (randomised objectives)
        if loss._has_aux():
            if w is None:  # the rows with the loss's draws appended, once per draw (see _current_rows)
                self._kernels = (loss._module.value_and_grad, loss._module.value)
            return  # weighted: symsm.runtime.weighted on the checked rows with the draws (see _call)
        module = loss._module
        if moments and w is None and n > 2 * loss.model.dim and getattr(module, "QUADRATIC_IN_DATA", False):
            self._rows = loss._reduced(data)  # 2d moment-matching points, once
            self._kernels = (module.value_and_grad, module.value)
            return
        # the structured path has no sympy integrand to split (its block kernels run as the loss's own)
        bound = None if loss.derivation_path == "structured" else load_bound_module(loss, weighted=w is not None)
        if bound is None:
            if w is None:
                self._rows, self._kernels = data, (module.value_and_grad, module.value)
            return  # weighted and no bound kernels: symsm.runtime.weighted on the checked rows
        if w is not None:
            # the means are invariant to w's scale: w / max(w) in [0, 1] so that a float32 column neither
            # underflows to all zeros nor overflows to inf (which would read as a non-finite X)
            unit = (w / w.max()).astype(loss.dtype)
            self._rows = np.ascontiguousarray(np.column_stack([data, unit]))
            self._scale = n / float(unit.astype(np.float64).sum())
        else:
            self._rows = data
        self._kernels = (bound.rest_value_and_grad, bound.rest_value)
        if hasattr(bound, "separable_sums"):
            zero = np.zeros(loss.model.n_params, dtype=loss.dtype)
            self._sums = np.asarray(bound.separable_sums(zero, self._rows), dtype=np.float64) * self._scale
            if not np.isfinite(self._sums).all():
                self._kernels = None  # J̃ is not finite at any θ: every call goes to the loss's own diagnosis

    def value_and_grad(self, theta: Any) -> tuple[float, np.ndarray]:
        """(J̃(θ), ∇θ J̃(θ)) on the bound rows."""
        if self._kernels is not None:
            th = as_theta(self.loss.model, theta).astype(self.loss.dtype, copy=False)
            result = np.asarray(self._kernels[0](th, self._current_rows()), dtype=np.float64) * self._scale
            value, grad = float(result[0]), result[1:].copy()
            if self._sums is not None:
                value += float(self._sums[0] + th.astype(np.float64) @ self._sums[1:])
                grad += self._sums[1:]
            if np.isfinite(value) and np.isfinite(grad).all():
                return value, grad
        return self._call("value_and_grad", theta)

    def value(self, theta: Any) -> float:
        """J̃(θ) on the bound rows."""
        if self._kernels is not None:
            th = as_theta(self.loss.model, theta).astype(self.loss.dtype, copy=False)
            value = float(np.asarray(self._kernels[1](th, self._current_rows()))[0]) * self._scale
            if self._sums is not None:
                value += float(self._sums[0] + th.astype(np.float64) @ self._sums[1:])
            if np.isfinite(value):
                return value
        return self._call("value", theta)

    def _current_rows(self) -> np.ndarray:
        """The rows the kernels read. For an objective with per-row draws: the checked rows with the loss's current
        draws appended (as its own call appends them, reduced as it reduces them), built again only after
        `loss.resample` — the loss's own call builds them on every call (a copy of X and the draws)."""
        if self.loss._has_aux():
            draws = self.loss.draws(self.n)
            if draws is not self._draws:
                self._rows = self.loss._reduced(self.loss._with_aux(self._data))
                self._draws = draws
        return self._rows

    def _call(self, method: str, theta: Any) -> Any:
        """The loss's own evaluation on the bound rows: where no bound kernel applies, and for the diagnosis of a
        non-finite result (`symsm.NonFiniteError` naming the rows, as `loss.value_and_grad` raises it)."""
        if self._weights is not None:
            from .weighted import weighted_value, weighted_value_and_grad

            fn = weighted_value_and_grad if method == "value_and_grad" else weighted_value
            return fn(self.loss, theta, self._data, self._weights)
        return getattr(self.loss, method)(theta, self._data)

    def __repr__(self) -> str:
        how = "separable sums" if self._sums is not None else ("kernels" if self._kernels else "loss calls")
        weighted = ", weighted" if self._weights is not None else ""
        return f"BoundLoss(model={self.loss.model.name!r}, n={self.n}{weighted}, {how})"


def load_bound_module(loss: CompiledLoss, *, weighted: bool) -> ModuleType | None:
    """The generated module of the bound kernels of `loss` (symsm.ir.kernels.build_bound_kernels), from the cache;
    None where there are none (nothing separates and no weights, or a model they are not built for)."""
    from ..ir.kernels import build_bound_kernels

    backend = get_backend(loss.backend)
    spec = loss.objective_spec

    def generate(key: str) -> str:
        kernels = build_bound_kernels(loss.derivation, spec, weighted=weighted)
        if kernels is None:
            return f'"""No bound kernels: the loss\'s own serve."""\n{KEY_PREFIX}{key}\nHAS_KERNELS = False\n'
        return backend.generate(loss.derivation, kernels, dtype=loss.dtype, cache_key=key) + "\nHAS_KERNELS = True\n"

    parts = {
        "model": loss.model.canonical(),
        "backend": backend.name,
        "dtype": np.dtype(loss.dtype).name,
        "objective": loss.objective,
        "options": spec.options() if spec is not None else {},
        "path": loss.derivation_path,
        "weighted": weighted,
    }
    module = load_module("bound", generate, **parts).module
    return module if module.HAS_KERNELS else None
