"""The CUDA backend: prints the kernel IR and renders `templates/numba_cuda.py.j2` (numba-cuda kernels).

Every kernel of the `KernelSet` becomes

* a host prologue (`@njit`): the θ-only assignments of the IR, once per call, written after θ into one
  `params` vector — the single host→device copy a call needs;
* one flat `@cuda.jit` kernel (no calls into other device functions: those do not compile to PTX without
  a GPU): a grid-stride loop over rows with per-thread partial sums in registers, then a block reduction
  through shared memory, `REDUCE_CHUNK` sums at a time, so any number of sums (P in the hundreds) fits in
  a fixed amount of shared memory; each block writes its row of partial sums to global memory;
* a host epilogue (`@njit`): sums the per-block rows in a fixed order (bit-identical run to run), then
  the IR's epilogue chains the sums back to θ and divides by N.

The prologue and epilogue run on the host: they are a few dozen scalar operations, once per call. On the
device they would cost a kernel launch each (or a one-thread kernel serialising the grid) and gain nothing;
on the host the prologue's output rides along with θ in the copy that is needed anyway, and both are the
same code as the CPU backend's, so the two backends agree on every θ-only constant bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from ...core.templates import render
from ...ir.ir import data_columns
from ...ir.kernel_set import ROW_MATRIX
from ...ir.kernels import symbol_names
from ..printers import ScalarMathPrinter

if TYPE_CHECKING:
    from ...derive.derivation import Derivation
    from ...ir.ir import Assign
    from ...ir.kernel_set import Kernel, KernelSet

__all__ = ["CudaMathPrinter", "generate_cuda_source"]

THREADS_PER_BLOCK = 256  # the largest block a kernel is launched with (sizes the shared reduction buffer)
REDUCE_CHUNK = 16  # sums reduced together: shared memory = REDUCE_CHUNK × THREADS_PER_BLOCK values
MAX_BLOCKS = 1024  # reductions: per-block partial rows stay ≤ MAX_BLOCKS × n_sums values
MAX_BLOCKS_OUTPUT = 8192  # per-row kernels: a grid-stride loop covers any N beyond that


class CudaMathPrinter(ScalarMathPrinter):
    """Scalar code for numba-cuda kernels.

    numba-cuda lowers the same `math.*` calls to libdevice (`__nv_expf` for float32, `__nv_exp` for
    float64) and freezes module-level `np.float32` constants as typed literals, so the CPU printer's
    output is valid CUDA as it is; this subclass exists so the CUDA backend has a printer of its own
    to override when the targets diverge (tests/test_cuda_ptx.py checks that every value the float32
    kernels compute is typed float32).
    """

    language = "Python (numba-cuda)"


def _signature(t: str, spec: Kernel) -> str:
    """The numba signature of a kernel for C-contiguous arrays of dtype `t` (what `loss.ptx()` compiles)."""
    two_d = spec.out_ndim == 2  # per-block partial sums, or out[i_row, k]
    out = f"{t}[:, ::1]" if two_d else f"{t}[::1]"
    return f"void({t}[::1], {t}[:, ::1], {out})"


def generate_cuda_source(derivation: Derivation, kernels: KernelSet, *, dtype: Any, cache_key: str) -> str:
    """The text of the generated CUDA module for `kernels` (the IR of `derivation`) in `dtype`."""
    model = derivation.model
    irs = kernels.all()
    data = data_columns(irs)
    names = symbol_names(model.params, data, *irs.values())
    printer = CudaMathPrinter(names, dtype)
    n_params = model.n_params
    zero = printer.doprint(0)  # a typed zero: float32 accumulators must not start as float64

    def assignments(ops: list[Assign]) -> list[str]:
        return [f"{names[a.target]} = {printer.doprint(a.expr)}" for a in ops]

    def kernel(name: str, spec: Kernel) -> dict[str, Any]:
        ir = spec.ir
        consts = [names[a.target] for a in ir.prologue]
        accumulators = [f"acc_{k}" for k in range(len(ir.sums))]
        indexed = spec.output == ROW_MATRIX
        return {
            "name": name,
            # a reduction kernel writes per-block partial sums; its epilogue (on the host) gives the means
            "doc": spec.description
            + (" (This kernel: per-block partial sums; the host epilogue takes the mean.)" if spec.reduces else ""),
            "reduces": spec.reduces,
            "prologue": assignments(ir.prologue),
            "n_values": n_params + len(consts),
            "store_consts": [f"params[{n_params + k}] = {c}" for k, c in enumerate(consts)],
            "load_consts": [f"{c} = params[{n_params + k}]" for k, c in enumerate(consts)],
            "body": assignments(ir.body),
            "init": [f"{a} = {zero}" for a in accumulators],
            "accumulate": [(a, printer.doprint(e)) for a, e in zip(accumulators, ir.sums, strict=True)],
            "stage": [f"staged[{k}] = {a}" for k, a in enumerate(accumulators)],
            "stores": [(f"i_row, {k}" if indexed else "i_row", printer.doprint(e)) for k, e in enumerate(ir.outputs)],
            "n_sums": len(ir.sums),
            "staged_size": max(1, len(ir.sums)),  # a local array of size 0 does not compile
            "chunk": max(1, min(REDUCE_CHUNK, len(ir.sums))),
            # a literal: numba-cuda types shared-array shapes only from compile-time constants
            "shared_size": max(1, min(REDUCE_CHUNK, len(ir.sums))) * THREADS_PER_BLOCK,
            "sum_loads": [f"{names[s]} = totals[{k}]" for k, s in enumerate(ir.sum_symbols)],
            "epilogue": assignments(ir.epilogue),
            "results": [printer.doprint(e) for e in ir.results],
        }

    rendered = [kernel(name, spec) for name, spec in kernels.items()]
    op_counts = [f"{name}: {ir.operation_count()}" for name, ir in irs.items()]
    return render(
        "symsm.backends.cuda",
        "numba_cuda.py.j2",
        version=__version__,
        model_name=model.name,
        model_hash=model.hash,
        cache_key=cache_key,
        dtype=np.dtype(dtype).name,
        dim=model.dim,
        n_params=n_params,
        param_names=repr(model.param_names),
        data_names=repr(model.data_names),
        log_f=_one_line(str(model.log_f)),
        threads_per_block=THREADS_PER_BLOCK,
        reduce_chunk=REDUCE_CHUNK,
        max_blocks=MAX_BLOCKS,
        max_blocks_output=MAX_BLOCKS_OUTPUT,
        signatures=[(name, _signature(np.dtype(dtype).name, spec)) for name, spec in kernels.items()],
        constants=sorted(printer.constants.items()),
        theta_loads=[f"{names[p]} = params[{k}]" for k, p in enumerate(model.params)],
        data_loads=[f"{names[x]} = X[i_row, {k}]" for k, x in enumerate(data)],
        op_counts=op_counts,
        kernels=rendered,
    )


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split()).replace('"""', "'''").replace("\\", "\\\\")
    return text if len(text) <= limit else text[: limit - 5] + " ..."
