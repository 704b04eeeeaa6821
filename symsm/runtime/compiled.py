"""Compiled losses: generated kernels loaded from the cache behind a validated, documented interface."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..core import cache
from ..core.arrays import as_data, as_theta
from ..core.errors import ModelError
from ..core.progress import Progress
from ..derive.derivation import check_path

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..derive.objectives import Objective
    from ..model.model import Model

__all__ = ["BACKENDS", "CompiledLoss", "compile_model"]

BACKENDS = ("numba", "numba-python", "cuda")
# "numba": instruction tables compiled to SIMD machine code with llvmlite (fast to compile and to run);
# "numba-python": the same kernel IR printed as plain numba Python (readable reference, slow to compile).
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def compile_model(
    model: Model,
    backend: str = "numba",
    dtype: Any = np.float64,
    *,
    derivation: Derivation | None = None,
    objective: str | Objective = "exact",
    seed: int = 0,
    path: str | None = None,
    verbose: bool = False,
    **objective_options: Any,
) -> CompiledLoss:
    """Generate (or load from the cache) and compile the kernels of `model` for `backend`.

    `objective` (with its options, see symsm/derive/objectives.py) chooses the score-matching objective; a
    randomised objective draws its per-row inputs on the host from numpy.random.default_rng(seed), fixed for
    the life of the loss (`loss.resample(seed)` draws new ones). On a cache hit nothing is derived or
    generated: the verified module is imported and each kernel loads its cached machine code. `verbose=True`
    reports each stage and its elapsed time on stderr; Ctrl-C stops a long derivation cleanly (nothing
    partial is cached). `path` chooses the derivation path of the kernels ("auto", "sympy", "graph"; see
    `symsm.derive.derivation.PATHS`); by default the path of `derivation` if given, else "auto".
    """
    from ..derive.objectives import make_objective

    objective_spec = make_objective(objective, **objective_options)
    objective_spec.check_model(model)  # e.g. an objective without the weighting for data on [0, ∞)^d
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}") from None
    if dt not in DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {dt}")
    if derivation is not None and derivation.model is not model:
        raise ModelError("derivation belongs to another model")
    if path is None:
        path = derivation.path if derivation is not None else "auto"
    path = check_path(path)
    if derivation is not None and derivation.path != path:
        raise ValueError(f"path={path!r} differs from the derivation's path {derivation.path!r}")
    loss_class = CompiledLoss
    if backend == "cuda":
        from .device import CudaCompiledLoss, import_cuda

        import_cuda()  # before the generated module imports numba.cuda: a clear error without numba-cuda
        loss_class = CudaCompiledLoss
    key = cache_key_for(model, backend, dt, objective_spec, path)

    def generate() -> str:
        from ..derive.derivation import Derivation
        from ..ir.kernels import build_kernels

        der = derivation if derivation is not None else Derivation(model, path=path)
        if backend == "cuda":
            from ..backends.cuda.generate import generate_cuda_source as generator
        elif backend == "numba-python":
            from ..backends.numba_python.generate import generate_numba_source as generator
        else:
            from ..backends.llvm.generate import generate_numba_llvm_source as generator
        with progress.stage(f"derivation and kernel IR (d = {model.dim}, P = {model.n_params})"):
            kernels = build_kernels(der, objective_spec)
        with progress.stage(f"code generation ({backend})"):
            return generator(der, kernels, dtype=dt, cache_key=key)

    progress = Progress(verbose)
    with progress.stage(f"kernels of {model.name!r}: cache lookup or generation"):
        module, module_path, source = cache.load_or_generate(key, generate)
    if verbose:
        kept = {"numba": "kept next to the module", "numba-python": "numba's cache", "cuda": "numba-cuda"}[backend]
        progress.log(
            f"generated module {module_path}; machine code compiles on the first call of each kernel "
            f"({kept} for later processes)"
        )
    loss = loss_class(model, backend=backend, dtype=dt, key=key, path=module_path, source=source, module=module)
    loss.objective_spec = objective_spec
    loss.objective = objective_spec.name
    loss.seed = _check_seed(seed)
    loss.derivation_path = path
    if derivation is not None:
        loss.derivation = derivation
    return loss


def _check_seed(seed: Any) -> int:
    """A seed for numpy.random.default_rng: a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def cache_key_for(model: Model, backend: str, dtype: np.dtype, objective_spec: Objective, path: str = "auto") -> str:
    """The cache key of a model's kernels: everything that determines the generated text."""
    from .loader import generator_digest

    return cache.cache_key(
        model=model.canonical(),
        backend=backend,
        dtype=np.dtype(dtype).name,
        objective=objective_spec.name,
        options=objective_spec.options(),
        path=path,
        version=__version__,
        generator=generator_digest(),
    )


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
        """J̃(θ) on the rows of X (a dask array: per-chunk sums on its workers, symsm/runtime/dask.py)."""
        if hasattr(X, "__dask_graph__"):
            from .dask import value

            return value(self, theta, X)
        th, data = self._inputs(theta, X)
        return float(self._module.value(th, self._reduced(data))[0])

    def value_and_grad(self, theta: Any, X: Any) -> tuple[float, np.ndarray]:
        """(J̃(θ), ∇θ J̃(θ)) in one pass over X (a dask array: per-chunk sums on its workers)."""
        if hasattr(X, "__dask_graph__"):
            from .dask import value_and_grad

            return value_and_grad(self, theta, X)
        th, data = self._inputs(theta, X)
        result = self._module.value_and_grad(th, self._reduced(data))
        return float(result[0]), np.array(result[1:], dtype=np.float64)

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

    def _reduced(self, data: np.ndarray) -> np.ndarray:
        """Data with the same J̃ and ∇J̃: for integrands of degree ≤ 2 in x, 2d moment-matching points
        (one pass of moments, then the kernel on 2d rows; see symsm/runtime/moments.py), else the data itself."""
        n, d = data.shape
        if n > 2 * d and getattr(self._module, "QUADRATIC_IN_DATA", False):
            from .moments import moment_points

            return moment_points(data).astype(self.dtype)
        return data

    def _inputs(self, theta: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
        th = as_theta(self.model, theta).astype(self.dtype, copy=False)
        return th, self._with_aux(as_data(self.model, X, dtype=self.dtype))

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
        self.seed = _check_seed(seed)
        self._draws = None

    # ------------------------------------------------------------------ fitting (host glue: runtime/accumulate.py)
    def quadratic_form(self, X: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """(A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c exactly, from one pass over X.

        Only for objectives quadratic in θ (`derivation.is_quadratic`: every ∂ᵢ log f affine in θ,
        e.g. exponential families); other models raise `ValueError`. Computed in float64.
        """
        from .accumulate import quadratic_form

        return quadratic_form(self, X)

    def per_sample_grad(self, theta: Any, X: Any) -> np.ndarray:
        """∂θ of the integrand at every row, shape (N, P), in float64 (the whole matrix: for small data)."""
        from .accumulate import per_sample_grad

        return per_sample_grad(self, theta, X)

    def hessian(self, theta: Any, X: Any) -> np.ndarray:
        """The exact θ-Hessian of J̃ at θ (P × P, float64): A for quadratic objectives, else a generated
        kernel of symbolic second derivatives (P ≤ 30; larger models raise `ValueError`)."""
        from .accumulate import exact_hessian

        return exact_hessian(self, theta, X)

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
        """The compiled kernels by name (native SumKernel/RowKernel objects, or numba dispatchers for numba-python)."""
        return {n: getattr(self._module, n) for n in ("value_and_grad", "value", "per_sample", "score")}

    def __repr__(self) -> str:
        return (
            f"CompiledLoss(model={self.model.name!r}, backend={self.backend!r}, dtype={self.dtype.name}, "
            f"d={self.model.dim}, P={self.model.n_params}, path={str(self.path)!r})"
        )
