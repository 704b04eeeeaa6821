"""The "numba-python" backend: prints the kernel IR as plain numba Python (`templates/numba_python.py.j2`).

The readable reference: the same kernel IR as the default "llvm" backend, as `@njit` functions a person can
read and step through; slower to compile (numba optimises every kernel's Python), as fast to run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from ...core.templates import render
from ...ir.ir import data_columns
from ...ir.kernel_set import ROW_MATRIX
from ...ir.kernels import symbol_names
from ..blocks import MAX_BLOCKS, ROWS_PER_BLOCK
from ..printers import ScalarMathPrinter

if TYPE_CHECKING:
    from ...derive.derivation import Derivation
    from ...ir.kernel_set import Kernel, KernelSet

__all__ = ["generate_numba_source"]

FASTMATH = False  # results must not change beyond rounding; see benchmarks/ for the measured effect


def generate_numba_source(derivation: Derivation, kernels: KernelSet, *, dtype: Any, cache_key: str) -> str:
    """The text of the generated numba-python module for `kernels` (the IR of `derivation`) in `dtype`."""
    model = derivation.model
    irs = kernels.all()
    data = data_columns(irs)
    names = symbol_names(model.params, data, *irs.values())
    printer = ScalarMathPrinter(names, dtype)

    def assignments(ir_list: list[Any]) -> list[str]:
        return [f"{names[a.target]} = {printer.doprint(a.expr)}" for a in ir_list]

    def kernel(name: str, spec: Kernel) -> dict[str, Any]:
        ir = spec.ir
        consts = [names[a.target] for a in ir.prologue]
        accumulators = [f"acc_{k}" for k in range(len(ir.sums))]
        indexed = spec.output == ROW_MATRIX
        return {
            "name": name,
            "doc": spec.description,
            "reduces": spec.reduces,
            "prologue": assignments(ir.prologue),
            "n_consts": max(1, len(consts)),
            "store_consts": [f"consts[{k}] = {c}" for k, c in enumerate(consts)],
            "load_consts": [f"{c} = consts[{k}]" for k, c in enumerate(consts)],
            "body": assignments(ir.body),
            "accumulators": accumulators,
            "accumulate": [(a, printer.doprint(e)) for a, e in zip(accumulators, ir.sums, strict=True)],
            "stores": [(f"i_row, {k}" if indexed else "i_row", printer.doprint(e)) for k, e in enumerate(ir.outputs)],
            "n_sums": len(ir.sums),
            "sum_loads": [f"{names[s]} = totals[{k}]" for k, s in enumerate(ir.sum_symbols)],
            "epilogue": assignments(ir.epilogue),
            "results": [printer.doprint(e) for e in ir.results],
        }

    rendered = [kernel(name, spec) for name, spec in kernels.items()]
    dtype_name = np.dtype(dtype).name
    theta_loads = [f"{names[p]} = theta[{k}]" for k, p in enumerate(model.params)]
    data_loads = [f"{names[x]} = X[i_row, {k}]" for k, x in enumerate(data)]
    op_counts = [f"{name}: {ir.operation_count()}" for name, ir in irs.items()]
    return render(
        "symsm.backends.numba_python",
        "numba_python.py.j2",
        version=__version__,
        model_name=_one_line(model.name, 200),  # in a comment and a docstring: one line, no quotes
        model_hash=model.hash,
        cache_key=cache_key,
        dtype=dtype_name,
        dim=model.dim,
        n_params=model.n_params,
        param_names=repr(model.param_names),
        data_names=repr(model.data_names),
        log_f=_one_line(str(model.log_f)),
        rows_per_block=ROWS_PER_BLOCK,
        max_blocks=MAX_BLOCKS,
        constants=sorted(printer.constants.items()),
        fastmath=FASTMATH,
        theta_loads=theta_loads,
        data_loads=data_loads,
        op_counts=op_counts,
        kernels=rendered,
    )


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split()).replace('"""', "'''").replace("\\", "\\\\")
    return text if len(text) <= limit else text[: limit - 5] + " ..."
