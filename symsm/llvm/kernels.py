"""numba intrinsics that compile three-address-code tables (symsm/codegen/tac.py) to LLVM IR.

A generated CPU module keeps numba as its host — `@njit(parallel=True, cache=True)` functions, `prange`
over blocks of rows, a fixed-order reduction — and calls these intrinsics for the arithmetic:

* `section_kernel`: straight-line scalar code once per call (the θ-only prologue, the epilogue).
* `sum_block_kernel`: a loop over rows [start, stop) of X, `LANES` rows at a time in SIMD registers,
  accumulating the per-row sums in float64 vectors; the last, partial group of rows is masked (its extra
  lanes recompute the last row and contribute nothing). The lanes are added in a fixed order at the end.
* `row_block_kernel`: the same loop writing per-row outputs.

numba's type inference and lowering cost about a millisecond per Python operation, so a 10 000-operation
kernel body written as Python takes minutes to compile; built here it takes well under a second before
LLVM's optimiser. The tables are data in the generated module; the IR is built only when numba compiles
(on a cache miss).

Arithmetic carries LLVM's `contract` flag (multiply-adds may fuse into FMAs: fewer roundings, never more);
exp, expm1, log, log1p and tanh use the vectorised implementations of `symsm.llvm.vecmath`; other functions
call numba's scalar implementations lane by lane.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.typing import signature
from numba.extending import intrinsic

from .vecmath import VECTOR_FUNCTIONS, declare_intrinsic, vector_function

__all__ = ["LANES", "row_block_kernel", "section_kernel", "sum_block_kernel"]

LANES = {"float64": 4, "float32": 8}  # one AVX2 register of either type
I64 = ir.IntType(64)
I32 = ir.IntType(32)
F64 = ir.DoubleType()
F32 = ir.FloatType()
_ARITH = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}


def _llvm_type(dtype: str) -> ir.Type:
    return {"float64": F64, "float32": F32}[dtype]


class _Emitter:
    """Emits instructions of a table; scalar (width 1) or on vectors of `width` lanes."""

    def __init__(self, context: Any, builder: ir.IRBuilder, ctype: ir.Type, width: int, loader: Any) -> None:
        self.context = context
        self.b = builder
        self.ctype = ctype  # compute type (double or float)
        self.width = width
        self.ty = ir.VectorType(ctype, width) if width > 1 else ctype
        self.env: dict[str, ir.Value] = {}
        self.loader = loader  # name → value, for names no instruction defines

    def const(self, value: float) -> ir.Constant:
        if self.width == 1:
            return ir.Constant(self.ctype, value)
        return ir.Constant(self.ty, [value] * self.width)

    def splat(self, scalar: ir.Value) -> ir.Value:
        if self.width == 1:
            return scalar
        undef = ir.Constant(self.ty, ir.Undefined)
        first = self.b.insert_element(undef, scalar, ir.Constant(I32, 0))
        mask = ir.Constant(ir.VectorType(I32, self.width), [0] * self.width)
        return self.b.shuffle_vector(first, undef, mask)

    def operand(self, x: Any) -> ir.Value:
        if isinstance(x, float):
            return self.const(x)
        value = self.env.get(x)
        if value is None:
            value = self.loader(x)
            self.env[x] = value
        return value

    def run(self, code: Sequence[Sequence[Any]]) -> None:
        for dst, op, *args in code:
            self.env[dst] = self._instruction(op, args)

    def _instruction(self, op: str, args: list[Any]) -> ir.Value:
        b = self.b
        if op in _ARITH:
            instr = getattr(b, _ARITH[op])(self.operand(args[0]), self.operand(args[1]))
            instr.flags.append("contract")
            return instr
        if op == "neg":
            return b.fneg(self.operand(args[0]))
        if op == "copy":
            return self.operand(args[0])
        if op == "sqrt":
            return b.call(declare_intrinsic(b.module, "llvm.sqrt", self.ty, 1), [self.operand(args[0])])
        if op == "call":
            return self._call(args[0], [self.operand(args[1])])
        if op == "pow":
            return self._call("pow", [self.operand(args[0]), self.operand(args[1])])
        raise ValueError(f"unknown instruction {op!r}")

    def _call(self, name: str, values: list[ir.Value]) -> ir.Value:
        b = self.b
        if self.width > 1 and name in VECTOR_FUNCTIONS:
            fn = vector_function(b.module, name, self.width)
            if self.ctype == F64:
                return b.call(fn, values)
            wide = ir.VectorType(F64, self.width)
            return b.fptrunc(b.call(fn, [b.fpext(values[0], wide)]), self.ty)
        if self.width == 1:
            return self._scalar_call(name, values)
        out = ir.Constant(self.ty, ir.Undefined)
        for lane in range(self.width):
            idx = ir.Constant(I32, lane)
            lane_args = [b.extract_element(v, idx) for v in values]
            out = b.insert_element(out, self._scalar_call(name, lane_args), idx)
        return out

    def _scalar_call(self, name: str, values: list[ir.Value]) -> ir.Value:
        nbty = types.float64 if self.ctype == F64 else types.float32
        impl = self.context.get_function(getattr(math, name), signature(nbty, *([nbty] * len(values))))
        return impl(self.b, values)


# ---------------------------------------------------------------------- helpers over numba arrays


def _data(context: Any, builder: ir.IRBuilder, ty: types.Array, value: ir.Value) -> ir.Value:
    return context.make_array(ty)(context, builder, value).data


def _load(builder: ir.IRBuilder, ptr: ir.Value, index: ir.Value | int, to: ir.Type) -> ir.Value:
    idx = ir.Constant(I64, index) if isinstance(index, int) else index
    return _convert(builder, builder.load(builder.gep(ptr, [idx])), to)


def _store(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value, index: ir.Value | int) -> None:
    idx = ir.Constant(I64, index) if isinstance(index, int) else index
    target = builder.gep(ptr, [idx])
    builder.store(_convert(builder, value, target.type.pointee), target)


def _convert(builder: ir.IRBuilder, value: ir.Value, to: ir.Type) -> ir.Value:
    if value.type == to:
        return value
    if isinstance(to, ir.VectorType):
        return builder.fpext(value, to) if to.element == F64 else builder.fptrunc(value, to)
    return builder.fpext(value, to) if to == F64 else builder.fptrunc(value, to)


def _check_array(ty: Any, what: str, ndim: int) -> None:
    if not (isinstance(ty, types.Array) and ty.ndim == ndim and ty.layout == "C" and ty.dtype in (
        types.float64, types.float32)):
        raise TypeError(f"{what} must be a C-contiguous {ndim}-D float array, got {ty}")


def _scalar_loader(context: Any, builder: ir.IRBuilder, sources: Mapping[str, tuple[ir.Value, ir.Type]],
                   inputs: Mapping[str, tuple[str, int]], ctype: ir.Type, scalars: Mapping[str, ir.Value]):
    def load(name: str) -> ir.Value:
        try:
            source, index = inputs[name]
        except KeyError:
            raise ValueError(f"the table reads {name!r}, which nothing defines") from None
        if source in scalars:
            return _convert(builder, scalars[source], ctype)
        return _load(builder, sources[source], index, ctype)

    return load


# ---------------------------------------------------------------------- section: straight-line scalar code


def section_kernel(
    code: Sequence[Sequence[Any]],
    inputs: Mapping[str, tuple[str, int]],
    outputs: Sequence[str],
    dtype: str,
    array_args: Sequence[str],
    scalar_args: Sequence[str] = (),
) -> Any:
    """An intrinsic f(*arrays, *scalars, out) running `code` once; `out[k] = outputs[k]`.

    `inputs` maps names the table reads to (argument name, index); a scalar argument is read whole.
    """
    ctype = _llvm_type(dtype)
    code = tuple(tuple(i) for i in code)

    def typer(typingctx: Any, *args: Any) -> Any:
        for name, ty in zip(array_args, args, strict=False):
            _check_array(ty, name, 1)
        _check_array(args[-1], "out", 1)

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, llargs: Any) -> Any:
            sources = {
                name: _data(context, builder, ty, v)
                for name, ty, v in zip(array_args, sig.args, llargs, strict=False)
            }
            scalars = {name: llargs[len(array_args) + k] for k, name in enumerate(scalar_args)}
            loader = _scalar_loader(context, builder, sources, inputs, ctype, scalars)
            emitter = _Emitter(context, builder, ctype, 1, loader)
            emitter.run(code)
            out = _data(context, builder, sig.args[-1], llargs[-1])
            for k, name in enumerate(outputs):
                _store(builder, emitter.operand(name), out, k)
            return context.get_dummy_value()

        return signature(types.void, *args), codegen

    return _intrinsic_of_arity(len(array_args) + len(scalar_args) + 1, typer)


def _intrinsic_of_arity(n: int, typer: Any) -> Any:
    """numba intrinsics need explicit parameters (no *args): wrap `typer` for n arguments."""
    if n == 2:

        def two(typingctx: Any, a: Any, b: Any) -> Any:
            return typer(typingctx, a, b)

        return intrinsic(two)
    if n == 5:

        def five(typingctx: Any, a: Any, b: Any, c: Any, d: Any, e: Any) -> Any:
            return typer(typingctx, a, b, c, d, e)

        return intrinsic(five)
    raise ValueError(f"no section kernel with {n} arguments")


# ---------------------------------------------------------------------- blocks of rows, SIMD across rows


def _block_kernel(
    code: Sequence[Sequence[Any]],
    inputs: Mapping[str, tuple[str, int]],
    dim: int,
    dtype: str,
    *,
    sums: Sequence[str] = (),
    outputs: Sequence[str] = (),
    out_ndim: int = 1,
) -> Any:
    ctype = _llvm_type(dtype)
    width = LANES[dtype]
    code = tuple(tuple(i) for i in code)
    reduce = bool(sums)

    @intrinsic
    def kernel(typingctx: Any, theta: Any, consts: Any, X: Any, start: Any, stop: Any, out: Any) -> Any:
        _check_array(theta, "theta", 1)
        _check_array(consts, "consts", 1)
        _check_array(X, "X", 2)
        _check_array(out, "out", 1 if reduce else out_ndim)
        if not (isinstance(start, types.Integer) and isinstance(stop, types.Integer)):
            raise TypeError("start and stop must be integers")

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
            theta_p = _data(context, builder, sig.args[0], args[0])
            consts_p = _data(context, builder, sig.args[1], args[1])
            x_p = _data(context, builder, sig.args[2], args[2])
            out_p = _data(context, builder, sig.args[5], args[5])
            start_v = context.cast(builder, args[3], sig.args[3], types.int64)
            stop_v = context.cast(builder, args[4], sig.args[4], types.int64)
            vty = ir.VectorType(ctype, width)
            acc_ty = ir.VectorType(F64, width)
            zero_acc = ir.Constant(acc_ty, [0.0] * width)
            accs = [cgutils.alloca_once_value(builder, zero_acc) for _ in sums]

            head = builder.append_basic_block("rows.head")
            body = builder.append_basic_block("rows.body")
            done = builder.append_basic_block("rows.done")
            entry = builder.block
            builder.branch(head)
            builder.position_at_end(head)
            i = builder.phi(I64, "row")
            i.add_incoming(start_v, entry)
            builder.cbranch(builder.icmp_signed("<", i, stop_v), body, done)

            builder.position_at_end(body)
            lanes = ir.Constant(ir.VectorType(I64, width), list(range(width)))
            undef_i = ir.Constant(ir.VectorType(I64, width), ir.Undefined)
            splat_mask = ir.Constant(ir.VectorType(I32, width), [0] * width)
            iv = builder.add(builder.shuffle_vector(builder.insert_element(undef_i, i, ir.Constant(I32, 0)),
                                                    undef_i, splat_mask), lanes)
            stopv = builder.shuffle_vector(builder.insert_element(undef_i, stop_v, ir.Constant(I32, 0)),
                                           undef_i, splat_mask)
            mask = builder.icmp_signed("<", iv, stopv)
            last = builder.sub(stopv, ir.Constant(ir.VectorType(I64, width), [1] * width))
            rows = builder.select(mask, iv, last)  # masked lanes recompute the last row (finite data)
            offsets = builder.mul(rows, ir.Constant(ir.VectorType(I64, width), [dim] * width))
            lane_offsets = [builder.extract_element(offsets, ir.Constant(I32, lane)) for lane in range(width)]

            emitter: _Emitter

            def load(name: str) -> ir.Value:
                source, index = inputs[name]
                if source == "X":
                    vec = ir.Constant(vty, ir.Undefined)
                    for lane, off in enumerate(lane_offsets):
                        at = builder.add(off, ir.Constant(I64, index))
                        vec = builder.insert_element(vec, _load(builder, x_p, at, ctype), ir.Constant(I32, lane))
                    return vec
                ptr = theta_p if source == "theta" else consts_p
                return emitter.splat(_load(builder, ptr, index, ctype))

            emitter = _Emitter(context, builder, ctype, width, load)
            emitter.run(code)
            for acc, name in zip(accs, sums, strict=True):
                value = _convert(builder, emitter.operand(name), acc_ty)
                contribution = builder.select(mask, value, zero_acc)
                total = builder.fadd(builder.load(acc), contribution)
                builder.store(total, acc)
            for k, name in enumerate(outputs):
                value = emitter.operand(name)
                for lane in range(width):
                    idx = ir.Constant(I32, lane)
                    with cgutils.if_likely(builder, builder.extract_element(mask, idx)):
                        row = builder.extract_element(rows, idx)
                        at = row if out_ndim == 1 else builder.add(
                            builder.mul(row, ir.Constant(I64, len(outputs))), ir.Constant(I64, k))
                        _store(builder, builder.extract_element(value, idx), out_p, at)
            i.add_incoming(builder.add(i, ir.Constant(I64, width)), builder.block)
            builder.branch(head)

            builder.position_at_end(done)
            for k, acc in enumerate(accs):
                vec = builder.load(acc)
                total = builder.extract_element(vec, ir.Constant(I32, 0))
                for lane in range(1, width):  # fixed order: deterministic
                    total = builder.fadd(total, builder.extract_element(vec, ir.Constant(I32, lane)))
                _store(builder, total, out_p, k)
            return context.get_dummy_value()

        return signature(types.void, theta, consts, X, start, stop, out), codegen

    return kernel


def sum_block_kernel(code: Sequence[Sequence[Any]], inputs: Mapping[str, tuple[str, int]], sums: Sequence[str],
                     dim: int, dtype: str) -> Any:
    """f(theta, consts, X, start, stop, out): out[k] = Σ_{rows in [start, stop)} sums[k]."""
    return _block_kernel(code, inputs, dim, dtype, sums=sums)


def row_block_kernel(code: Sequence[Sequence[Any]], inputs: Mapping[str, tuple[str, int]], outputs: Sequence[str],
                     dim: int, dtype: str, out_ndim: int) -> Any:
    """f(theta, consts, X, start, stop, out): out[row] (1-D) or out[row, k] (2-D) = outputs[k]."""
    return _block_kernel(code, inputs, dim, dtype, outputs=outputs, out_ndim=out_ndim)
