"""`CompiledLoss`: generated kernels behind a validated, documented interface (J̃, ∇θJ̃, per-row values and
scores, the fitting quantities), whatever backend generated them and wherever the data live."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.arrays import as_data, as_theta, check_data_finite, needs_positive
from ..core.errors import NonFiniteDataError
from . import placement

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..derive.objectives import Objective
    from ..model.model import Model
    from .bound import BoundLoss

__all__ = ["CompiledLoss", "check_seed"]


def check_seed(seed: Any) -> int:
    """A seed for numpy.random.default_rng: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


class CompiledLoss:
    """J̃(θ) = mean over rows of Σ_i [∂_i² log f + ½ (∂_i log f)²] and its θ-gradient, compiled.

    All methods take θ of shape (P,) (see `model.param_names`, `model.pack`) and data X of shape (N, d).
    Inputs are converted to contiguous arrays of the kernel's dtype (integers exactly, float32 exactly);
    wrong shapes, empty data and non-finite values raise `ValueError` naming the argument.
    """

    def __init__(
        self,
        model: Model,
        *,
        backend: str,
        dtype: np.dtype,
        key: str,
        path: Path,
        source: str,
        module: ModuleType,
    ) -> None:
        self.model = model
        self.backend = backend
        self.dtype = dtype
        self.key = key
        self.path = path
        self.source = source
        self._module = module
        self.objective = "exact"  # the objective's name; compile_model sets the spec and the seed
        self.objective_spec: Objective | None = None
        self.seed = 0
        self.derivation_path = "auto"  # how the kernels were derived (compile_model sets it; see PATHS)
        self._draws: tuple[int, int, np.ndarray] | None = None

    # ------------------------------------------------------------------ evaluation
    def value(self, theta: Any, X: Any) -> float:
        """J̃(θ) on the rows of X (a dask array: per-chunk sums on its workers, symsm/runtime/dask.py).

        A non-finite J̃ raises `symsm.NonFiniteError` naming the first rows that produce it and the reason
        (symsm/runtime/nonfinite.py)."""
        value = placement.executor(X).value(self, theta, X)
        if not np.isfinite(value):
            from .nonfinite import check_finite

            check_finite(self, theta, X, value)
        return value

    def value_and_grad(self, theta: Any, X: Any) -> tuple[float, np.ndarray]:
        """(J̃(θ), ∇θ J̃(θ)) in one pass over X (a dask array: per-chunk sums on its workers).

        A non-finite J̃ or gradient raises `symsm.NonFiniteError` naming the first rows that produce it and
        the reason (symsm/runtime/nonfinite.py)."""
        value, grad = placement.executor(X).value_and_grad(self, theta, X)
        if not (np.isfinite(value) and np.isfinite(grad).all()):
            from .nonfinite import check_finite

            check_finite(self, theta, X, value, grad)
        return value, grad

    def bind(self, X: Any, weights: Any = None) -> BoundLoss:
        """J̃ and ∇θJ̃ on fixed rows X, for many evaluations (an optimiser's): a `BoundLoss` with `value(θ)`,
        `value_and_grad(θ)` and `n`, which return what `value(θ, X)` and `value_and_grad(θ, X)` return (with
        `weights`: the means Σ_t w_t(·)_t / Σ_t w_t of `symsm.fit(..., weights=)`) and raise the same errors.

        X is checked and converted once, here (bad input raises here, as `value_and_grad` would), and kept as a
        copy where the converted rows would share memory with X (a later change to X does not reach the bound
        loss); the terms of
        the per-row integrand that are affine in θ with coefficients of the data alone are summed once, here,
        and each call evaluates only the rest (symsm/runtime/bound.py). Dask and device arrays are accepted
        (each call is then the loss's own call; weights only for host data)."""
        from .bound import BoundLoss

        return BoundLoss(self, X, weights, copy=True)

    def host_value(self, theta: Any, X: Any) -> float:
        """J̃(θ) on rows in host memory (`value` sends them here)."""
        return float(self._summed(self._module.value, theta, X)[0])

    def host_value_and_grad(self, theta: Any, X: Any) -> tuple[float, np.ndarray]:
        """(J̃(θ), ∇θ J̃(θ)) on rows in host memory (`value_and_grad` sends them here)."""
        result = self._summed(self._module.value_and_grad, theta, X)
        return float(result[0]), np.array(result[1:], dtype=np.float64)

    def _summed(self, kernel: Any, theta: Any, X: Any) -> np.ndarray:
        """kernel(θ, rows) for a sum kernel. A kernel that tests X's finiteness in its own pass gets X unchecked
        (a separate pass costs up to a third of a float32 call) and X's error is reported as `as_data` would
        (argument, row, column and its name): llvm's `SumKernel` (`checks_finite`) raises NonFiniteDataError;
        the structured path's block kernels (`_kernel_checks_data`) return a non-finite result."""
        fused = getattr(kernel, "checks_finite", False) and getattr(self.model, "domain", "real") == "real"
        structured = self._kernel_checks_data()
        unchecked = fused or structured
        th, data = self._inputs(theta, X, check_finite=not unchecked)
        try:
            result = kernel(th, self._reduced(data, checked=not unchecked))
        except NonFiniteDataError:
            check_data_finite(self.model, data)
            raise
        if structured and not np.isfinite(result).all():
            as_data(self.model, X, dtype=self.dtype)  # X's own error where a non-finite entry of X is the cause
        return np.asarray(result)

    def _kernel_checks_data(self) -> bool:
        """Whether the value kernels test X for non-finite entries as they read it (the structured path on LLVM:
        a non-finite result where X has one), so the host's own pass over X is left out; the objective's extra
        per-row inputs, if any, are the host's, so it keeps its test then."""
        return bool(getattr(self._module, "CHECKS_FINITE_DATA", False)) and not self._has_aux()

    def _has_aux(self) -> bool:
        """Whether the objective has auxiliary per-row inputs (see `draws`)."""
        spec = self.objective_spec
        return spec is not None and bool(spec.aux_symbols(self.model))

    def per_sample(self, theta: Any, X: Any) -> np.ndarray:
        """The integrand Σ_i [∂_i² log f + ½ (∂_i log f)²] at every row, shape (N,)."""
        th, data = self._inputs(theta, X)
        out = np.empty(data.shape[0], dtype=np.float64)
        self._module.per_sample(th, data, out)
        return out

    def score(self, theta: Any, X: Any) -> np.ndarray:
        """The score ∂_i log f at every row, shape (N, d)."""
        th, data = self._inputs(theta, X)
        out = np.empty((data.shape[0], self.model.dim), dtype=np.float64)
        self._module.score(th, data, out)
        return out

    def _reduced(self, data: np.ndarray, checked: bool = True) -> np.ndarray:
        """Data with the same J̃ and ∇J̃: for integrands of degree ≤ 2 in x, 2d moment-matching points
        (one pass of moments, then the kernel on 2d rows; see symsm/runtime/moments.py), else the data itself.
        `checked`: whether `data` was tested for non-finite entries (the moments need it)."""
        n, d = data.shape
        if n > 2 * d and getattr(self._module, "QUADRATIC_IN_DATA", False):
            from .moments import matching_points, moments

            with np.errstate(over="ignore", invalid="ignore"):  # non-finite rows are reported just below
                mean, cov = moments(data)
            # unchecked rows: the moments are finite whenever the rows are (a non-finite entry makes its sums
            # non-finite), so the exact test runs only where they are not, for X's own error
            if not checked and not (np.isfinite(mean).all() and np.isfinite(cov).all()):
                check_data_finite(self.model, data)  # (with the objective's extra columns, if any)
            return matching_points(mean, cov).astype(self.dtype)
        return data

    def _inputs(self, theta: Any, X: Any, check_finite: bool = True) -> tuple[np.ndarray, np.ndarray]:
        th = as_theta(self.model, theta).astype(self.dtype, copy=False)
        dtype = self.dtype
        if (  # the value kernels that test X themselves (check_finite False) test the rounded rows
            not check_finite
            and dtype == np.float32
            and isinstance(X, np.ndarray)
            and X.dtype == np.float64
            and getattr(self._module, "FLOAT64_ROWS", False)
            and not self._has_aux()
        ):
            dtype = np.dtype(np.float64)  # the kernels round the rows as they read them: no float32 copy of X
        return th, self._with_aux(self._data(X, dtype, check_finite))

    def _data(self, X: Any, dtype: np.dtype, check_finite: bool) -> np.ndarray:
        """`as_data`; on the sphere and the simplex the rows' domain test and the finiteness test are one compiled
        pass (a row on the domain by that test has finite entries), numpy's checks only where it fails: their
        error names the first offending row (symsm/backends/llvm/domaincheck.py)."""
        if self.model.domain not in ("sphere", "simplex"):
            return as_data(self.model, X, dtype=dtype, check_finite=check_finite)
        from ..backends.llvm.domaincheck import rows_on_manifold

        arr = as_data(self.model, X, dtype=dtype, check_finite=False, check_manifold=False)
        if rows_on_manifold(arr, self.model.domain, needs_positive(self.model)):
            return arr
        return as_data(self.model, arr, dtype=dtype, check_finite=check_finite)

    def _with_aux(self, data: np.ndarray) -> np.ndarray:
        """The data with the objective's auxiliary per-row inputs appended as extra columns (if any)."""
        draws = self.draws(data.shape[0])
        if draws is None:
            return data
        return np.ascontiguousarray(np.concatenate([data, draws], axis=1))

    def draws(self, n: int) -> np.ndarray | None:
        """The objective's auxiliary per-row inputs for n rows (random directions, noise), shape (n, k) in the
        loss's dtype, or None for an objective without any. Drawn from numpy.random.default_rng(seed) once
        per (n, seed) and kept, so every call on n rows sees the same draws until `resample`."""
        spec = self.objective_spec
        if spec is None:
            return None
        k = len(spec.aux_symbols(self.model))
        if not k:
            return None
        if self._draws is None or self._draws[:2] != (n, self.seed):
            draws = np.asarray(spec.draw(self.model, n, self.seed))
            if draws.shape != (n, k):
                raise ValueError(f"objective {spec.name!r} drew shape {draws.shape} for {n} rows, expected {(n, k)}")
            self._draws = (n, self.seed, np.ascontiguousarray(draws, dtype=self.dtype))
        return self._draws[2]

    def resample(self, seed: int) -> None:
        """Draw new auxiliary inputs (random directions, noise) from numpy.random.default_rng(seed)."""
        self.seed = check_seed(seed)
        self._draws = None

    # ------------------------------------------------------------------ fitting (host glue: runtime/accumulate.py)
    def quadratic_form(self, X: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """(A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c exactly, from one pass over X.

        Only for objectives quadratic in θ (`derivation.is_quadratic`: every ∂ᵢ log f affine in θ,
        e.g. exponential families); other models raise `ValueError`. Computed in float64.
        """
        return placement.executor(X).quadratic_form(self, X)

    def per_sample_grad(self, theta: Any, X: Any) -> np.ndarray:
        """∂θ of the integrand at every row, shape (N, P), in float64 (the whole matrix: for small data). On the
        structured path from the block program's per-row accumulator contributions (no scalar expansion)."""
        from .accumulate import per_sample_grad

        return per_sample_grad(self, theta, X)

    def hessian(self, theta: Any, X: Any) -> np.ndarray:
        """The exact θ-Hessian of J̃ at θ (P × P, float64): A for quadratic objectives, else a generated
        kernel of symbolic second derivatives (P ≤ 30; larger models raise `ValueError`)."""
        return placement.executor(X).exact_hessian(self, theta, X)

    @cached_property
    def fit_module(self) -> ModuleType:
        """The generated module of fitting kernels (`symsm.ir.fit_kernels`), loaded on first use."""
        from .accumulate import load_fit_module

        return load_fit_module(self)

    @cached_property
    def hessian_module(self) -> ModuleType:
        """The generated module with the exact θ-Hessian kernel (P ≤ 30), loaded on first use."""
        from .accumulate import load_fit_module

        return load_fit_module(self, "hessian")

    # ------------------------------------------------------------------ introspection
    @cached_property
    def derivation(self) -> Derivation:
        """The model's derivation (computed on first access; a cache hit does not need it)."""
        from ..derive.derivation import Derivation

        return Derivation(self.model, path=self.derivation_path)

    @property
    def kernels(self) -> dict[str, Any]:
        """The compiled kernels by name (native SumKernel/RowKernel objects for llvm, numba dispatchers for
        numba-python)."""
        return {n: getattr(self._module, n) for n in ("value_and_grad", "value", "per_sample", "score")}

    def __repr__(self) -> str:
        return (
            f"CompiledLoss(model={self.model.name!r}, backend={self.backend!r}, dtype={self.dtype.name}, "
            f"d={self.model.dim}, P={self.model.n_params}, path={str(self.path)!r})"
        )
