"""The CUDA backend's optional dependency and device detection: importing numba-cuda, the simulator switch,
whether kernels can run and on which GPU.

numba-cuda is an optional dependency (``pip install 'symsm[cuda]'``) imported on first use, so symsm works
without it. Generating and compiling the kernels needs no GPU; evaluating them needs an NVIDIA GPU with a
working driver, or numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` in the environment before numba is
imported — slow, for tests and small data). Without either, every call that needs a device raises
`CudaUnavailableError` saying so. The loss that launches the kernels is symsm.runtime.device; the public
names are re-exported by symsm.cuda.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import numpy as np

from ...core.errors import SymsmError

__all__ = [
    "SIMULATOR_ENV",
    "CudaUnavailableError",
    "device_available",
    "device_name",
    "import_cuda",
    "require_device",
    "simulator_enabled",
]

SIMULATOR_ENV = "NUMBA_ENABLE_CUDASIM"


class CudaUnavailableError(SymsmError, RuntimeError):
    """A CUDA kernel was to run, but there is neither a usable GPU nor the CUDA simulator."""


def import_cuda() -> ModuleType:
    """`numba.cuda` from the numba-cuda package, imported on first use (the backend's `require` hook).

    numba-cuda 0.30 registers an overload for `np.row_stack`, which numpy 2.5 removed; the alias restores
    the name (to the function it always was an alias of) before numba-cuda is imported.
    """
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(
            "symsm's CUDA backend needs the numba-cuda package: pip install 'symsm[cuda]' "
            "(numba-cuda[cu13]); the numba.cuda built into numba is deprecated and not used"
        )
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    from numba import cuda

    return cuda


def simulator_enabled() -> bool:
    """True when numba's CUDA simulator replaces the GPU (NUMBA_ENABLE_CUDASIM=1 when numba was imported)."""
    import_cuda()
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def device_available() -> bool:
    """True when kernels can run: a working CUDA GPU, or the simulator."""
    return bool(import_cuda().is_available())


def device_name() -> str:
    """The GPU kernels run on ("CUDA simulator" under the simulator)."""
    cuda = require_device()
    if simulator_enabled():
        return "CUDA simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def require_device() -> ModuleType:
    """`numba.cuda`, after checking that kernels can run; else `CudaUnavailableError` with what to do."""
    cuda = import_cuda()
    if cuda.is_available():
        return cuda
    reason = " ".join(str(cuda.cuda_error() or "no CUDA device was found").split())
    raise CudaUnavailableError(
        f"symsm's CUDA backend found no usable GPU ({reason}). Running its kernels needs an NVIDIA GPU with "
        f"a working driver. Without one, set {SIMULATOR_ENV}=1 in the environment before Python starts "
        "(before numba is imported) to run the same kernels in numba's CUDA simulator — slow, for tests and "
        "small data — or compile with backend='llvm' (the CPU). Compiling and loss.ptx() need no GPU."
    )
