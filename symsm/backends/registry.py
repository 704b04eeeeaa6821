"""The backends, one record each: the single place that knows their names and what sets them apart.

Everything that depends on the backend — `compile_model`, the fitting kernels' generator, Dask support, the
CUDA quadratic-form module, the CLI's ``--backend`` — reads these records (the role of SymForce's
CodegenConfig or pystencils' Platform), so adding a backend is a package under symsm/backends/ and one
record here (see README.md next to this file). Nothing outside symsm/backends/ compares a backend name to a
string (tests/test_backends.py checks the sources).

A record names its generator as ``"module:function"``, imported on first use: resolving a name (the CLI's
choices, a cache hit) imports no code generator, sympy or numba.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cuda.device import import_cuda

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..ir.kernel_set import KernelSet

__all__ = ["BACKENDS", "DEFAULT_BACKEND", "WHERE", "Backend", "backend_names", "backends", "get_backend"]

WHERE = ("host", "device")  # where a backend's kernels run: the runtime maps this to the loss class


def _nothing() -> None:
    """The `require` hook of a backend without optional dependencies."""


@dataclass(frozen=True)
class Backend:
    """One backend.

    name: canonical name (`loss.backend`, the cache key); aliases: other names accepted for it;
    description: one line for help texts; package: the backend's package (its ``templates/`` folder; its
    sources are part of every cache key's generator digest); generator: ``"module:function"`` of the code
    generator, called as ``function(derivation, kernels, *, dtype, cache_key) -> module source``;
    where: ``"host"`` (kernels run on the CPU, on numpy arrays) or ``"device"`` (on a GPU); dask: whether
    symsm.runtime.dask can run its kernels on Dask workers (CPU kernels only); fit_backend: the name of the
    host backend that generates its fitting kernels (itself for a host backend that can); machine_code:
    where compiled machine code is kept for later processes (the verbose message of `compile_model`);
    require: called before anything is generated or loaded — raises ImportError with what to install
    when an optional dependency is missing.
    """

    name: str
    description: str
    package: str
    generator: str
    where: str
    dask: bool
    fit_backend: str
    machine_code: str
    aliases: tuple[str, ...] = ()
    require: Callable[[], Any] = field(default=_nothing, compare=False)
    #: ``"module:function"`` generating a module that runs the block programs of the structured derivation
    #: path (symsm/ir/blocks.py), called as ``function(model, programs, *, dtype, cache_key) -> source``; None:
    #: the backend cannot run them
    blocks: str | None = None
    #: whether path="auto" runs models written with vectors and matrices on `blocks` (a compiled block executor;
    #: the numpy reference executor is exact, not fast)
    blocks_by_default: bool = False

    def generator_function(self) -> Callable[..., str]:
        """The code generator (imported on first use)."""
        module, _, function = self.generator.partition(":")
        return getattr(importlib.import_module(module), function)

    def generate(self, derivation: Derivation, kernels: KernelSet, *, dtype: Any, cache_key: str) -> str:
        """The text of the generated module for `kernels` (the IR of `derivation`) in `dtype`."""
        return self.generator_function()(derivation, kernels, dtype=dtype, cache_key=cache_key)

    def generate_blocks(self, model: Any, programs: Any, *, dtype: Any, cache_key: str) -> str:
        """The text of the generated module running the block `programs` (path="structured") in `dtype`."""
        if self.blocks is None:
            raise ValueError(f"backend {self.name!r} cannot run block programs (path='structured')")
        module, _, function = self.blocks.partition(":")
        return getattr(importlib.import_module(module), function)(model, programs, dtype=dtype, cache_key=cache_key)

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical name, then the aliases."""
        return (self.name, *self.aliases)


#: the block programs' reference executor (numpy: exact, not fast): numba-python's, to compare against
_NUMPY_BLOCKS = "symsm.backends.blocks_numpy.generate:generate_blocks_source"
#: the tiled LLVM block executor (symsm/backends/llvm/structured.py): llvm's
_LLVM_BLOCKS = "symsm.backends.llvm.structured:generate_llvm_blocks_source"

BACKENDS: tuple[Backend, ...] = (
    Backend(
        name="llvm",
        aliases=("numba",),  # its old name (it never imported numba); code that passes "numba" keeps working
        description="CPU, SIMD machine code compiled from instruction tables with llvmlite (fast to compile and run)",
        package="symsm.backends.llvm",
        generator="symsm.backends.llvm.generate:generate_llvm_source",
        where="host",
        dask=True,
        fit_backend="llvm",
        machine_code="object files kept next to the module",
        blocks=_LLVM_BLOCKS,
        blocks_by_default=True,
    ),
    Backend(
        name="numba-python",
        description="CPU, the same kernels printed as readable numba Python (slow to compile)",
        package="symsm.backends.numba_python",
        generator="symsm.backends.numba_python.generate:generate_numba_source",
        where="host",
        dask=True,
        fit_backend="numba-python",
        machine_code="numba's cache",
        blocks=_NUMPY_BLOCKS,
    ),
    Backend(
        name="cuda",
        description="NVIDIA GPU through numba-cuda (pip install 'symsm[cuda]'; runs in numba's simulator too)",
        package="symsm.backends.cuda",
        generator="symsm.backends.cuda.generate:generate_cuda_source",
        where="device",
        dask=False,
        fit_backend="llvm",
        machine_code="numba-cuda's cache",
        require=import_cuda,
    ),
)
DEFAULT_BACKEND = "llvm"

_BY_NAME = {name: backend for backend in BACKENDS for name in backend.names}


def backends() -> tuple[Backend, ...]:
    """Every backend's record, the default first."""
    return BACKENDS


def backend_names(*, aliases: bool = False) -> tuple[str, ...]:
    """The canonical names (with `aliases`, every accepted name: each backend's name, then its aliases)."""
    return tuple(n for b in BACKENDS for n in (b.names if aliases else (b.name,)))


def get_backend(name: Any) -> Backend:
    """The record of backend `name` (a canonical name or an alias); anything else raises ValueError naming the
    argument and listing the choices."""
    backend = _BY_NAME.get(name) if isinstance(name, str) else None
    if backend is None:
        aliases = ", ".join(f"{a!r} for {b.name!r}" for b in BACKENDS for a in b.aliases)
        also = f" (aliases: {aliases})" if aliases else ""
        raise ValueError(f"backend must be one of {backend_names()}{also}, got {name!r}")
    return backend
