"""The default CPU backend ("llvm"; "numba" is its old name, still accepted): instruction tables compiled to
vectorised machine code with llvmlite.

The kernel IR is printed as three-address code (`symsm.backends.llvm.tac.TacPrinter`) into
`templates/llvm.py.j2`: per kernel a θ-only prologue, the per-row body and an epilogue after the
fixed-order reduction, each an instruction table. `symsm.backends.llvm.kernels` turns the tables into LLVM IR (SIMD
across rows) and `symsm.backends.llvm.native` compiles, caches and calls it; see those modules for why.
Neither generating nor running these kernels imports numba (`backend="numba-python"` is the same kernel IR
printed as numba Python).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from ..._version import __version__
from ...core.errors import CodegenError
from ...core.templates import render
from ...ir.ir import build_forward_ir, data_columns, split_products
from ...ir.kernel_set import SUMS, Kernel, KernelSet
from ...ir.kernels import symbol_names
from ..blocks import MAX_BLOCKS, ROWS_PER_BLOCK
from .tac import TacPrinter

if TYPE_CHECKING:
    from ...derive.derivation import Derivation

__all__ = ["generate_llvm_source", "generate_moments_source"]


def _word(operand: Any) -> str:
    """An operand in the text form of symsm.backends.llvm.native.parse_table: a name, or `#<float>` for a constant."""
    if isinstance(operand, float):
        return f"#{operand!r}"
    if not operand or operand[0] == "#" or len(operand.split()) != 1:
        raise CodegenError(f"cannot write the name {operand!r} into an instruction table")
    return operand


def _table(code: list[tuple[Any, ...]]) -> list[str]:
    """Instruction tables as text, one instruction per line (parsed only when a kernel is compiled)."""
    words: dict[Any, str] = {}  # names recur many times: check each once
    lines = []
    for ins in code:
        line = []
        for w in ins:
            word = words.get(w) if not isinstance(w, float) else None
            if word is None:
                word = words[w] = _word(w)
            line.append(word)
        lines.append(" ".join(line))
    return lines


def _inputs(inputs: dict[str, tuple[str, int]]) -> list[str]:
    return [f"{_word(name)} {source} {index}" for name, (source, index) in inputs.items()]


def _assign_numbered(printer: TacPrinter, prefix: str, exprs: Sequence[sp.Expr]) -> list[str]:
    """Assign each expression to a variable named prefix0, prefix1, ... (the names the kernel reads back)."""
    names = [f"{prefix}{k}" for k in range(len(exprs))]
    for name, expr in zip(names, exprs, strict=True):
        printer.assign(name, expr)
    return names


def _kernel_context(name: str, spec: Kernel, names: dict[sp.Symbol, str], theta: tuple, data: tuple) -> dict:
    ir = spec.ir
    if spec.reduces:
        ir = split_products(ir)
        for sym in ir.product_symbols:
            names.setdefault(sym, sym.name)
        for sym in ir.sum_symbols:
            names.setdefault(sym, sym.name)
    read = set(ir.theta)  # a kernel built on fewer parameters (the sparse quadratic form: none) reads only those
    theta_inputs = {names[p]: ("theta", k) for k, p in enumerate(theta) if p in read}
    consts = [names[a.target] for a in ir.prologue]
    const_inputs = {c: ("consts", k) for k, c in enumerate(consts)}
    data_inputs = {names[x]: ("X", j) for j, x in enumerate(data)}

    prologue = TacPrinter(names, prefix="pv")
    for a in ir.prologue:
        prologue.assign(names[a.target], a.expr)

    body = TacPrinter(names, prefix="bv")
    for a in ir.body:
        body.assign(names[a.target], a.expr)
    sum_names = _assign_numbered(body, "s", ir.sums)
    out_names = _assign_numbered(body, "o", ir.outputs)

    epilogue = TacPrinter(names, prefix="ev")
    for a in ir.epilogue:
        epilogue.assign(names[a.target], a.expr)
    results = _assign_numbered(epilogue, "r", [e / ir.n_symbol for e in ir.results])
    totals = [*ir.sum_symbols, *ir.product_symbols]
    sum_inputs = {names[s]: ("totals", k) for k, s in enumerate(totals)}
    factor_index: dict[sp.Expr, int] = {}  # first-seen order; a list lookup here was quadratic in P
    for pair in ir.products:
        for atom in pair:
            factor_index.setdefault(atom, len(factor_index))
    factors = list(factor_index)
    products = [(factor_index[u], factor_index[v]) for u, v in ir.products]
    epilogue_inputs = {**theta_inputs, **const_inputs, **sum_inputs, names[ir.n_symbol]: ("n", 0)}

    return {
        "name": name,
        "upper": name.upper(),
        "doc": spec.description,
        "reduces": spec.reduces,
        "out_ndim": spec.out_ndim,
        "factors": repr(tuple(names[f] for f in factors)),
        "products": repr(tuple(products)),
        "prologue": _table(prologue.code),
        "prologue_inputs": _inputs(theta_inputs),
        "consts": repr(tuple(consts)),
        "body": _table(body.code),
        "body_inputs": _inputs({**theta_inputs, **const_inputs, **data_inputs}),
        "sums": repr(tuple(sum_names)),
        "outputs": repr(tuple(out_names)),
        "epilogue": _table(epilogue.code),
        "epilogue_inputs": _inputs(epilogue_inputs),
        "results": repr(tuple(results)),
        "ops": len(body.code),
    }


def generate_llvm_source(derivation: Derivation, kernels: KernelSet, *, dtype: Any, cache_key: str) -> str:
    """The text of the generated llvm module for `kernels` (the IR of `derivation`) in `dtype`."""
    model = derivation.model
    return render_llvm_module(
        kernels,
        theta=model.params,
        data=data_columns(kernels.all()),
        dtype=dtype,
        cache_key=cache_key,
        name=model.name,
        model_hash=model.hash,
        # order="none": sympy's canonical printing order costs memory ~ terms × symbols on huge formulas
        formula=" ".join(sp.sstr(model.log_f, order="none")[:2000].split()),
        quadratic_in_data=kernels.data_degree <= 2,
    )


def generate_moments_source(dim: int, *, dtype: Any, cache_key: str) -> str:
    """Sums of (x − s) and (x − s)(x − s)ᵀ (j ≤ k) over rows, for a shift s passed as θ (symsm/runtime/moments.py)."""
    x = sp.symbols(f"x0:{dim}", real=True)
    shift = sp.symbols(f"s0:{dim}", real=True)
    u = [xi - si for xi, si in zip(x, shift, strict=True)]
    exprs = [*u, *(u[j] * u[k] for j in range(dim) for k in range(j, dim))]
    ir = build_forward_ir(exprs, shift, x, mode="sum")
    kernels = KernelSet(
        {
            "moments": Kernel(
                ir, SUMS, "[x - s, (x - s)(x - s)^T for j <= k]: means over rows, for a shift s passed as theta."
            )
        }
    )
    return render_llvm_module(
        kernels,
        theta=tuple(shift),
        data=tuple(x),
        dtype=dtype,
        cache_key=cache_key,
        name=f"second_moments_{dim}",
        model_hash="-",
        formula="(x - s), (x - s)(x - s)^T",
        quadratic_in_data=False,
    )


def render_llvm_module(
    kernels: KernelSet,
    *,
    theta: tuple[sp.Symbol, ...],
    data: tuple[sp.Symbol, ...],
    dtype: Any,
    cache_key: str,
    name: str,
    model_hash: str,
    formula: str,
    quadratic_in_data: bool,
) -> str:
    names = symbol_names(theta, data, *kernels.all().values())
    contexts = [_kernel_context(n, spec, names, theta, data) for n, spec in kernels.items()]
    return render(
        "symsm.backends.llvm",
        "llvm.py.j2",
        version=__version__,
        model_name=name,
        model_hash=model_hash,
        cache_key=cache_key,
        dtype=np.dtype(dtype).name,
        dim=len(data),
        n_params=len(theta),
        param_names=repr([str(p) for p in theta]),
        data_names=repr([str(x) for x in data]),
        log_f=formula[:400].replace('"""', "'''").replace("\\", "\\\\"),
        rows_per_block=ROWS_PER_BLOCK,
        max_blocks=MAX_BLOCKS,
        quadratic_in_data=quadratic_in_data,
        kernels=contexts,
    )
