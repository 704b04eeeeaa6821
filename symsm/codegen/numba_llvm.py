"""The numba CPU backend: instruction tables compiled to vectorised LLVM IR through numba intrinsics.

The kernel IR is printed as three-address code (`symsm.codegen.tac.TacPrinter`) into
`templates/numba_llvm.py.j2`, whose host functions are ordinary numba code: a θ-only prologue, `prange` over
blocks of rows with a fixed-order reduction, an epilogue. The straight-line arithmetic of each section is a
table that `symsm.llvm.kernels` turns into LLVM IR, SIMD across rows. See symsm/llvm/kernels.py for why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from .. import __version__
from .kernels import symbol_names
from .numba_cpu import MAX_BLOCKS, ROW_MATRIX_KERNELS, ROWS_PER_BLOCK
from .render import render
from .tac import TacPrinter

if TYPE_CHECKING:
    from ..derive import Derivation
    from .ir import KernelIR

__all__ = ["generate_numba_llvm_source"]

_DOCS = {
    "value_and_grad": "[J, dJ/dtheta...]: mean over rows of the integrand and its theta-gradient.",
    "value": "[J]: mean over rows of the integrand.",
    "per_sample": "out[t] = the integrand sum_i [d_i^2 log f + 1/2 (d_i log f)^2] at row t.",
    "score": "out[t, i] = d log f / d x_i at row t.",
}


def _table(code: list[tuple[Any, ...]]) -> list[str]:
    return [repr(tuple(ins)) + "," for ins in code]


def _kernel_context(name: str, ir: KernelIR, names: dict[sp.Symbol, str], theta: tuple, data: tuple) -> dict:
    theta_inputs = {names[p]: ("theta", k) for k, p in enumerate(theta)}
    consts = [names[a.target] for a in ir.prologue]
    const_inputs = {c: ("consts", k) for k, c in enumerate(consts)}
    data_inputs = {names[x]: ("X", j) for j, x in enumerate(data)}

    prologue = TacPrinter(names, prefix="pv")
    for a in ir.prologue:
        prologue.assign(names[a.target], a.expr)

    body = TacPrinter(names, prefix="bv")
    for a in ir.body:
        body.assign(names[a.target], a.expr)
    sum_names = []
    for k, e in enumerate(ir.sums):
        sum_names.append(f"s{k}")
        body.assign(f"s{k}", e)
    out_names = []
    for k, e in enumerate(ir.outputs):
        out_names.append(f"o{k}")
        body.assign(f"o{k}", e)

    epilogue = TacPrinter(names, prefix="ev")
    for a in ir.epilogue:
        epilogue.assign(names[a.target], a.expr)
    results = []
    for k, e in enumerate(ir.results):
        results.append(f"r{k}")
        epilogue.assign(f"r{k}", e / ir.n_symbol)
    sum_inputs = {names[s]: ("totals", k) for k, s in enumerate(ir.sum_symbols)}
    epilogue_inputs = {**theta_inputs, **const_inputs, **sum_inputs, names[ir.n_symbol]: ("n", 0)}

    return {
        "name": name,
        "upper": name.upper(),
        "doc": _DOCS.get(name, name),
        "reduces": not ir.outputs,
        "out_ndim": 2 if name in ROW_MATRIX_KERNELS else 1,
        "n_consts": len(consts),
        "n_sums": len(ir.sums),
        "n_results": len(ir.results),
        "prologue": _table(prologue.code),
        "prologue_inputs": repr(theta_inputs),
        "consts": repr(tuple(consts)),
        "body": _table(body.code),
        "body_inputs": repr({**theta_inputs, **const_inputs, **data_inputs}),
        "sums": repr(tuple(sum_names)),
        "outputs": repr(tuple(out_names)),
        "epilogue": _table(epilogue.code),
        "epilogue_inputs": repr(epilogue_inputs),
        "results": repr(tuple(results)),
        "ops": len(body.code),
    }


def generate_numba_llvm_source(derivation: Derivation, kernels: Any, *, dtype: Any, cache_key: str) -> str:
    model = derivation.model
    irs = kernels.all()
    names = symbol_names(model.params, model.data, *irs.values())
    contexts = [_kernel_context(n, ir, names, model.params, model.data) for n, ir in irs.items()]
    return render(
        "numba_llvm.py.j2",
        version=__version__,
        model_name=model.name,
        model_hash=model.hash,
        cache_key=cache_key,
        dtype=np.dtype(dtype).name,
        dim=model.dim,
        n_params=model.n_params,
        param_names=repr(model.param_names),
        data_names=repr(model.data_names),
        log_f=" ".join(str(model.log_f).split())[:400].replace('"""', "'''").replace("\\", "\\\\"),
        rows_per_block=ROWS_PER_BLOCK,
        max_blocks=MAX_BLOCKS,
        kernels=contexts,
    )
