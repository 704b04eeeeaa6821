"""The CUDA backend at run time: data resident on the GPU, and the CUDA `CompiledLoss`.

Device detection and the numba-cuda import (an optional dependency, imported on first use) belong to the
backend, symsm.backends.cuda.device; they are re-exported here and by symsm.cuda. Generating and compiling
the kernels (and `CudaCompiledLoss.ptx`) needs no GPU; evaluating them needs an NVIDIA GPU with a working
driver, or numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` in the environment before numba is imported).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import cached_property
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.cuda.device import (
    SIMULATOR_ENV,
    CudaUnavailableError,
    device_available,
    device_name,
    import_cuda,
    require_device,
    simulator_enabled,
)
from ..core.arrays import as_data, as_theta
from .loader import load_module
from .loss import CompiledLoss
from .placement import is_device

if TYPE_CHECKING:
    from ..model.model import Model

__all__ = [
    "SIMULATOR_ENV",
    "CudaCompiledLoss",
    "CudaUnavailableError",
    "DeviceData",
    "device_available",
    "device_name",
    "import_cuda",
    "require_device",
    "simulator_enabled",
]


class DeviceData:
    """Rows of data resident on the GPU, validated once: made by `CudaCompiledLoss.to_device(X)`.

    Pass it wherever X is accepted; a fit that reuses it copies the data to the device once instead of on
    every evaluation. `array` is the numba device array (also exported as `__cuda_array_interface__`).
    """

    def __init__(self, array: Any, data_names: Sequence[str], *, validated: bool) -> None:
        self.array = array
        self.data_names = tuple(data_names)
        #: True when the values were checked to be finite on the host before the copy
        self.validated = validated

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return self.array.__cuda_array_interface__

    def copy_to_host(self) -> np.ndarray:
        """The rows as a numpy array (a device-to-host copy)."""
        return self.array.copy_to_host()

    def __repr__(self) -> str:
        return f"DeviceData(shape={self.shape}, dtype={self.dtype.name}, columns={list(self.data_names)})"


class CudaCompiledLoss(CompiledLoss):
    """The `CompiledLoss` interface on an NVIDIA GPU (numba-cuda), plus `ptx()` and `to_device()`.

    X may be a numpy array (validated, converted to the loss's dtype and copied to the device on every
    call), a `DeviceData` from `to_device` (copied once, reused), or any 2-D array exporting
    `__cuda_array_interface__` (numba device arrays, CuPy, PyTorch) of the loss's dtype, used in place. Arrays
    already on the device are checked for shape and dtype but not for non-finite values (that would cost a
    pass over them); `to_device` checks a host array once before copying it.

    Results come back as numpy float64, as on the CPU backend. Reductions are deterministic: the launch
    configuration depends only on N (and `threads_per_block`, `max_blocks`), each thread sums its rows in
    order, blocks reduce in a fixed tree and the per-block rows are summed on the host in block order.
    """

    def __init__(self, model: Model, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        mod = self._module
        self._threads = int(mod.THREADS_PER_BLOCK)
        #: most blocks a reduction is launched with (the per-block rows copied back are max_blocks × sums)
        self.max_blocks = int(mod.MAX_BLOCKS)
        #: most blocks a per-row kernel (per_sample, score) is launched with; a grid-stride loop does the rest
        self.max_blocks_output = int(mod.MAX_BLOCKS_OUTPUT)
        self._local = threading.local()
        self._ptx: dict[tuple[int, int], dict[str, str]] = {}

    # ------------------------------------------------------------------ launch configuration
    @property
    def threads_per_block(self) -> int:
        """Threads per block: a power of two, at most the generated THREADS_PER_BLOCK (the shared buffer)."""
        return self._threads

    @threads_per_block.setter
    def threads_per_block(self, value: int) -> None:
        limit = int(self._module.THREADS_PER_BLOCK)
        if not isinstance(value, (int, np.integer)) or value < 1 or value > limit or value & (value - 1):
            raise ValueError(f"threads_per_block must be a power of two between 1 and {limit}, got {value!r}")
        self._threads = int(value)

    def _blocks(self, n: int, limit: int) -> int:
        if not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"the block limit must be a positive integer, got {limit!r}")
        return max(1, min(int(limit), math.ceil(n / self._threads)))

    # ------------------------------------------------------------------ evaluation
    def value(self, theta: Any, X: Any) -> float:
        """J̃(θ) on the rows of X."""
        return float(self._reduce("value", theta, X)[0])

    def value_and_grad(self, theta: Any, X: Any) -> tuple[float, np.ndarray]:
        """(J̃(θ), ∇θ J̃(θ)) in one pass over X."""
        result = self._reduce("value_and_grad", theta, X)
        return float(result[0]), np.array(result[1:], dtype=np.float64)

    def per_sample(self, theta: Any, X: Any) -> np.ndarray:
        """The integrand Σ_i [∂_i² log f + ½ (∂_i log f)²] at every row, shape (N,)."""
        return self._per_row("per_sample", theta, X, lambda n: (n,))

    def score(self, theta: Any, X: Any) -> np.ndarray:
        """The score ∂_i log f at every row, shape (N, d)."""
        return self._per_row("score", theta, X, lambda n: (n, self.model.dim))

    def to_device(self, X: Any) -> DeviceData:
        """X validated, converted to the loss's dtype and copied to the GPU once; pass it wherever X goes."""
        cuda = require_device()
        if isinstance(X, DeviceData) or is_device(X):
            return DeviceData(self._device_rows(cuda, X), self.model.data_names, validated=False)
        host = as_data(self.model, X, dtype=self.dtype)
        return DeviceData(cuda.to_device(host), self.model.data_names, validated=True)

    def quadratic_form(self, X: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """(A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c exactly, from one pass over X on the GPU.

        Only for objectives quadratic in θ (`derivation.is_quadratic`); other models raise `ValueError`.
        Computed in float64 whatever the loss's dtype (normal equations in float32 would lose the digits
        that matter), by a kernel of its own generated on first use
        (`symsm.ir.fit_kernels.build_quadratic_form_kernels`).
        """
        from .accumulate import is_quadratic, is_variant

        if is_variant(self) and is_quadratic(self):
            # A variant objective (sliced, denoising): the float64 host kernels built from its own integrand,
            # fed the same draws as this loss's kernels (symsm/runtime/accumulate.py); the rows come to the host once.
            from .accumulate import quadratic_form

            cuda = import_cuda()
            host = self._device_rows(cuda, X).copy_to_host() if isinstance(X, DeviceData) or is_device(X) else X
            return quadratic_form(self, host)
        if is_variant(self) or not is_quadratic(self):
            raise ValueError(
                f"model {self.model.name!r}: the objective is not quadratic in θ (some ∂ᵢ log f is not affine in "
                "θ), so it has no (A, b, c) form; use value_and_grad, or symsm.fit(..., method='lbfgs')"
            )
        mod = self._quadratic_module
        P = self.model.n_params
        result = self._reduce("quadratic_form", self.model.default_theta(), X, mod)  # θ is not read
        n_upper = P * (P + 1) // 2
        A = np.empty((P, P))
        rows, cols = np.triu_indices(P)
        A[rows, cols] = result[:n_upper]
        A[cols, rows] = result[:n_upper]
        return A, np.array(result[n_upper : n_upper + P]), float(result[-1])

    @cached_property
    def _quadratic_module(self) -> ModuleType:
        """The float64 module with the ``quadratic_form`` kernel, from this loss's backend (generated on first use)."""
        from ..backends import get_backend
        from ..ir.fit_kernels import build_quadratic_form_kernels

        backend = get_backend(self.backend)

        def generate(key: str) -> str:
            der = self.derivation
            return backend.generate(der, build_quadratic_form_kernels(der), dtype=np.float64, cache_key=key)

        return load_module(
            "quadratic_form", generate, model=self.model.canonical(), backend=backend.name, dtype="float64"
        ).module

    def _reduce(self, name: str, theta: Any, X: Any, mod: ModuleType | None = None) -> np.ndarray:
        """Kernel `name` of `mod` (default: the loss's module): host prologue, kernel, host epilogue."""
        cuda = require_device()
        mod = mod or self._module
        dtype = np.dtype(mod.DTYPE)
        params = self._params(mod, name, theta)
        rows = self._rows(cuda, X, dtype, aux=mod is self._module)
        n = int(rows.shape[0])
        n_sums = mod.LAYOUT[name][1]
        blocks = self._blocks(n, self.max_blocks)
        partial, d_partial, d_params = self._scratch(cuda, mod, name, blocks)
        if n_sums:
            d_params.copy_to_device(params)
            getattr(mod, f"{name}_kernel")[blocks, self._threads](d_params, rows, d_partial)
            d_partial.copy_to_host(partial)
        return getattr(mod, f"{name}_epilogue")(params, partial, n)

    def _per_row(self, name: str, theta: Any, X: Any, shape: Any) -> np.ndarray:
        cuda = require_device()
        mod = self._module
        params = self._params(mod, name, theta)
        rows = self._rows(cuda, X, self.dtype)
        n = int(rows.shape[0])
        out = cuda.device_array(shape(n), dtype=self.dtype)
        blocks = self._blocks(n, self.max_blocks_output)
        getattr(mod, f"{name}_kernel")[blocks, self._threads](cuda.to_device(params), rows, out)
        return out.copy_to_host().astype(np.float64)

    def _params(self, mod: ModuleType, name: str, theta: Any) -> np.ndarray:
        """θ followed by the θ-only constants of kernel `name` (the host prologue), in the module's dtype."""
        dtype = np.dtype(mod.DTYPE)
        th = as_theta(self.model, theta).astype(dtype, copy=False)
        params = np.empty(mod.LAYOUT[name][0], dtype=dtype)
        getattr(mod, f"{name}_prologue")(th, params)
        return params

    def _scratch(self, cuda: ModuleType, mod: ModuleType, name: str, blocks: int) -> tuple[Any, ...]:
        """Per-thread buffers reused across calls: (pinned host partials, device partials, device params)."""
        cache = getattr(self._local, "buffers", None)
        if cache is None:
            cache = self._local.buffers = {}
        key = (mod.__name__, name, blocks)
        if key not in cache:
            if len(cache) >= 8:  # a few launch shapes at a time: a fit keeps N fixed
                cache.clear()
            n_values, n_sums = mod.LAYOUT[name]
            dtype = np.dtype(mod.DTYPE)
            shape = (blocks, n_sums)
            cache[key] = (
                cuda.pinned_array(shape, dtype=dtype) if n_sums else np.empty(shape, dtype=dtype),
                cuda.device_array(shape, dtype=dtype) if n_sums else None,
                cuda.device_array(max(1, n_values), dtype=dtype),
            )
        return cache[key]

    def _rows(self, cuda: ModuleType, X: Any, dtype: np.dtype, aux: bool = True) -> Any:
        """X as a device array of `dtype`: used in place if it is one, else validated and copied.

        A device array of the loss's dtype but another kernel dtype (float32 data for the float64
        quadratic-form kernel) goes through the host once: it is a one-off pass, not a fit's inner loop.
        With `aux`, the objective's auxiliary draws (random directions, noise) follow as extra columns: the
        loss's kernels read them after the model's coordinates.
        """
        if isinstance(X, DeviceData) or is_device(X):
            arr = self._device_rows(cuda, X)
            if np.dtype(arr.dtype) != dtype:
                arr = cuda.to_device(arr.copy_to_host().astype(dtype))
            return self._append_draws(cuda, arr) if aux else arr
        host = as_data(self.model, X, dtype=dtype)
        return cuda.to_device(self._with_aux(host) if aux else host)

    def _append_draws(self, cuda: ModuleType, rows: Any) -> Any:
        """Device rows with the draws appended (a new device array), or the rows themselves without draws.

        The draws are copied to the device once per (N, seed) and kept; the columns are joined by a small
        kernel on the device, so data resident on the GPU never travels back to the host.
        """
        n = int(rows.shape[0])
        draws = self.draws(n)
        if draws is None:
            return rows
        cached = getattr(self._local, "device_draws", None)
        if cached is None or cached[0] is not draws:
            cached = self._local.device_draws = (draws, cuda.to_device(draws))
        device_draws = cached[1]
        out = cuda.device_array((n, rows.shape[1] + draws.shape[1]), dtype=self.dtype)
        blocks = self._blocks(n, self.max_blocks_output)
        from ..backends.cuda.columns import join_columns

        join_columns[blocks, self._threads](rows, device_draws, out)
        return out

    def _device_rows(self, cuda: ModuleType, X: Any) -> Any:
        arr = X.array if isinstance(X, DeviceData) else X
        if not getattr(arr, "__cuda_ndarray__", False):
            if not hasattr(cuda, "as_cuda_array"):
                raise TypeError("X: arrays exporting __cuda_array_interface__ need a real GPU, not the simulator")
            arr = cuda.as_cuda_array(arr)
        d = self.model.dim
        expected = f"(N, {d}) with columns [{', '.join(self.model.data_names)}]"
        if len(arr.shape) != 2 or arr.shape[1] != d:
            raise ValueError(f"X on the GPU must have shape {expected}, got shape {tuple(arr.shape)}")
        if arr.shape[0] == 0:
            raise ValueError(f"X on the GPU is empty: shape {expected} needs N ≥ 1 rows")
        if np.dtype(arr.dtype) != self.dtype:
            raise ValueError(
                f"X on the GPU has dtype {np.dtype(arr.dtype).name} but this loss computes in {self.dtype.name}; "
                f"convert it on the device, or compile with dtype=np.{np.dtype(arr.dtype).name}"
            )
        return arr

    # ------------------------------------------------------------------ introspection
    def ptx(self, cc: tuple[int, int] = (8, 0)) -> dict[str, str]:
        """{kernel name: PTX text} for compute capability `cc`, compiled by numba-cuda — no GPU needed.

        The kernels are compiled for C-contiguous arrays of the loss's dtype (the module's SIGNATURES).
        """
        if (
            not isinstance(cc, tuple)
            or len(cc) != 2
            or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in cc)
        ):
            raise ValueError(f"cc must be a compute capability (major, minor) such as (8, 0), got {cc!r}")
        cuda = import_cuda()
        if simulator_enabled():
            raise CudaUnavailableError(
                f"loss.ptx() needs numba-cuda's compiler, which the CUDA simulator replaces; "
                f"run it in a process without {SIMULATOR_ENV}=1 (no GPU is needed)"
            )
        key = (int(cc[0]), int(cc[1]))
        if key not in self._ptx:
            out = {}
            for name in self._module.SIGNATURES:
                kernel = getattr(self._module, f"{name}_kernel")
                out[name], _ = cuda.compile_ptx(kernel.py_func, self._module.SIGNATURES[name], cc=key)
            self._ptx[key] = out
        return dict(self._ptx[key])

    @property
    def kernels(self) -> dict[str, Any]:
        """The numba-cuda kernel dispatchers by name."""
        return {n: getattr(self._module, f"{n}_kernel") for n in self._module.SIGNATURES}
