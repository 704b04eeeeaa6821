"""LLVM IR for the CPU kernels, built from three-address-code tables (symsm/backends/llvm/tac.py).

Each function has a plain C signature; symsm/backends/llvm/native.py compiles a module of them to machine code
(cached as an object file next to the generated module) and calls them through ctypes. `T` is the kernel's
dtype (double or float):

* `build_section`: straight-line scalar code once per call — the θ-only prologue
  `void f(T* theta, T* consts)` and the epilogue `void f(T* theta, T* consts, double* totals, double n,
  double* result)`.
* `build_sum_block`: `void f(T* theta, T* consts, T* X, i64 start, i64 stop, T* buf, double* out)`, a loop
  over rows [start, stop) of X, `LANES` rows at a time in SIMD registers, accumulating the per-row sums in
  float64 vectors (float32 kernels: in float32 lanes within groups of at most `F32_CHUNK` rows, each group's
  partial sums then added in float64, so the float32 rounding of a sum covers ≤ 32 terms per lane whatever
  the number of rows, and no lane is converted per row); the last, partial group of rows is masked (its extra
  lanes recompute the last row and contribute nothing). The lanes are added in a fixed order at the end.
  The same pass checks that X is finite (one more output), so callers need no separate pass over X.
* `build_row_block`: `void f(T* theta, T* consts, T* X, i64 start, i64 stop, double* out)`, the same loop
  writing per-row outputs.

Building the IR here rather than through numba's Python front end matters: numba's type inference and
lowering cost about a millisecond per Python operation, so a 10 000-operation kernel body written as Python
takes minutes to compile, and numba's O3 pipeline re-optimises code that is already in SSA form, common
subexpressions shared, with nothing left to vectorise.

Arithmetic carries LLVM's `contract` flag (multiply-adds may fuse into FMAs: fewer roundings, never more);
functions whose record in symsm/core/functions.py names a vectorised implementation (exp, expm1, log, log1p,
tanh) use those of `symsm.backends.llvm.vecmath` (in the kernel's dtype); other functions call the C library
lane by lane.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llvmlite import ir

from ...core.functions import FUNCTIONS
from .vecmath import declare_intrinsic, vector_function

__all__ = ["LANES", "build_block_loop", "build_row_block", "build_section", "build_sum_block", "chunk_rows"]

LANES = {"float64": 4, "float32": 8}  # one AVX2 register of either type
I64 = ir.IntType(64)
I32 = ir.IntType(32)
F64 = ir.DoubleType()
F32 = ir.FloatType()
_ARITH = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
Table = Sequence[Sequence[Any]]
Inputs = Mapping[str, tuple[str, int]]
#: `call` name (the C library's) → vectorised implementation in vecmath, from symsm/core/functions.py
_VECTOR = {f.libm(): f.vector for f in FUNCTIONS if f.vector is not None}
#: calls lowered to LLVM intrinsics instead of the C library (the semantics of C's fmin and fmax)
_INTRINSIC = {"fmin": "llvm.minnum", "fmax": "llvm.maxnum"}


def _llvm_type(dtype: str) -> ir.Type:
    return {"float64": F64, "float32": F32}[dtype]


class _Emitter:
    """Emits instructions of a table; scalar (width 1) or on vectors of `width` lanes."""

    def __init__(self, builder: ir.IRBuilder, ctype: ir.Type, width: int, loader: Any) -> None:
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

    def run(self, code: Sequence[Sequence[Any]], defined: Any = None) -> None:
        """Emit `code`; `defined(name, value)`, if given, right after each instruction."""
        for dst, op, *args in code:
            value = self.env[dst] = self._instruction(op, args)
            if defined is not None:
                defined(dst, value)

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
            return self._call(args[0], [self.operand(a) for a in args[1:]])
        if op == "step":  # H(u): 1 above 0, 0 below, ½ at 0 (and for NaN)
            u, zero = self.operand(args[0]), self.const(0.0)
            above = b.select(b.fcmp_ordered(">", u, zero), self.const(1.0), self.const(0.5))
            return b.select(b.fcmp_ordered("<", u, zero), zero, above)
        if op == "pow":
            return self._call("pow", [self.operand(args[0]), self.operand(args[1])])
        raise ValueError(f"unknown instruction {op!r}")

    def _call(self, name: str, values: list[ir.Value]) -> ir.Value:
        b = self.b
        if name in _INTRINSIC:  # fmin, fmax: LLVM's minnum / maxnum, on scalars and vectors alike
            return b.call(declare_intrinsic(b.module, _INTRINSIC[name], self.ty, len(values)), values)
        if self.width > 1 and name in _VECTOR:  # in the kernel's own precision (float32 lanes stay float32)
            return b.call(vector_function(b.module, _VECTOR[name], self.width, self.ctype), values)
        if self.width == 1:
            return self._scalar_call(name, values)
        out = ir.Constant(self.ty, ir.Undefined)
        for lane in range(self.width):
            idx = ir.Constant(I32, lane)
            lane_args = [b.extract_element(v, idx) for v in values]
            out = b.insert_element(out, self._scalar_call(name, lane_args), idx)
        return out

    def _scalar_call(self, name: str, values: list[ir.Value]) -> ir.Value:
        """The C library's function (`name`, or `namef` in float32), resolved when the object is loaded."""
        symbol = name if self.ctype == F64 else f"{name}f"
        fn = self.b.module.globals.get(symbol)
        if fn is None:
            fn = ir.Function(self.b.module, ir.FunctionType(self.ctype, [self.ctype] * len(values)), symbol)
            fn.attributes.add("nounwind")
        return self.b.call(fn, values)


# ---------------------------------------------------------------------- helpers


def _function(module: ir.Module, symbol: str, args: Sequence[tuple[str, ir.Type]]) -> tuple[ir.Function, dict]:
    """A new external function `void symbol(args...)`; pointer arguments do not alias each other."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ty for _, ty in args]), symbol)
    fn.attributes.add("nounwind")
    values = {}
    for (name, ty), arg in zip(args, fn.args, strict=True):
        arg.name = name
        if isinstance(ty, ir.PointerType):
            arg.add_attribute("noalias")
        values[name] = arg
    return fn, values


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


def _scalar_loader(
    builder: ir.IRBuilder, values: Mapping[str, ir.Value], inputs: Inputs, ctype: ir.Type, scalars: Sequence[str]
):
    def load(name: str) -> ir.Value:
        try:
            source, index = inputs[name]
        except KeyError:
            raise ValueError(f"the table reads {name!r}, which nothing defines") from None
        if source in scalars:
            return _convert(builder, values[source], ctype)
        return _load(builder, values[source], index, ctype)

    return load


def _alloca_zero(builder: ir.IRBuilder, ty: ir.Type) -> ir.Value:
    """A stack slot in the entry block (SROA turns it into registers), set to zero here."""
    with builder.goto_entry_block():
        slot = builder.alloca(ty)
    builder.store(ir.Constant(ty, None), slot)
    return slot


# ---------------------------------------------------------------------- section: straight-line scalar code


def build_section(
    module: ir.Module,
    symbol: str,
    code: Table,
    inputs: Inputs,
    outputs: Sequence[str],
    dtype: str,
    pointers: Sequence[tuple[str, str]],
    scalars: Sequence[str] = (),
    out_dtype: str = "float64",
) -> ir.Function:
    """`void symbol(*pointers, *scalars, out)` running `code` once in `dtype`; `out[k] = outputs[k]`.

    `pointers` are (argument name, element dtype); `inputs` maps names the table reads to (argument name,
    index); a scalar (double) argument is read whole.
    """
    ctype = _llvm_type(dtype)
    args = [(name, ir.PointerType(_llvm_type(dt))) for name, dt in pointers]
    args += [(name, F64) for name in scalars] + [("out", ir.PointerType(_llvm_type(out_dtype)))]
    fn, values = _function(module, symbol, args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    emitter = _Emitter(b, ctype, 1, _scalar_loader(b, values, inputs, ctype, scalars))
    emitter.run(code)
    for k, name in enumerate(outputs):
        _store(b, emitter.operand(name), values["out"], k)
    b.ret_void()
    return fn


# ---------------------------------------------------------------------- blocks of rows, SIMD across rows

TILE = 12  # products accumulated in registers at once (AVX2 has 16 vector registers)
TILE_AVX512 = 24  # with AVX-512VL (32 vector registers; measured: float32 Student-t d = 8 −10 %, others level)
BUFFER_BYTES = 16384  # the per-chunk buffer of product factors stays well inside L1 (measured: 32 KiB spills to L2)
# float32: rows per chunk, and per group of chunks, at most. Sums and products are accumulated in float32 lanes
# within a group (at most F32_CHUNK / 8 = 32 additions per lane) and each group's partial sums added to float64
# accumulators, so the float32 rounding of a sum is that of ≤ 32 terms whatever the number of rows (a block of
# 10⁸ rows included; benchmarks/FLOAT32.md, "Accuracy", has the bound).
F32_CHUNK = 256


def chunk_rows(n_factors: int, dtype: str) -> int:
    """Rows per chunk for a kernel with `n_factors` product factors: a multiple of the lane count."""
    width = LANES[dtype]
    itemsize = 8 if dtype == "float64" else 4
    rows = BUFFER_BYTES // (itemsize * max(1, n_factors))
    return max(8 * width, min(1024 if dtype == "float64" else F32_CHUNK, rows - rows % width))


def buffer_size(n_factors: int, dtype: str, n_products: int = 0) -> int:
    """Elements of the `buf` argument of a sum block with `n_factors` product factors and `n_products`
    products: a chunk's factor values, then (float32) each product's sum in float32 lanes."""
    if not n_factors:
        return 1
    lanes = n_products * LANES[dtype] if dtype == "float32" else 0
    return chunk_rows(n_factors, dtype) * n_factors + lanes


def _block_args(dtype: str, last: list[tuple[str, ir.Type]]) -> list[tuple[str, ir.Type]]:
    pt = ir.PointerType(_llvm_type(dtype))
    return [("theta", pt), ("consts", pt), ("X", pt), ("start", I64), ("stop", I64), *last]


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
) -> tuple[Any, Any]:
    """(load, column): load(name) gives a table input for one step of the row loop (θ and constants
    splatted, data columns per lane), column(j) data column j whether the table reads it or not.

    With 4 lanes of float64, four consecutive columns are read as four row vectors and transposed with
    shuffles (12 instructions for 16 values instead of 16 scalar loads and 12 inserts); with 8 lanes of float32,
    as eight row vectors of 4, paired into 8-lane vectors (rows r and r + 4) and transposed within each
    128-bit half (20 instructions for 32 values instead of 32 loads and 28 inserts).
    """
    vty = ir.VectorType(ctype, width)
    offsets = builder.mul(rows, ir.Constant(ir.VectorType(I64, width), [dim] * width))
    lane_offsets = [builder.extract_element(offsets, ir.Constant(I32, lane)) for lane in range(width)]
    columns: dict[int, ir.Value] = {}
    transpose = (width == 4 and ctype == F64) or (width == 8 and ctype == F32)

    def load_group32(first: int) -> None:
        v4, i32x8 = ir.VectorType(ctype, 4), ir.VectorType(I32, 8)
        row_vecs = []
        for off in lane_offsets:
            at = builder.gep(ptrs["X"], [builder.add(off, ir.Constant(I64, first))])
            row_vecs.append(builder.load(builder.bitcast(at, ir.PointerType(v4)), align=4))

        def shuffle(a: ir.Value, b: ir.Value, mask: list[int]) -> ir.Value:
            return builder.shuffle_vector(a, b, ir.Constant(i32x8, mask))

        q = [shuffle(row_vecs[k], row_vecs[k + 4], list(range(8))) for k in range(4)]  # rows k | k + 4
        lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
        t0, t1, t2, t3 = (
            shuffle(q[0], q[1], lo),
            shuffle(q[0], q[1], hi),
            shuffle(q[2], q[3], lo),
            shuffle(q[2], q[3], hi),
        )
        even, odd = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
        columns[first] = shuffle(t0, t2, even)
        columns[first + 1] = shuffle(t0, t2, odd)
        columns[first + 2] = shuffle(t1, t3, even)
        columns[first + 3] = shuffle(t1, t3, odd)

    def load_group(first: int) -> None:
        if ctype == F32:
            load_group32(first)
            return
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

    def column(index: int) -> ir.Value:
        if index in columns:
            return columns[index]
        if transpose and index < dim - dim % 4:
            load_group(index - index % 4)
            return columns[index]
        vec = ir.Constant(vty, ir.Undefined)
        for lane, off in enumerate(lane_offsets):
            at = builder.add(off, ir.Constant(I64, index))
            vec = builder.insert_element(vec, _load(builder, ptrs["X"], at, ctype), ir.Constant(I32, lane))
        columns[index] = vec
        return vec

    def load(name: str) -> ir.Value:
        source, index = inputs[name]
        if source == "X":
            return column(index)
        return emitter_ref[0].splat(_load(builder, ptrs[source], index, ctype))

    return load, column


def _tree_sum(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
    """Σ values added pairwise (a short dependency chain)."""
    while len(values) > 1:
        pairs = [builder.fadd(values[k], values[k + 1]) for k in range(0, len(values) - 1, 2)]
        values = pairs + values[len(values) - len(values) % 2 :]
    return values[0]


def _horizontal_sum(builder: ir.IRBuilder, vec: ir.Value, width: int) -> ir.Value:
    total = builder.extract_element(vec, ir.Constant(I32, 0))
    for lane in range(1, width):  # fixed order: deterministic
        total = builder.fadd(total, builder.extract_element(vec, ir.Constant(I32, lane)))
    return total


def build_sum_block(
    module: ir.Module,
    symbol: str,
    code: Table,
    inputs: Inputs,
    sums: Sequence[str],
    dim: int,
    dtype: str,
    factors: Sequence[str] = (),
    products: Sequence[tuple[int, int]] = (),
    tile: int = TILE,
    check_finite: bool = False,
) -> ir.Function:
    """`void symbol(theta, consts, X, start, stop, buf, out)` over rows [start, stop) of X (row stride `dim`):
    out[k] = Σ sums[k] for k < len(sums), then out[len(sums) + p] = Σ factors[u]·factors[v] for (u, v) = products[p].
    With `check_finite`, one more output after those: 0 if every value of X in the rows is finite, else NaN
    (per step, 0 · the sum of the row's columns: an infinity or NaN anywhere makes it NaN; a sum that
    overflows from finite values flags too, so a caller re-checks flagged rows exactly). This replaces a
    separate pass over X: the columns are in registers already.

    Rows are processed in chunks; each chunk's factor values go to `buf` (`buffer_size(len(factors))`
    elements), then every product is summed over the chunk in register tiles of `tile` accumulators.
    """
    ctype = _llvm_type(dtype)
    width = LANES[dtype]
    n_factors = len(factors)
    narrow = ctype != F64  # float32: sums and products in float32 within a chunk, then into float64 (F32_CHUNK)
    chunk = chunk_rows(n_factors, dtype) if products or narrow else 1 << 40
    # tiles of TILE products each, products sharing a first factor next to each other (one load serves them);
    # a tile may span several first factors, so that models with few products per factor (Student-t: one)
    # still fill the registers rather than run one short loop per product
    by_u: dict[int, list[tuple[int, int, int]]] = {}
    for p, (u, v) in enumerate(products):
        by_u.setdefault(u, []).append((u, v, p))
    ordered = [entry for entries in by_u.values() for entry in entries]
    tiles = [ordered[k : k + tile] for k in range(0, len(ordered), tile)]

    factor_index = {name: f for f, name in enumerate(factors)}
    cvec = ir.VectorType(ctype, width)
    fn, values = _function(
        module, symbol, _block_args(dtype, [("buf", ir.PointerType(ctype)), ("out", ir.PointerType(F64))])
    )
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ptrs = {name: values[name] for name in ("theta", "consts", "X")}
    buf_p, out_p, start_v, stop_v = values["buf"], values["out"], values["start"], values["stop"]
    acc_ty = ir.VectorType(F64, width)
    zero_c = ir.Constant(cvec, [0.0] * width)
    accs = [_alloca_zero(b, acc_ty) for _ in sums]
    chunk_accs = [_alloca_zero(b, cvec) for _ in sums] if narrow else []
    paccs = [_alloca_zero(b, acc_ty) for _ in products]
    # one set of tile registers (in the kernel's dtype) for all tiles, allocated while the entry block is still
    # open (an alloca added later is inserted before the entry's terminator, a lookup that grows with the block)
    regs_pool = [_alloca_zero(b, cvec) for _ in range(min(tile, len(products)))]
    check = _alloca_zero(b, cvec) if check_finite else None
    rows = _Rows(b, width)
    chunk_c = ir.Constant(I64, chunk)
    buf_vec = ir.PointerType(cvec)

    # float32: chunks per group of ≤ F32_CHUNK rows whose sums and products stay in float32 lanes (between chunks
    # the product tiles' registers wait in `buf`, after the factors, rather than go into float64 after each chunk:
    # converting and adding cost half as much as a 64-row chunk's FMAs)
    group = max(1, F32_CHUNK // chunk) if narrow else 1
    group_c = ir.Constant(I64, chunk * group)
    lane_sums = b.bitcast(b.gep(buf_p, [ir.Constant(I64, chunk * n_factors)]), buf_vec)  # float32 product sums

    def lane_sum(p: int) -> ir.Value:
        return b.gep(lane_sums, [ir.Constant(I64, p)])

    def group_body(g: ir.Value, _mask: ir.Value, _rows: ir.Value) -> None:
        g_end = b.select(b.icmp_signed("<", b.add(g, group_c), stop_v), b.add(g, group_c), stop_v)
        for slot in chunk_accs:
            b.store(zero_c, slot)
        if narrow:
            for p in range(len(products)):
                b.store(zero_c, lane_sum(p), align=4)
        _ChunkLoop(b, chunk).run(g, g_end, chunk_body)
        for acc, slot in zip(accs, chunk_accs, strict=False):
            b.store(b.fadd(b.load(acc), _convert(b, b.load(slot), acc_ty)), acc)
        if narrow:
            for p, pacc in enumerate(paccs):
                b.store(b.fadd(b.load(pacc), _convert(b, b.load(lane_sum(p), align=4), acc_ty)), pacc)

    def chunk_body(c: ir.Value, _mask: ir.Value, _rows: ir.Value) -> None:
        c_end = b.select(b.icmp_signed("<", b.add(c, chunk_c), stop_v), b.add(c, chunk_c), stop_v)

        def row_body(i: ir.Value, mask: ir.Value, rows_v: ir.Value) -> None:
            ref: list[_Emitter] = []
            load, column = _row_loader(b, ref, inputs, ptrs, rows_v, dim, width, ctype)
            emitter = _Emitter(b, ctype, width, load)
            ref.append(emitter)
            offset = b.sub(i, c)

            def store_factor(f: int, value: ir.Value) -> None:
                value = b.select(mask, value, zero_c)  # padding lanes contribute 0
                at = b.gep(buf_p, [b.add(offset, ir.Constant(I64, f * chunk))])
                b.store(value, b.bitcast(at, buf_vec), align=8)

            def defined(name: str, value: ir.Value) -> None:
                f = factor_index.get(name)
                if f is not None:
                    store_factor(f, value)

            # each factor stored as soon as it is computed: not kept in a register (or spilled) to the end
            emitter.run(code, defined if factors else None)
            if check is not None:  # every column, read by the table or not (its loads are shared with the table's)
                b.store(b.fadd(b.load(check), b.fmul(_tree_sum(b, [column(j) for j in range(dim)]), zero_c)), check)
            for acc, name in zip(chunk_accs or accs, sums, strict=True):
                value = emitter.operand(name)
                b.store(b.fadd(b.load(acc), b.select(mask, value, zero_c)), acc)
            for f, name in enumerate(factors):
                if name not in emitter.env or name in inputs:  # factors that no instruction defines
                    store_factor(f, emitter.operand(name))

        rows.loop(c, c_end, row_body, "rows")
        if not products:
            return
        n_rows = b.sub(c_end, c)
        fma = declare_intrinsic(b.module, "llvm.fma", cvec, 3)
        for tile in tiles:
            regs = regs_pool[: len(tile)]
            for reg, (_, _, p) in zip(regs, tile, strict=True):
                b.store(b.load(lane_sum(p), align=4) if narrow else zero_c, reg)

            def tile_body(t: ir.Value, _m: ir.Value, _r: ir.Value, tile: list = tile, regs: list = regs) -> None:
                loaded: dict[int, ir.Value] = {}

                def vec_at(f: int) -> ir.Value:
                    if f not in loaded:
                        at = b.gep(buf_p, [b.add(t, ir.Constant(I64, f * chunk))])
                        loaded[f] = b.load(b.bitcast(at, buf_vec), align=8)
                    return loaded[f]

                for reg, (u, v, _) in zip(regs, tile, strict=True):
                    b.store(b.call(fma, [vec_at(u), vec_at(v), b.load(reg)]), reg)

            rows.loop(ir.Constant(I64, 0), n_rows, tile_body, "tile")
            for reg, (_, _, p) in zip(regs, tile, strict=True):
                if narrow:
                    b.store(b.load(reg), lane_sum(p), align=4)
                else:
                    b.store(b.fadd(b.load(paccs[p]), _convert(b, b.load(reg), acc_ty)), paccs[p])

    _ChunkLoop(b, chunk * group).run(start_v, stop_v, group_body)
    for k, acc in enumerate([*accs, *paccs]):
        _store(b, _horizontal_sum(b, b.load(acc), width), out_p, k)
    if check is not None:
        _store(b, _horizontal_sum(b, b.load(check), width), out_p, len(accs) + len(paccs))
    b.ret_void()
    return fn


def build_block_loop(module: ir.Module, symbol: str, block: ir.Function, dtype: str) -> ir.Function:
    """`void symbol(theta, consts, X, n, n_blocks, lo, hi, buf, partial, stride)`: the sum block `block` on
    blocks lo ≤ i < hi of n rows split in n_blocks, block i on rows [i·n / n_blocks, (i + 1)·n / n_blocks)
    into partial + i·stride. One call from Python per thread instead of one per block (a ctypes call costs
    ~9 µs here: 2.3 ms for 256 blocks, as much as a whole float32 Student-t kernel's rows take in 1/5)."""
    pt = ir.PointerType(_llvm_type(dtype))
    args = [("theta", pt), ("consts", pt), ("X", pt), ("n", I64), ("n_blocks", I64), ("lo", I64), ("hi", I64)]
    args += [("buf", pt), ("partial", ir.PointerType(F64)), ("stride", I64)]
    fn, v = _function(module, symbol, args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    head, body, done = (b.append_basic_block(name) for name in ("blocks.head", "blocks.body", "blocks.done"))
    entry = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, "block.i")
    i.add_incoming(v["lo"], entry)
    b.cbranch(b.icmp_signed("<", i, v["hi"]), body, done)
    b.position_at_end(body)
    one = ir.Constant(I64, 1)
    start = b.sdiv(b.mul(i, v["n"]), v["n_blocks"])
    stop = b.sdiv(b.mul(b.add(i, one), v["n"]), v["n_blocks"])
    out = b.gep(v["partial"], [b.mul(i, v["stride"])])
    b.call(block, [v["theta"], v["consts"], v["X"], start, stop, v["buf"], out])
    i.add_incoming(b.add(i, one), b.block)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return fn


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


def build_row_block(
    module: ir.Module,
    symbol: str,
    code: Table,
    inputs: Inputs,
    outputs: Sequence[str],
    dim: int,
    dtype: str,
) -> ir.Function:
    """`void symbol(theta, consts, X, start, stop, out)`: out[row·K + k] = outputs[k] (K = len(outputs)),
    for rows [start, stop) of X (row stride `dim`), in float64."""
    ctype = _llvm_type(dtype)
    width = LANES[dtype]
    fn, values = _function(module, symbol, _block_args(dtype, [("out", ir.PointerType(F64))]))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ptrs = {name: values[name] for name in ("theta", "consts", "X")}
    out_p = values["out"]
    n_out = ir.Constant(I64, len(outputs))

    def row_body(i: ir.Value, mask: ir.Value, rows_v: ir.Value) -> None:
        ref: list[_Emitter] = []
        emitter = _Emitter(b, ctype, width, _row_loader(b, ref, inputs, ptrs, rows_v, dim, width, ctype)[0])
        ref.append(emitter)
        emitter.run(code)
        for k, name in enumerate(outputs):
            value = emitter.operand(name)
            for lane in range(width):
                idx = ir.Constant(I32, lane)
                with b.if_then(b.extract_element(mask, idx), likely=True):
                    row = b.extract_element(rows_v, idx)
                    _store(b, b.extract_element(value, idx), out_p, b.add(b.mul(row, n_out), ir.Constant(I64, k)))

    _Rows(b, width).loop(values["start"], values["stop"], row_body, "rows")
    b.ret_void()
    return fn
