"""The numba CPU backend: prints the kernel IR and renders `templates/numba_python.py.j2`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..._version import __version__
from ...core.templates import render
from ...ir.ir import data_columns
from ...ir.kernels import KernelSet, symbol_names
from ..printers import ScalarMathPrinter

if TYPE_CHECKING:
    from ...derive.derivation import Derivation
    from ...ir.fit_kernels import FitKernelSet
    from ...ir.ir import KernelIR

__all__ = ["generate_numba_source"]

ROWS_PER_BLOCK = 2048  # rows per block at least: keeps per-block overhead negligible
MAX_BLOCKS = 256  # blocks at most: the partial sums stay O(P) in memory, and 2–64 cores stay busy
FASTMATH = False  # results must not change beyond rounding; see benchmarks/ for the measured effect

_DOCS = {
    "value_and_grad": "[J, dJ/dtheta...]: mean over rows of the integrand and its theta-gradient.",
    "value": "[J]: mean over rows of the integrand.",
    "per_sample": "out[t] = the integrand sum_i [d_i^2 log f + 1/2 (d_i log f)^2] at row t.",
    "score": "out[t, i] = d log f / d x_i at row t.",
    "quadratic_sums": "[A_kl (k <= l), b_k, c0]: means over rows; J = th.A.th/2 + b.th + c0.",
    "quadratic_rows": "out[t] = [a_ik (i-major), b_k, c0] at row t; J = th.A.th/2 + b.th + c0.",
    "grad_rows": "out[t, k] = d integrand / d theta_k at row t.",
    "hessian": "[d^2 J / d theta_k d theta_l for k <= l]: the mean theta-Hessian, upper triangle row by row.",
}
ROW_MATRIX_KERNELS = ("score", "quadratic_rows", "grad_rows")  # per-row kernels writing out[i_row, k]


def generate_numba_source(
    derivation: Derivation, kernels: KernelSet | FitKernelSet, *, dtype: Any, cache_key: str
) -> str:
    model = derivation.model
    irs = kernels.all()
    data = data_columns(irs)
    names = symbol_names(model.params, data, *irs.values())
    printer = ScalarMathPrinter(names, dtype)

    def assignments(ir_list: list[Any]) -> list[str]:
        return [f"{names[a.target]} = {printer.doprint(a.expr)}" for a in ir_list]

    def kernel(name: str, ir: KernelIR) -> dict[str, Any]:
        consts = [names[a.target] for a in ir.prologue]
        accumulators = [f"acc_{k}" for k in range(len(ir.sums))]
        indexed = name in ROW_MATRIX_KERNELS
        return {
            "name": name,
            "doc": _DOCS[name],
            "reduces": not ir.outputs,
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

    rendered = [kernel(name, ir) for name, ir in irs.items()]
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
