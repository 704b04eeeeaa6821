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
    if not (
        isinstance(ty, types.Array)
        and ty.ndim == ndim
        and ty.layout == "C"
        and ty.dtype in (types.float64, types.float32)
    ):
        raise TypeError(f"{what} must be a C-contiguous {ndim}-D float array, got {ty}")


def _scalar_loader(
    context: Any,
    builder: ir.IRBuilder,
    sources: Mapping[str, tuple[ir.Value, ir.Type]],
    inputs: Mapping[str, tuple[str, int]],
    ctype: ir.Type,
    scalars: Mapping[str, ir.Value],
):
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
                name: _data(context, builder, ty, v) for name, ty, v in zip(array_args, sig.args, llargs, strict=False)
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

TILE = 12  # products accumulated in registers at once (AVX2 has 16 vector registers)
BUFFER_BYTES = 16384  # the per-chunk buffer of product factors stays well inside L1 (measured: 32 KiB spills to L2)


def chunk_rows(n_factors: int, dtype: str) -> int:
    """Rows per chunk for a kernel with `n_factors` product factors: a multiple of the lane count."""
    width = LANES[dtype]
    rows = BUFFER_BYTES // (8 * max(1, n_factors))
    return max(8 * width, min(1024, rows - rows % width))


class _Rows:
    """Emits `for i in range(lo, hi, width)` with the lane mask and clamped row numbers of each step."""

    def __init__(self, builder: ir.IRBuilder, width: int) -> None:
        self.b = builder
        self.width = width
        self.vi = ir.VectorType(I64, width)

    def splat(self, value: ir.Value) -> ir.Value:
        undef = ir.Constant(self.vi, ir.Undefined)
        first = self.b.insert_element(undef, value, ir.Constant(I32, 0))
        return self.b.shuffle_vector(first, undef, ir.Constant(ir.VectorType(I32, self.width), [0] * self.width))

    def loop(self, lo: ir.Value, hi: ir.Value, body: Any, name: str) -> None:
        b = self.b
        head = b.append_basic_block(f"{name}.head")
        block = b.append_basic_block(f"{name}.body")
        done = b.append_basic_block(f"{name}.done")
        before = b.block
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, f"{name}.i")
        i.add_incoming(lo, before)
        b.cbranch(b.icmp_signed("<", i, hi), block, done)
        b.position_at_end(block)
        iv = b.add(self.splat(i), ir.Constant(self.vi, list(range(self.width))))
        hiv = self.splat(hi)
        mask = b.icmp_signed("<", iv, hiv)
        rows = b.select(mask, iv, b.sub(hiv, ir.Constant(self.vi, [1] * self.width)))
        body(i, mask, rows)
        i.add_incoming(b.add(i, ir.Constant(I64, self.width)), b.block)
        b.branch(head)
        b.position_at_end(done)


def _row_loader(
    builder: ir.IRBuilder,
    emitter_ref: list,
    inputs: Mapping[str, tuple[str, int]],
    ptrs: dict,
    rows: ir.Value,
    dim: int,
    width: int,
    ctype: ir.Type,
) -> Any:
    """Loads table inputs for one step of the row loop: θ and constants splatted, data columns per lane.

    With 4 lanes of float64, four consecutive columns are read as four row vectors and transposed with
    shuffles (12 instructions for 16 values instead of 16 scalar loads and 12 inserts).
    """
    vty = ir.VectorType(ctype, width)
    offsets = builder.mul(rows, ir.Constant(ir.VectorType(I64, width), [dim] * width))
    lane_offsets = [builder.extract_element(offsets, ir.Constant(I32, lane)) for lane in range(width)]
    columns: dict[int, ir.Value] = {}
    transpose = width == 4 and ctype == F64

    def load_group(first: int) -> None:
        row_vecs = []
        for off in lane_offsets:
            at = builder.gep(ptrs["X"], [builder.add(off, ir.Constant(I64, first))])
            row_vecs.append(builder.load(builder.bitcast(at, ir.PointerType(vty)), align=8))
        r0, r1, r2, r3 = row_vecs

        def shuffle(a: ir.Value, b: ir.Value, mask: list[int]) -> ir.Value:
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, 4), mask))

        t0, t1 = shuffle(r0, r1, [0, 4, 2, 6]), shuffle(r0, r1, [1, 5, 3, 7])
        t2, t3 = shuffle(r2, r3, [0, 4, 2, 6]), shuffle(r2, r3, [1, 5, 3, 7])
        columns[first] = shuffle(t0, t2, [0, 1, 4, 5])
        columns[first + 1] = shuffle(t1, t3, [0, 1, 4, 5])
        columns[first + 2] = shuffle(t0, t2, [2, 3, 6, 7])
        columns[first + 3] = shuffle(t1, t3, [2, 3, 6, 7])

    def load(name: str) -> ir.Value:
        source, index = inputs[name]
        if source == "X":
            if index in columns:
                return columns[index]
            if transpose and index < dim - dim % 4:
                load_group(index - index % 4)
                return columns[index]
            vec = ir.Constant(vty, ir.Undefined)
            for lane, off in enumerate(lane_offsets):
                at = builder.add(off, ir.Constant(I64, index))
                vec = builder.insert_element(vec, _load(builder, ptrs["X"], at, ctype), ir.Constant(I32, lane))
            return vec
        return emitter_ref[0].splat(_load(builder, ptrs[source], index, ctype))

    return load


def _horizontal_sum(builder: ir.IRBuilder, vec: ir.Value, width: int) -> ir.Value:
    total = builder.extract_element(vec, ir.Constant(I32, 0))
    for lane in range(1, width):  # fixed order: deterministic
        total = builder.fadd(total, builder.extract_element(vec, ir.Constant(I32, lane)))
    return total


def sum_block_kernel(
    code: Sequence[Sequence[Any]],
    inputs: Mapping[str, tuple[str, int]],
    sums: Sequence[str],
    dim: int,
    dtype: str,
    factors: Sequence[str] = (),
    products: Sequence[tuple[int, int]] = (),
) -> Any:
    """f(theta, consts, X, start, stop, buf, out) over rows [start, stop):
    out[k] = Σ sums[k] for k < len(sums), then out[len(sums) + p] = Σ factors[u]·factors[v] for (u, v) = products[p].

    Rows are processed in chunks; each chunk's factor values go to `buf` (len ≥ chunk_rows × len(factors)),
    then every product is summed over the chunk in register tiles of TILE accumulators.
    """
    ctype = _llvm_type(dtype)
    width = LANES[dtype]
    code = tuple(tuple(i) for i in code)
    n_factors = len(factors)
    chunk = chunk_rows(n_factors, dtype) if products else 1 << 40
    tiles: list[tuple[int, list[tuple[int, int]]]] = []  # (u, [(v, product index)...])
    by_u: dict[int, list[tuple[int, int]]] = {}
    for p, (u, v) in enumerate(products):
        by_u.setdefault(u, []).append((v, p))
    for u, vs in by_u.items():
        for k in range(0, len(vs), TILE):
            tiles.append((u, vs[k : k + TILE]))

    @intrinsic
    def kernel(typingctx: Any, theta: Any, consts: Any, X: Any, start: Any, stop: Any, buf: Any, out: Any) -> Any:
        _check_array(theta, "theta", 1)
        _check_array(consts, "consts", 1)
        _check_array(X, "X", 2)
        _check_array(buf, "buf", 1)
        _check_array(out, "out", 1)

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
            b = builder
            ptrs = {
                name: _data(context, b, sig.args[k], args[k]) for k, name in ((0, "theta"), (1, "consts"), (2, "X"))
            }
            buf_p = _data(context, b, sig.args[5], args[5])
            out_p = _data(context, b, sig.args[6], args[6])
            start_v = context.cast(b, args[3], sig.args[3], types.int64)
            stop_v = context.cast(b, args[4], sig.args[4], types.int64)
            acc_ty = ir.VectorType(F64, width)
            cvec = ir.VectorType(ctype, width)
            zero_acc = ir.Constant(acc_ty, [0.0] * width)
            zero_c = ir.Constant(cvec, [0.0] * width)
            accs = [cgutils.alloca_once_value(b, zero_acc) for _ in sums]
            paccs = [cgutils.alloca_once_value(b, zero_acc) for _ in products]
            rows = _Rows(b, width)
            chunk_c = ir.Constant(I64, chunk)
            buf_vec = ir.PointerType(cvec)

            def chunk_body(c: ir.Value, _mask: ir.Value, _rows: ir.Value) -> None:
                c_end = b.select(b.icmp_signed("<", b.add(c, chunk_c), stop_v), b.add(c, chunk_c), stop_v)

                def row_body(i: ir.Value, mask: ir.Value, rows_v: ir.Value) -> None:
                    ref: list[_Emitter] = []
                    emitter = _Emitter(
                        context, b, ctype, width, _row_loader(b, ref, inputs, ptrs, rows_v, dim, width, ctype)
                    )
                    ref.append(emitter)
                    emitter.run(code)
                    for acc, name in zip(accs, sums, strict=True):
                        value = _convert(b, emitter.operand(name), acc_ty)
                        b.store(b.fadd(b.load(acc), b.select(mask, value, zero_acc)), acc)
                    offset = b.sub(i, c)
                    for f, name in enumerate(factors):
                        value = b.select(mask, emitter.operand(name), zero_c)  # padding lanes contribute 0
                        at = b.gep(buf_p, [b.add(offset, ir.Constant(I64, f * chunk))])
                        b.store(value, b.bitcast(at, buf_vec), align=8)

                rows.loop(c, c_end, row_body, "rows")
                if not products:
                    return
                n_rows = b.sub(c_end, c)
                for u, vs in tiles:
                    regs = [cgutils.alloca_once_value(b, zero_acc) for _ in vs]

                    def tile_body(
                        t: ir.Value, _m: ir.Value, _r: ir.Value, u: int = u, vs: list = vs, regs: list = regs
                    ) -> None:
                        def vec_at(f: int) -> ir.Value:
                            at = b.gep(buf_p, [b.add(t, ir.Constant(I64, f * chunk))])
                            return _convert(b, b.load(b.bitcast(at, buf_vec), align=8), acc_ty)

                        uv = vec_at(u)
                        for reg, (v, _) in zip(regs, vs, strict=True):
                            fma = declare_intrinsic(b.module, "llvm.fma", acc_ty, 3)
                            b.store(b.call(fma, [uv, vec_at(v), b.load(reg)]), reg)

                    rows.loop(ir.Constant(I64, 0), n_rows, tile_body, "tile")
                    for reg, (_, p) in zip(regs, vs, strict=True):
                        b.store(b.fadd(b.load(paccs[p]), b.load(reg)), paccs[p])
                        b.store(zero_acc, reg)

            _ChunkLoop(b, chunk).run(start_v, stop_v, chunk_body)
            for k, acc in enumerate([*accs, *paccs]):
                _store(b, _horizontal_sum(b, b.load(acc), width), out_p, k)
            return context.get_dummy_value()

        return signature(types.void, theta, consts, X, start, stop, buf, out), codegen

    return kernel


class _ChunkLoop:
    """for c in range(lo, hi, chunk) (no lanes)."""

    def __init__(self, builder: ir.IRBuilder, chunk: int) -> None:
        self.b = builder
        self.chunk = chunk

    def run(self, lo: ir.Value, hi: ir.Value, body: Any) -> None:
        b = self.b
        head = b.append_basic_block("chunk.head")
        block = b.append_basic_block("chunk.body")
        done = b.append_basic_block("chunk.done")
        before = b.block
        b.branch(head)
        b.position_at_end(head)
        c = b.phi(I64, "chunk.c")
        c.add_incoming(lo, before)
        b.cbranch(b.icmp_signed("<", c, hi), block, done)
        b.position_at_end(block)
        body(c, None, None)
        c.add_incoming(b.add(c, ir.Constant(I64, self.chunk)), b.block)
        b.branch(head)
        b.position_at_end(done)


def row_block_kernel(
    code: Sequence[Sequence[Any]],
    inputs: Mapping[str, tuple[str, int]],
    outputs: Sequence[str],
    dim: int,
    dtype: str,
    out_ndim: int,
) -> Any:
    """f(theta, consts, X, start, stop, out): out[row] (1-D) or out[row, k] (2-D) = outputs[k]."""
    ctype = _llvm_type(dtype)
    width = LANES[dtype]
    code = tuple(tuple(i) for i in code)

    @intrinsic
    def kernel(typingctx: Any, theta: Any, consts: Any, X: Any, start: Any, stop: Any, out: Any) -> Any:
        _check_array(theta, "theta", 1)
        _check_array(consts, "consts", 1)
        _check_array(X, "X", 2)
        _check_array(out, "out", out_ndim)

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
            b = builder
            ptrs = {
                name: _data(context, b, sig.args[k], args[k]) for k, name in ((0, "theta"), (1, "consts"), (2, "X"))
            }
            out_p = _data(context, b, sig.args[5], args[5])
            start_v = context.cast(b, args[3], sig.args[3], types.int64)
            stop_v = context.cast(b, args[4], sig.args[4], types.int64)

            def row_body(i: ir.Value, mask: ir.Value, rows_v: ir.Value) -> None:
                ref: list[_Emitter] = []
                emitter = _Emitter(
                    context, b, ctype, width, _row_loader(b, ref, inputs, ptrs, rows_v, dim, width, ctype)
                )
                ref.append(emitter)
                emitter.run(code)
                for k, name in enumerate(outputs):
                    value = emitter.operand(name)
                    for lane in range(width):
                        idx = ir.Constant(I32, lane)
                        with cgutils.if_likely(b, b.extract_element(mask, idx)):
                            row = b.extract_element(rows_v, idx)
                            at = (
                                row
                                if out_ndim == 1
                                else b.add(b.mul(row, ir.Constant(I64, len(outputs))), ir.Constant(I64, k))
                            )
                            _store(b, b.extract_element(value, idx), out_p, at)

            _Rows(b, width).loop(start_v, stop_v, row_body, "rows")
            return context.get_dummy_value()

        return signature(types.void, theta, consts, X, start, stop, out), codegen

    return kernel
