"""Compiling a model: its backend from the registry, its cache key, its module through the one loader, and
the loss class for where its kernels run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import DEFAULT_BACKEND, get_backend
from ..backends.registry import WHERE
from ..core.errors import CodegenError, ModelError
from ..core.progress import Progress
from .device import CudaCompiledLoss
from .loader import load_module, module_key
from .loss import CompiledLoss, check_seed

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..derive.objectives import Objective
    from ..model.model import Model

__all__ = ["CompiledLoss", "compile_model", "loss_class"]

DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
#: "auto" takes the structured path for models written with vectors and matrices from this dimension on (the
#: objectives and domains symsm/derive/structured.py builds; a model it refuses goes to the scalar paths), on a
#: backend whose block executor is compiled (llvm's `blocks_by_default`): below it the scalar kernels are as
#: fast (measured, value_and_grad, N = 1e6, CPU ms structured / scalar: ICA d = 4 27 / 27, d = 8 42 / 57,
#: d = 16 129 / 251; the full Gaussian, whose rows both paths replace by moment points, 17 / 16 at d = 8 and
#: equal within noise at d = 16 and 24; benchmarks/STRUCTURED.md has d ≥ 8 against JAX)
STRUCTURED_AUTO_MIN_DIM = 8


def _structured_by_default(model: Model, spec: Any, objective_spec: Objective) -> bool:
    from ..derive.structured import structured_objective_error

    return (
        bool(getattr(model, "is_structured", False))
        and spec.blocks_by_default
        and structured_objective_error(objective_spec) is None
        and model.dim >= STRUCTURED_AUTO_MIN_DIM
    )


def compile_model(
    model: Model,
    backend: str = DEFAULT_BACKEND,
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

    `backend` is a name of symsm.backends' registry ("llvm", the default; "numba-python"; "cuda"; the old
    name "numba" is an alias of "llvm"); `loss.backend` is its canonical name.
    `objective` (with its options, see symsm/derive/objectives.py) chooses the score-matching objective; a
    randomised objective draws its per-row inputs on the host from numpy.random.default_rng(seed), fixed for
    the life of the loss (`loss.resample(seed)` draws new ones). On a cache hit nothing is derived or
    generated: the verified module is imported and each kernel loads its cached machine code. `verbose=True`
    reports each stage and its elapsed time on stderr; Ctrl-C stops a long derivation cleanly (nothing
    partial is cached). `path` chooses the derivation path of the kernels ("auto", "sympy", "graph"; see
    `symsm.derive.derivation.PATHS`); by default the path of `derivation` if given, else "auto".
    """
    from ..derive.derivation import check_path  # the derivation stage, imported only when compiling
    from ..derive.objectives import make_objective

    objective_spec = make_objective(objective, **objective_options)
    objective_spec.check_model(model)  # e.g. an objective without the weighting for data on [0, ∞)^d
    spec = get_backend(backend)
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
    if path == "auto" and derivation is None and _structured_by_default(model, spec, objective_spec):
        try:  # the structured path where it runs this model; the scalar paths derive every model
            return compile_model(
                model, backend, dt, objective=objective_spec, seed=seed, path="structured", verbose=verbose
            )
        except (ModelError, CodegenError):
            pass
    if path == "structured":
        from ..derive.structured import structured_objective_error

        why = structured_objective_error(objective_spec)
        if why is not None:
            raise ValueError(why)
    if path == "structured" and spec.blocks is None:
        raise ValueError(f"backend {spec.name!r} cannot run block programs (path='structured')")
    spec.require()  # before the generated module imports e.g. numba.cuda: a clear error without the package
    cls = loss_class(spec.where)

    def generate(key: str) -> str:
        from ..derive.derivation import Derivation
        from ..ir.kernels import build_kernels

        der = derivation if derivation is not None else Derivation(model, path=path)
        if path == "structured":  # block programs, run by the backend's block executor (symsm/ir/blocks.py)
            from ..ir.blocks import build_block_programs

            with progress.stage(f"structured derivation and block programs (d = {model.dim}, P = {model.n_params})"):
                if objective_spec.name == "exact":
                    structured = der.structured
                else:  # the randomised objectives: their own structured derivation (auxiliary columns)
                    from ..derive.structured import derive_structured

                    structured = derive_structured(model, objective_spec)
                programs = build_block_programs(structured, model)
                return spec.generate_blocks(model, programs, dtype=dt, cache_key=key)
        with progress.stage(f"derivation and kernel IR (d = {model.dim}, P = {model.n_params})"):
            kernels = build_kernels(der, objective_spec)
        with progress.stage(f"code generation ({spec.name})"):
            return spec.generate(der, kernels, dtype=dt, cache_key=key)

    progress = Progress(verbose)
    with progress.stage(f"kernels of {model.name!r}: cache lookup or generation"):
        loaded = load_module("loss", generate, **_key_parts(model, spec.name, dt, objective_spec, path))
    if verbose:
        progress.log(
            f"generated module {loaded.path}; machine code compiles on the first call of each kernel "
            f"({spec.machine_code} for later processes)"
        )
    loss = cls(
        model,
        backend=spec.name,
        dtype=dt,
        key=loaded.key,
        path=loaded.path,
        source=loaded.source,
        module=loaded.module,
    )
    loss.objective_spec = objective_spec
    loss.objective = objective_spec.name
    loss.seed = check_seed(seed)
    loss.derivation_path = path
    if derivation is not None:
        loss.derivation = derivation
    return loss


def loss_class(where: str) -> type[CompiledLoss]:
    """The loss class for kernels that run on the "host" (CompiledLoss) or a "device" (CudaCompiledLoss):
    a backend record's `where` (backends sit below the runtime, so they name the place, not the class)."""
    if where == "device":
        return CudaCompiledLoss
    if where == "host":
        return CompiledLoss
    raise ValueError(f"where must be one of {WHERE}, got {where!r}")


def cache_key_for(model: Model, backend: str, dtype: np.dtype, objective_spec: Objective, path: str = "auto") -> str:
    """The cache key of a model's kernels: everything that determines the generated text."""
    return module_key("loss", **_key_parts(model, get_backend(backend).name, np.dtype(dtype), objective_spec, path))


def _key_parts(model: Model, backend: str, dtype: np.dtype, objective_spec: Objective, path: str) -> dict[str, Any]:
    return {
        "model": model.canonical(),
        "backend": backend,
        "dtype": dtype.name,
        "objective": objective_spec.name,
        "options": objective_spec.options(),
        "path": path,
    }
