"""Block programs on the CPU: register-tiled matrix products for small inner dimensions, fused with the
elementwise work, compiled to one LLVM function per program.

A block program runs over the rows of X (N × d, float64 or float32) in blocks of B rows. Its ops:

* `MatMul(out, a, p, transpose)`: out(B, n) = a(B, k) @ pᵀ (p stored (n, k)) if transpose, else a @ p
  (p stored (k, n)); p is a θ matrix.
* `Elementwise(outs, ins, table)`: a straight-line table of scalar ops in the three-address text format of
  symsm/backends/llvm/tac.py (`dst op operand...`, constants `#<float>`), per element of row arrays of one
  width n; θ vectors (n,) broadcast along rows, scalars and per-row arrays of width 1 broadcast along
  columns.
* `RowSum(out, a)`: out(B,) = Σ_j a[:, j].
* `AccOuter(acc, a, c)`: acc(n, m) += aᵀ c, summed over the rows (accumulated in float64).
* `AccGram(acc, a)`: acc(n, n) += aᵀ a, the tiles on and above the diagonal only, mirrored when the chunks'
  sums are added (no other op adds into acc).
* `AccColSum(acc, a)`: acc(n,) += Σ_rows a;  `AccSum(acc, a)`: acc += Σ_rows a (a of width 1).

How it runs (one function `void f(T* X, i64 n_rows, T** params, double* accs, T* work)` per program):

* Rows are taken in blocks of B rows (the arrays the accumulations read fill ~192 KiB of L2); a block is
  processed in panels of `mr`·`tiles` rows. For each panel the row-local ops (matmul, elementwise, rowsum) run
  in program order, so intermediates stay in L1, and arrays nothing reads after the panel only ever occupy a
  panel's rows. X is copied into a row buffer padded to whole SIMD vectors first (prefetching the rows 4 KiB ahead).
* SIMD vectors are 512-bit where the host has AVX-512, else 256-bit (`default_lanes`).
* A matmul is a register-tiled micro-kernel of `mr` rows × `nv` SIMD vectors of columns (4 × 3 = 12
  accumulators for AVX2's 16 registers; 6 × 4 or 8 × 3 with AVX-512's 32: `default_tile`), one FMA per element
  and k, with a loop over k that is never unrolled (code size does not grow with d). θ matrices are packed once
  per call into (k, nv·W) micro-panels, read contiguously.
* Fusion: an elementwise table right after a matmul runs on each tile vector while it is in registers (the
  product is stored only if something else reads it); a row sum of a table output accumulates as the table
  runs. tanh is this module's own (`tanh_function`: one branch, about half the work of vecmath's).
* After the panels, the accumulations run over the block: `AccOuter` as a tiled product whose inner dimension
  is the rows, in sub-blocks of 32 rows (the C panel stays in L1 across the A tiles), the register tile added
  to the float64 accumulator after each; several `AccOuter` into one accumulator share one sweep. In float32
  the tiles accumulate ≤ 32 rows in float32 before that.
* Threads: the rows are split into chunks whose boundaries depend only on N; each chunk has its own float64
  accumulators, added in chunk order at the end, so results are bit-identical whatever the thread count.

Padding columns (up to a whole vector) of row arrays hold values nothing reads: a matmul's k-loop stops at
the real k, row sums mask them, and accumulator entries they touch are dropped.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from llvmlite import ir

from ...core import cache as symsm_cache
from ...core.threads import run_chunks
from .kernels import _Emitter
from .native import (
    CODEGEN_OPT,
    _load_object,
    _object_header,
    _read_object,
    compile_module,
    parse_table,
    target_description,
)
from .vecmath import LN2_HI, LN2_LO, LOG2E, SHIFTER, _Ops, declare_intrinsic, vector_function

__all__ = [
    "AccColSum",
    "AccGram",
    "AccOuter",
    "AccSum",
    "BlockKernel",
    "BlockProgram",
    "Elementwise",
    "MatMul",
    "Param",
    "RowOut",
    "RowSum",
    "default_lanes",
    "default_tile",
    "fma_peak",
    "tanh_function",
    "tanh_function_f32",
]

I64 = ir.IntType(64)
I32 = ir.IntType(32)
F64 = ir.DoubleType()
F32 = ir.FloatType()
LANES = {"float64": 4, "float32": 8}  # one AVX2 register
WIDE_LANES = {"float64": 8, "float32": 16}  # one AVX-512 register
# rows of an outer product's sub-block: its C panels stay in L1 across the A tiles (measured: 32 rows 10–20 %
# faster than 128 at d = 128; 16 loses at d = 32 to the tiles' start-up)
ACC_SUB_ROWS = 32
ELEMENTWISE_UNROLL = 4  # vectors of an elementwise table per loop step
# run an elementwise table on a matmul's tiles in registers (measured: as fast as running it over the panel's
# rows from L1 afterwards; it saves the store and reload) when the table is short: it is emitted once per tile
# vector (mr·nv copies)
FUSE_MATMUL_TABLE = True
FUSE_MATMUL_TABLE_OPS = 200
# the copy of X prefetches the row this many bytes ahead (measured: 5–10 % at d = 8–32, where a row's work is
# short against its read from memory; nothing lost at d = 128); 0: none
PREFETCH_BYTES = 4096
MAX_CHUNKS = 16  # row chunks with their own accumulators (they depend on N only, never on the thread count)


# ---------------------------------------------------------------------- the program


@dataclass(frozen=True)
class Param:
    """A θ-only array computed once per call: a matrix (n, k), a vector (n,) or a scalar ()."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class MatMul:
    out: str
    a: str
    p: str
    transpose: bool = False


@dataclass(frozen=True)
class Elementwise:
    outs: tuple[str, ...]
    ins: tuple[str, ...]
    table: str
    #: the outputs' width where no input has it (a constant row, a table of θ scalars only); 0: the inputs'
    width: int = 0


@dataclass(frozen=True)
class RowSum:
    out: str
    a: str


@dataclass(frozen=True)
class AccOuter:
    acc: str
    a: str
    c: str


@dataclass(frozen=True)
class AccGram:
    acc: str
    a: str


@dataclass(frozen=True)
class AccColSum:
    acc: str
    a: str


@dataclass(frozen=True)
class AccSum:
    acc: str
    a: str


@dataclass(frozen=True)
class Columns:
    """Columns offset … offset + width − 1 of the rows X (`a`) as a row array: the data or an auxiliary input of a
    randomised objective, both columns of X (symsm/ir/block_format.py, "Auxiliary columns")."""

    out: str
    a: str
    offset: int
    width: int


@dataclass(frozen=True)
class RowOut:
    """The per-row output: each row of `a` (width n) written, as float64, to row t of the (N, n) output array."""

    a: str


Op = MatMul | Elementwise | RowSum | AccOuter | AccGram | AccColSum | AccSum | RowOut | Columns
ROW_OPS = (MatMul, Elementwise, RowSum)
ACC_OPS = (AccOuter, AccGram, AccColSum, AccSum)


@dataclass(frozen=True)
class BlockProgram:
    """Ops over blocks of rows of X (width `dim`); `params` are the θ-only arrays the ops read."""

    dim: int
    params: tuple[Param, ...]
    ops: tuple[Op, ...]
    x: str = "X"


# ---------------------------------------------------------------------- layout


@dataclass
class _Array:
    name: str
    width: int
    ld: int  # row stride (elements): width rounded up to whole vectors
    block: bool = False  # read by an accumulation: holds the whole block, else one panel
    offset: int = 0  # in the work buffer (elements)


@dataclass
class _Acc:
    name: str
    shape: tuple[int, ...]
    stored: tuple[int, ...]  # shape in the accumulator buffer (last axis padded to whole vectors)
    offset: int = 0
    gram: bool = False  # the upper triangle (with the diagonal) accumulated: mirrored at the end


@dataclass
class _Layout:
    dtype: str
    width: int  # SIMD lanes
    mr: int  # rows of a register tile
    nv: int  # vectors of a register tile
    panel: int  # rows per panel: a multiple of mr
    arrays: dict[str, _Array] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    slots: list[tuple[str, str]] = field(default_factory=list)  # parameter pointers: (name, "T"/"N"/"v"/"s")
    accs: dict[str, _Acc] = field(default_factory=dict)
    block_rows: int = 0
    out_width: int = 0  # columns of the per-row output (0: none)
    work_size: int = 0
    acc_size: int = 0

    def pad(self, n: int) -> int:
        return -(-n // self.width) * self.width

    def slot(self, name: str, kind: str) -> int:
        if (name, kind) not in self.slots:
            self.slots.append((name, kind))
        return self.slots.index((name, kind))


def _plan(
    program: BlockProgram,
    dtype: str,
    mr: int,
    nv: int,
    tiles: int,
    block_rows: int | None,
    l2_bytes: int,
    lanes: int | None = None,
) -> _Layout:
    lay = _Layout(dtype, lanes or LANES[dtype], mr, nv, mr * tiles)
    lay.params = {p.name: p for p in program.params}
    arrays = lay.arrays
    arrays[program.x] = _Array(program.x, program.dim, lay.pad(program.dim))

    def array(name: str) -> _Array:
        if name not in arrays:
            raise ValueError(f"block program reads {name!r} before any op writes it")
        return arrays[name]

    def new(name: str, width: int) -> None:
        if name in arrays or name in lay.params:
            raise ValueError(f"block program writes {name!r} twice (arrays are written once)")
        arrays[name] = _Array(name, width, lay.pad(width))

    def acc(name: str, shape: tuple[int, ...]) -> None:
        stored = (*shape[:-1], lay.pad(shape[-1])) if shape else (1,)
        if name in lay.accs and lay.accs[name].gram:
            raise ValueError(f"no other op may add into a Gram accumulator ({name!r})")
        if name in lay.accs and lay.accs[name].shape != shape:
            raise ValueError(f"accumulator {name!r} has shapes {lay.accs[name].shape} and {shape}")
        lay.accs.setdefault(name, _Acc(name, shape, stored))

    for op in program.ops:  # accumulations run after the row ops: arrays are written once, so order is free
        if isinstance(op, MatMul):
            a, p = array(op.a), lay.params.get(op.p)
            if p is None or len(p.shape) != 2:
                raise ValueError(f"matmul {op.out}: {op.p!r} must be a θ matrix")
            n, k = p.shape if op.transpose else p.shape[::-1]
            if a.width != k:
                raise ValueError(f"matmul {op.out}: {op.a} has width {a.width}, {op.p} needs {k}")
            new(op.out, n)
            lay.slot(op.p, "T" if op.transpose else "N")
        elif isinstance(op, Elementwise):
            n = _elementwise_width(op, lay)
            for name in op.ins:
                if name in lay.params:
                    lay.slot(name, "s" if lay.params[name].shape in ((), (1,)) else "v")
                elif array(name).width not in (1, n):
                    raise ValueError(f"elementwise {op.outs}: {name} has width {arrays[name].width}, not {n} or 1")
            for name in op.outs:
                new(name, n)
        elif isinstance(op, RowSum):
            array(op.a)
            new(op.out, 1)
        elif isinstance(op, AccOuter):
            acc(op.acc, (array(op.a).width, array(op.c).width))
        elif isinstance(op, AccGram):
            w = array(op.a).width
            if op.acc in lay.accs:
                raise ValueError(f"no other op may add into a Gram accumulator ({op.acc!r})")
            acc(op.acc, (w, w))
            lay.accs[op.acc].gram = True
        elif isinstance(op, AccColSum):
            acc(op.acc, (array(op.a).width,))
        elif isinstance(op, AccSum):
            if array(op.a).width != 1:
                raise ValueError(f"acc_sum {op.acc}: {op.a} must have width 1 (use a rowsum)")
            acc(op.acc, ())
        elif isinstance(op, Columns):
            if op.a != program.x or op.offset < 0 or op.width < 1 or op.offset + op.width > program.dim:
                raise ValueError(f"columns {op.out}: columns {op.offset} … {op.offset + op.width - 1} of {op.a!r}")
            new(op.out, op.width)
        elif isinstance(op, RowOut):
            if lay.out_width:
                raise ValueError("a block program has at most one per-row output")
            lay.out_width = array(op.a).width
        else:
            raise TypeError(f"unknown block op {op!r}")
    for op in program.ops:
        if isinstance(op, ACC_OPS):
            for name in _reads(op):
                arrays[name].block = True
    itemsize = np.dtype(dtype).itemsize
    per_row = sum(a.ld for a in arrays.values() if a.block) * itemsize
    if block_rows is None:
        block_rows = max(lay.panel, min(1024, l2_bytes // max(1, per_row)))
        if block_rows >= ACC_SUB_ROWS and ACC_SUB_ROWS % lay.panel == 0:
            block_rows -= block_rows % ACC_SUB_ROWS  # no short sub-block for the outer products
    lay.block_rows = max(lay.panel, block_rows - block_rows % lay.panel)
    align = 64 // itemsize
    offset = 0
    for a in arrays.values():
        a.offset = offset
        rows = lay.block_rows if a.block else lay.panel
        offset += -(-(rows * a.ld) // align) * align
    lay.work_size = offset
    offset = 0
    for ac in lay.accs.values():
        ac.offset = offset
        offset += -(-math.prod(ac.stored) // 8) * 8
    lay.acc_size = max(1, offset)
    return lay


def _elementwise_width(op: Elementwise, lay: _Layout) -> int:
    widths = {lay.arrays[n].width for n in op.ins if n in lay.arrays}
    widths |= {lay.params[n].shape[0] for n in op.ins if n in lay.params and lay.params[n].shape not in ((), (1,))}
    if op.width:
        widths.add(op.width)
    widths.discard(1)
    if len(widths) > 1:
        raise ValueError(f"elementwise {op.outs}: inputs of widths {sorted(widths)}")
    unknown = [n for n in op.ins if n not in lay.arrays and n not in lay.params]
    if unknown:
        raise ValueError(f"elementwise {op.outs} reads {unknown}, which nothing defines")
    return widths.pop() if widths else 1


def _reads(op: Op) -> tuple[str, ...]:
    if isinstance(op, AccOuter):
        return (op.a, op.c)
    if isinstance(op, AccGram | AccColSum | AccSum | RowOut):
        return (op.a,)
    return ()


@dataclass
class _Group:
    """Row ops run as one: a matmul whose output tiles an elementwise table takes in registers, and/or a row sum
    of a table output accumulated as the table runs. `stored`: outputs written to their arrays (read later)."""

    mm: MatMul | None = None
    ew: Elementwise | None = None
    rs: RowSum | None = None
    stored: set[str] = field(default_factory=set)


def _fuse(row_ops: Sequence[Op], ops: Sequence[Op], lay: _Layout) -> list[_Group]:
    readers: dict[str, list[Op]] = {}
    for op in ops:
        names = (op.a,) if isinstance(op, MatMul | RowSum) else op.ins if isinstance(op, Elementwise) else _reads(op)
        for name in names:
            readers.setdefault(name, []).append(op)
    groups: list[_Group] = []
    i = 0
    while i < len(row_ops):
        op, g = row_ops[i], _Group()
        i += 1
        nxt = row_ops[i] if i < len(row_ops) else None
        if isinstance(op, RowSum):
            groups.append(_Group(rs=op))
            continue
        if isinstance(op, MatMul):
            g.mm = op
            if (
                FUSE_MATMUL_TABLE
                and isinstance(nxt, Elementwise)
                and len(parse_table(nxt.table)) <= FUSE_MATMUL_TABLE_OPS
                and op.out in nxt.ins
                and _elementwise_width(nxt, lay) == lay.arrays[op.out].width > 1
            ):
                g.ew = nxt
                i += 1
        else:
            assert isinstance(op, Elementwise)
            g.ew = op
        nxt = row_ops[i] if i < len(row_ops) else None
        if g.ew is not None and isinstance(nxt, RowSum) and nxt.a in g.ew.outs and _elementwise_width(g.ew, lay) > 1:
            g.rs = nxt
            i += 1
        fused = {id(o) for o in (g.ew, g.rs) if o is not None}
        outs = ((g.mm.out,) if g.mm else ()) + (g.ew.outs if g.ew else ())
        g.stored = {name for name in outs if any(id(r) not in fused for r in readers.get(name, ()))}
        groups.append(g)
    return groups


# ---------------------------------------------------------------------- IR helpers


class _IR:
    """A builder with the loop, vector and pointer helpers the generators share."""

    def __init__(self, builder: ir.IRBuilder, ctype: ir.Type, width: int) -> None:
        self.b = builder
        self.ctype = ctype
        self.w = width
        self.vt = ir.VectorType(ctype, width)
        self.itemsize = 8 if ctype == F64 else 4
        self.fma_fn = declare_intrinsic(builder.module, "llvm.fma", self.vt, 3)

    def i64(self, v: int) -> ir.Constant:
        return ir.Constant(I64, v)

    def gep(self, ptr: ir.Value, index: ir.Value | int) -> ir.Value:
        return self.b.gep(ptr, [self.i64(index) if isinstance(index, int) else index])

    def vload(self, ptr: ir.Value) -> ir.Value:
        return self.b.load(self.b.bitcast(ptr, ir.PointerType(self.vt)), align=self.itemsize)

    def vstore(self, value: ir.Value, ptr: ir.Value) -> None:
        self.b.store(value, self.b.bitcast(ptr, ir.PointerType(value.type)), align=self.itemsize)

    def splat(self, scalar: ir.Value, vt: ir.VectorType | None = None) -> ir.Value:
        vt = vt or self.vt
        undef = ir.Constant(vt, ir.Undefined)
        first = self.b.insert_element(undef, scalar, ir.Constant(I32, 0))
        return self.b.shuffle_vector(first, undef, ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))

    def zero(self, ty: ir.Type | None = None) -> ir.Constant:
        ty = ty or self.vt
        return ir.Constant(ty, None)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.b.call(self.fma_fn, [a, b, c])

    def to_f64(self, vec: ir.Value) -> ir.Value:
        if vec.type.element == F64:
            return vec
        return self.b.fpext(vec, ir.VectorType(F64, vec.type.count))

    def loop(
        self,
        lo: ir.Value | int,
        hi: ir.Value | int,
        step: int,
        body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]],
        carried: Sequence[ir.Value] = (),
        nonempty: bool = False,
    ) -> list[ir.Value]:
        """for i in range(lo, hi, step) with loop-carried values; returns their final values.
        `nonempty`: the loop runs at least once (a do-while loop: one branch per iteration)."""
        b = self.b
        lo = self.i64(lo) if isinstance(lo, int) else lo
        hi = self.i64(hi) if isinstance(hi, int) else hi
        pre = b.block
        body_bb = b.append_basic_block("loop.body")
        done = b.append_basic_block("loop.done")
        if nonempty:
            b.branch(body_bb)
            b.position_at_end(body_bb)
            i = b.phi(I64)
            i.add_incoming(lo, pre)
            phis = []
            for v in carried:
                phi = b.phi(v.type)
                phi.add_incoming(v, pre)
                phis.append(phi)
            new = body(i, phis)
            nxt = b.add(i, self.i64(step))
            end = b.block
            i.add_incoming(nxt, end)
            for phi, v in zip(phis, new, strict=True):
                phi.add_incoming(v, end)
            b.cbranch(b.icmp_signed("<", nxt, hi), body_bb, done)
            b.position_at_end(done)
            return list(new)
        head = b.append_basic_block("loop.head")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64)
        i.add_incoming(lo, pre)
        phis = []
        for v in carried:
            phi = b.phi(v.type)
            phi.add_incoming(v, pre)
            phis.append(phi)
        b.cbranch(b.icmp_signed("<", i, hi), body_bb, done)
        b.position_at_end(body_bb)
        new = body(i, phis)
        end = b.block
        i.add_incoming(b.add(i, self.i64(step)), end)
        for phi, v in zip(phis, new, strict=True):
            phi.add_incoming(v, end)
        b.branch(head)
        b.position_at_end(done)
        return list(phis)

    def each(self, lo: int, hi: int, step: int, body: Callable[[ir.Value], None]) -> None:
        """for i in range(lo, hi, step): body(i), for a loop known to run at least once."""

        def run(i: ir.Value, _carried: list[ir.Value]) -> list[ir.Value]:
            body(i)
            return []

        self.loop(lo, hi, step, run, nonempty=True)

    def micro(
        self,
        mr: int,
        nv: int,
        trip: ir.Value | int,
        sources: Sequence[tuple[ir.Value, Sequence[int], int, ir.Value, int]],
    ) -> list[list[ir.Value]]:
        """The register tile Σ_k a_r(k) · b_v(k) (mr × nv vectors): per k, for each source (a, a_offsets, a_step,
        b, b_step), broadcast a[a_offsets[r]] for each tile row r, load vectors b[v·W], fused multiply-add,
        then advance a by a_step and b by b_step elements. The k-loop runs `trip` ≥ 1 times."""
        b = self.b
        zeros = [self.zero()] * (mr * nv)
        ptrs0 = [p for a, _, _, bp, _ in sources for p in (a, bp)]

        def body(_k: ir.Value, carried: list[ir.Value]) -> list[ir.Value]:
            ptrs, accs = carried[: len(ptrs0)], list(carried[len(ptrs0) :])
            new_ptrs = []
            for s, (_, offs, a_step, _, b_step) in enumerate(sources):
                ap, bp = ptrs[2 * s], ptrs[2 * s + 1]
                bvecs = [self.vload(self.gep(bp, v * self.w)) for v in range(nv)]
                for r in range(mr):
                    a = self.splat(b.load(self.gep(ap, offs[r])))
                    for v in range(nv):
                        accs[r * nv + v] = self.fma(a, bvecs[v], accs[r * nv + v])
                new_ptrs += [self.gep(ap, a_step), self.gep(bp, b_step)]
            return new_ptrs + accs

        out = self.loop(0, trip, 1, body, ptrs0 + zeros, nonempty=True)[len(ptrs0) :]
        return [out[r * nv : (r + 1) * nv] for r in range(mr)]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _llvm_type(dtype: str) -> ir.Type:
    return {"float64": F64, "float32": F32}[dtype]


# ---------------------------------------------------------------------- tanh for the elementwise tables


def tanh_function(module: ir.Module, width: int) -> ir.Function:
    """`symsm.blocks.tanh.{width}` on <W x double>, one branch, half the work of vecmath's expm1-based tanh:
    tanh|x| = (1 − e)/(1 + e) with e = exp(−2|x|) = (1 + m)·2^k, m = expm1(r) for the Cody–Waite reduced r
    (|r| ≤ ln2/2, 13 Taylor terms: truncation < 2e-17 relative). Then 1 − e = (1 − 2^k) − m·2^k and
    1 + e = (1 + 2^k) + m·2^k are single FMAs: 1 ∓ 2^k is exact and for k = 0 (|x| < 0.17) the numerator is
    −m, no cancellation — a few ulp everywhere. −2|x| is clamped at −40 (1 − e rounds to 1 beyond), so 2^k
    stays normal. The sign is copied back; ±0, ±inf and nan come out as tanh's."""
    symbol = f"symsm.blocks.tanh.{width}"
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    vf = ir.VectorType(F64, width)
    fn = ir.Function(module, ir.FunctionType(vf, [vf]), symbol)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    o = _Ops(ir.IRBuilder(fn.append_basic_block("entry")), width)
    x = fn.args[0]
    y = o.intrinsic("llvm.maxnum", o.mul(o.intrinsic("llvm.fabs", x), o.c(-2.0)), o.c(-40.0))
    shifted = o.fma(y, o.c(LOG2E), o.c(SHIFTER))
    kd = o.sub(shifted, o.c(SHIFTER))
    r = o.fma(kd, o.c(-LN2_HI), y)
    r = o.fma(kd, o.c(-LN2_LO), r)
    m = o.mul(r, o.horner(r, [1.0 / math.factorial(n + 1) for n in range(13)]))
    k = o.b.sub(o.as_int(shifted), o.ci(0x4338000000000000))
    scale = o.as_float(o.b.shl(o.b.add(k, o.ci(1023)), o.ci(52)))
    num = o.fma(o.b.fneg(m), scale, o.sub(o.c(1.0), scale))
    den = o.fma(m, scale, o.add(o.c(1.0), scale))
    t = o.intrinsic("llvm.copysign", o.div(num, den), x)
    o.b.ret(o.select(o.b.fcmp_unordered("uno", x, x), x, t))
    return fn


def tanh_function_f32(module: ir.Module, width: int) -> ir.Function:
    """`symsm.blocks.tanhf.{width}` on <W x float>, in float32 (a few float32 ulp): `tanh_function`'s formula with
    −2|x| clamped at −80 and expm1(r) to 8 Taylor terms (|r| ≤ ln2/2: relative error < 1e-9)."""
    symbol = f"symsm.blocks.tanhf.{width}"
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    vf, vi = ir.VectorType(F32, width), ir.VectorType(I32, width)
    fn = ir.Function(module, ir.FunctionType(vf, [vf]), symbol)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x = fn.args[0]

    def c(value: float) -> ir.Constant:
        return ir.Constant(vf, [float(np.float32(value))] * width)

    def ci(value: int) -> ir.Constant:
        return ir.Constant(vi, [value] * width)

    def call(name: str, *args: ir.Value) -> ir.Value:
        return b.call(declare_intrinsic(module, name, vf, len(args)), list(args))

    def horner(v: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        acc = c(coeffs[-1])
        for coeff in reversed(coeffs[:-1]):
            acc = call("llvm.fma", acc, v, c(coeff))
        return acc

    shifter = 12582912.0  # 1.5·2**23
    y = call("llvm.maxnum", b.fmul(call("llvm.fabs", x), c(-2.0)), c(-80.0))
    shifted = call("llvm.fma", y, c(1.4426950408889634), c(shifter))
    kd = b.fsub(shifted, c(shifter))
    r = call("llvm.fma", kd, c(-0.693359375), y)  # ln 2 = 0.693359375 − 2.12194440e-4 (Cody–Waite)
    r = call("llvm.fma", kd, c(2.12194440e-4), r)
    m = b.fmul(r, horner(r, [1.0 / math.factorial(n + 1) for n in range(8)]))  # expm1(r)
    k = b.sub(b.bitcast(shifted, vi), ci(0x4B400000))
    scale = b.bitcast(b.shl(b.add(k, ci(127)), ci(23)), vf)
    num = call("llvm.fma", b.fneg(m), scale, b.fsub(c(1.0), scale))
    den = call("llvm.fma", m, scale, b.fadd(c(1.0), scale))
    t = call("llvm.copysign", b.fdiv(num, den), x)
    b.ret(b.select(b.fcmp_unordered("uno", x, x), x, t))
    return fn


class _BlockEmitter(_Emitter):
    """kernels._Emitter with cheaper vector tanh: `tanh_function`, or `tanh_function_f32` in float32."""

    def _call(self, name: str, values: list[ir.Value]) -> ir.Value:
        if name in ("cosh", "sinh") and self.width > 1:
            return self._hyperbolic(name, values[0])
        if name != "tanh" or self.width == 1:
            return super()._call(name, values)
        if self.ctype == F32:
            return self.b.call(tanh_function_f32(self.b.module, self.width), values)
        return self.b.call(tanh_function(self.b.module, self.width), values)

    def _hyperbolic(self, name: str, value: ir.Value) -> ir.Value:
        """Vector cosh and sinh from one vector expm1 shared by both of an argument (the C library's would run
        lane by lane): u = expm1 x, e = u + 1, cosh = (e + 1/e)/2, sinh = (u + u/e)/2 (no cancellation near 0)."""
        b = self.b
        cache: dict[int, tuple[ir.Value, ...]] = self.__dict__.setdefault("_expm1", {})
        if id(value) not in cache:
            wide = value if self.ctype == F64 else b.fpext(value, ir.VectorType(F64, self.width))
            u = b.call(vector_function(b.module, "expm1", self.width), [wide])
            one = ir.Constant(u.type, [1.0] * self.width)
            e = b.fadd(u, one)
            inv = b.fdiv(one, e)
            cache[id(value)] = (value, u, e, inv)  # `value` kept alive: its id stays unique
        _, u, e, inv = cache[id(value)]
        half = ir.Constant(u.type, [0.5] * self.width)
        out = b.fmul(half, b.fadd(e, inv) if name == "cosh" else b.fadd(u, b.fmul(u, inv)))
        return out if self.ctype == F64 else b.fptrunc(out, self.ty)


# ---------------------------------------------------------------------- code generation


class _Generator:
    def __init__(
        self, program: BlockProgram, lay: _Layout, module: ir.Module, symbol: str, x_dtype: str | None = None
    ) -> None:
        self.program = program
        self.lay = lay
        self.ctype = _llvm_type(lay.dtype)
        self.xtype = _llvm_type(x_dtype or lay.dtype)  # the rows' type: rounded to ctype as they are copied
        pt = ir.PointerType(self.ctype)
        fnty = ir.FunctionType(
            ir.VoidType(),
            [ir.PointerType(self.xtype), I64, ir.PointerType(pt), ir.PointerType(F64), pt, ir.PointerType(F64)],
        )
        self.fn = ir.Function(module, fnty, symbol)
        self.fn.attributes.add("nounwind")
        for arg, name in zip(self.fn.args, ("X", "n_rows", "params", "accs", "work", "out"), strict=True):
            arg.name = name
            if isinstance(arg.type, ir.PointerType):
                arg.add_attribute("noalias")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.x = _IR(self.b, self.ctype, lay.width)

    def build(self) -> ir.Function:
        b, x, lay = self.b, self.x, self.lay
        X, n_rows, params, accs, work, out = self.fn.args
        self.param_ptr = [b.load(x.gep(params, k)) for k in range(len(lay.slots))]
        self.base = {name: x.gep(work, a.offset) for name, a in lay.arrays.items()}
        self.acc_ptr = {name: x.gep(accs, a.offset) for name, a in lay.accs.items()}
        rows = lay.block_rows
        row_ops = [op for op in self.program.ops if isinstance(op, ROW_OPS)]
        acc_ops = [op for op in self.program.ops if isinstance(op, ACC_OPS)]
        row_outs = [op for op in self.program.ops if isinstance(op, RowOut)]
        columns = [op for op in self.program.ops if isinstance(op, Columns)]
        groups = _fuse(row_ops, self.program.ops, lay)
        with b.goto_entry_block():
            self.slots = b.alloca(self.x.vt, size=lay.panel)  # per-row partial sums of a fused row sum

        def block(b0: ir.Value, _c: list) -> list:
            left = b.sub(n_rows, b0)
            nb = b.select(b.icmp_signed("<", left, x.i64(rows)), left, x.i64(rows))
            xblock = x.gep(X, b.mul(b0, x.i64(self.program.dim)))

            def panel(p0: ir.Value, _c: list) -> list:
                self._copy_x(xblock, nb, p0)
                for cols in columns:
                    self._columns(cols, p0)
                for group in groups:
                    self._group(group, p0)
                for op in row_outs:
                    self._row_out(op, out, b0, nb, p0)
                return []

            x.loop(0, nb, lay.panel, panel, nonempty=True)
            self._accumulate(acc_ops, nb)
            return []

        x.loop(0, n_rows, rows, block)
        b.ret_void()
        return self.fn

    def _row_ptr(self, name: str, p0: ir.Value, r: int | ir.Value = 0) -> ir.Value:
        """Pointer to row p0 + r of an array (a panel-sized array holds only the panel's rows)."""
        a = self.lay.arrays[name]
        row = self.b.add(p0, r if isinstance(r, ir.Value) else self.x.i64(r)) if a.block else r
        row = row if isinstance(row, ir.Value) else self.x.i64(row)
        return self.x.gep(self.base[name], self.b.mul(row, self.x.i64(a.ld)))

    # -- X into its padded buffer (rows past the block's end: zeros)
    def _copy_x(self, xblock: ir.Value, nb: ir.Value, p0: ir.Value) -> None:
        b, x, lay = self.b, self.x, self.lay
        d, w = self.program.dim, lay.width
        ld = lay.arrays[self.program.x].ld

        row_bytes = d * (8 if self.xtype == F64 else 4)
        ahead_rows = -(-PREFETCH_BYTES // row_bytes)
        if PREFETCH_BYTES:
            i8p = ir.PointerType(ir.IntType(8))
            fn = b.module.globals.get("llvm.prefetch.p0") or ir.Function(
                b.module, ir.FunctionType(ir.VoidType(), [i8p, I32, I32, I32]), "llvm.prefetch.p0"
            )

        def row(r: ir.Value, _c: list) -> list:
            dst = self._row_ptr(self.program.x, p0, r)
            i = b.add(p0, r)
            if PREFETCH_BYTES:  # prefetches never fault: rows past the end need no test
                ahead = b.bitcast(x.gep(xblock, b.mul(b.add(i, x.i64(ahead_rows)), x.i64(d))), i8p)
                for line in range(0, row_bytes, 64):
                    locality = [ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)]  # read, keep, data
                    b.call(fn, [b.gep(ahead, [x.i64(line)]), *locality])
            with b.if_else(b.icmp_signed("<", i, nb), likely=True) as (inside, outside):
                with inside:
                    src = x.gep(xblock, b.mul(i, x.i64(d)))
                    if d // w:
                        x.each(0, d // w, 1, lambda v: self._copy_vec(src, dst, v))
                    if d % w:
                        vec = x.zero()
                        for j in range(d - d % w, d):
                            value = b.load(x.gep(src, j))
                            value = value if self.xtype == self.ctype else b.fptrunc(value, self.ctype)
                            vec = b.insert_element(vec, value, ir.Constant(I32, j % w))
                        x.vstore(vec, x.gep(dst, d - d % w))
                with outside:
                    for v in range(ld // w):
                        x.vstore(x.zero(), x.gep(dst, v * w))
            return []

        x.loop(0, lay.panel, 1, row, nonempty=True)

    def _columns(self, op: Columns, p0: ir.Value) -> None:
        """Copy columns of the panel's padded X rows into `op.out` (its padding zero)."""
        b, x, w = self.b, self.x, self.lay.width
        ld = self.lay.arrays[op.out].ld
        full, tail = divmod(op.width, w)

        def row(r: ir.Value, _c: list) -> list:
            src = x.gep(self._row_ptr(op.a, p0, r), op.offset)
            dst = self._row_ptr(op.out, p0, r)

            def vector(v: ir.Value) -> None:
                at = b.mul(v, x.i64(w))
                x.vstore(x.vload(x.gep(src, at)), x.gep(dst, at))

            if full:
                x.each(0, full, 1, vector)
            if tail:
                vec = x.zero()
                for j in range(tail):
                    vec = b.insert_element(vec, b.load(x.gep(src, full * w + j)), ir.Constant(I32, j))
                x.vstore(vec, x.gep(dst, full * w))
            for v in range(full + bool(tail), ld // w):
                x.vstore(x.zero(), x.gep(dst, v * w))
            return []

        x.loop(0, self.lay.panel, 1, row, nonempty=True)

    def _copy_vec(self, src: ir.Value, dst: ir.Value, v: ir.Value) -> None:
        b, x = self.b, self.x
        at = b.mul(v, x.i64(self.lay.width))
        if self.xtype == self.ctype:
            x.vstore(x.vload(x.gep(src, at)), x.gep(dst, at))
            return
        wide = ir.VectorType(self.xtype, self.lay.width)
        vec = b.load(b.bitcast(x.gep(src, at), ir.PointerType(wide)), align=8)
        x.vstore(b.fptrunc(vec, x.vt), x.gep(dst, at))

    # -- row ops on one panel
    def _group(self, g: _Group, p0: ir.Value) -> None:
        """One matmul, elementwise and row sum, fused as far as `g` says."""
        b, x, lay = self.b, self.x, self.lay
        if g.ew is None and g.mm is None:
            assert g.rs is not None
            self._rowsum(g.rs, p0)
            return
        if g.rs is not None:
            for r in range(lay.panel):
                b.store(x.zero(), x.gep(self.slots, r))
        if g.mm is not None:
            self._matmul(g, p0)
        else:
            self._elementwise(g, p0)
        if g.rs is not None:
            out = g.rs.out

            def row(r: ir.Value, _c: list) -> list:
                acc = b.load(x.gep(self.slots, r))
                b.store(self._hsum(acc), self._row_ptr(out, p0, r))
                return []

            x.loop(0, lay.panel, 1, row, nonempty=True)

    def _hsum(self, vec: ir.Value) -> ir.Value:
        total = self.b.extract_element(vec, ir.Constant(I32, 0))
        for lane in range(1, self.lay.width):  # fixed order
            total = self.b.fadd(total, self.b.extract_element(vec, ir.Constant(I32, lane)))
        return total

    def _table(self, g: _Group, row: Callable[[str], ir.Value], r: ir.Value, col: ir.Value, given: dict) -> None:
        """g.ew's table on the vector of row `r` of the panel at column `col` (`row(name)`: that row's pointer
        in array `name`; `given`: values already in registers); outputs stored where read later, the row-sum
        output added (padding columns masked) to the row's partial sum."""
        b, x, lay = self.b, self.x, self.lay
        op = g.ew
        assert op is not None

        def load(name: str) -> ir.Value:
            if name in given:
                return given[name]
            if name in lay.params:
                if lay.params[name].shape in ((), (1,)):
                    return emitter.splat(b.load(self.param_ptr[lay.slot(name, "s")]))
                return x.vload(x.gep(self.param_ptr[lay.slot(name, "v")], col))
            if name not in op.ins or name not in lay.arrays:
                raise ValueError(f"elementwise {op.outs}: the table reads {name!r}, not among its inputs")
            if lay.arrays[name].width == 1:
                return emitter.splat(b.load(row(name)))
            return x.vload(x.gep(row(name), col))

        emitter = _BlockEmitter(b, self.ctype, lay.width, load)
        emitter.run(parse_table(op.table))
        for name in op.outs:
            if name in g.stored:
                x.vstore(emitter.operand(name), x.gep(row(name), col))
        if g.rs is not None:
            value = emitter.operand(g.rs.a)
            n = lay.arrays[g.rs.a].width
            if n % lay.width:
                vi = ir.VectorType(I64, lay.width)
                cols = b.add(x.splat(col, vi), ir.Constant(vi, list(range(lay.width))))
                value = b.select(b.icmp_signed("<", cols, ir.Constant(vi, [n] * lay.width)), value, x.zero())
            slot = x.gep(self.slots, r)
            b.store(b.fadd(b.load(slot), value), slot)

    def _matmul(self, g: _Group, p0: ir.Value) -> None:
        """The matmul's register tiles; with a fused elementwise table, the table runs on each tile vector while
        it is in registers, and the product is stored only if something else reads it."""
        b, x, lay = self.b, self.x, self.lay
        op = g.mm
        assert op is not None
        a, out = lay.arrays[op.a], lay.arrays[op.out]
        k, w, mr = a.width, lay.width, lay.mr
        P = self.param_ptr[lay.slot(op.p, "T" if op.transpose else "N")]  # packed: see BlockKernel.pack
        abase, obase = self._row_ptr(op.a, p0), self._row_ptr(op.out, p0)
        full, rest = divmod(out.ld // w, lay.nv)
        names = [n for n in (g.ew.ins + g.ew.outs if g.ew else ()) if n in lay.arrays and n != op.out]

        def tile(col0: ir.Value, nv: int) -> None:
            panel = x.gep(P, b.mul(col0, x.i64(k)))  # the (k, nv·W) micro-panel of these columns

            def rows(r0: ir.Value, _c: list) -> list:
                a0 = x.gep(abase, b.mul(r0, x.i64(a.ld)))
                accs = x.micro(mr, nv, k, [(a0, [r * a.ld for r in range(mr)], 1, panel, nv * w)])
                o0 = x.gep(obase, b.add(b.mul(r0, x.i64(out.ld)), col0))
                for r in range(mr):
                    row_r = b.add(r0, x.i64(r))
                    ptrs = {name: self._row_ptr(name, p0, row_r) for name in names}
                    for v in range(nv):
                        if op.out in g.stored:
                            x.vstore(accs[r][v], x.gep(o0, r * out.ld + v * w))
                        if g.ew is not None:
                            col = b.add(col0, x.i64(v * w))
                            self._table(g, ptrs.__getitem__, row_r, col, {op.out: accs[r][v]})
                return []

            x.loop(0, lay.panel, mr, rows, nonempty=True)

        if full:
            x.each(0, full * lay.nv * w, lay.nv * w, lambda c: tile(c, lay.nv))
        if rest:
            tile(x.i64(full * lay.nv * w), rest)

    def _elementwise(self, g: _Group, p0: ir.Value) -> None:
        b, x, lay = self.b, self.x, self.lay
        op = g.ew
        assert op is not None
        n = _elementwise_width(op, lay)
        if n == 1:
            self._elementwise_scalar(op, p0)
            return
        n_vec = lay.pad(n) // lay.width
        unroll = min(n_vec, ELEMENTWISE_UNROLL)

        def row(r: ir.Value, _c: list) -> list:
            ptrs = {name: self._row_ptr(name, p0, r) for name in (*op.ins, *op.outs) if name in lay.arrays}

            def column(v: ir.Value) -> None:
                self._table(g, ptrs.__getitem__, r, b.mul(v, x.i64(lay.width)), {})

            def columns(v: ir.Value, _c: list) -> list:
                for u in range(unroll):  # independent copies in one block: their latency chains overlap
                    column(b.add(v, x.i64(u)))
                return []

            main = n_vec - n_vec % unroll
            if main:
                x.loop(0, main, unroll, columns, nonempty=True)
            if main < n_vec:
                x.each(main, n_vec, 1, column)
            return []

        x.loop(0, lay.panel, 1, row, nonempty=True)

    def _elementwise_scalar(self, op: Elementwise, p0: ir.Value) -> None:
        """A table on arrays of width 1: scalar code per row."""
        b, x, lay = self.b, self.x, self.lay
        table = parse_table(op.table)

        def row(r: ir.Value, _c: list) -> list:
            ptrs = {name: self._row_ptr(name, p0, r) for name in (*op.ins, *op.outs) if name in lay.arrays}

            def load(name: str) -> ir.Value:
                if name in lay.params:
                    kind = "s" if lay.params[name].shape in ((), (1,)) else "v"
                    return b.load(self.param_ptr[lay.slot(name, kind)])
                if name not in ptrs:
                    raise ValueError(f"elementwise {op.outs}: the table reads {name!r}, not among its inputs")
                return b.load(ptrs[name])

            emitter = _BlockEmitter(b, self.ctype, 1, load)
            emitter.run(table)
            for name in op.outs:
                b.store(emitter.operand(name), ptrs[name])
            return []

        x.loop(0, lay.panel, 1, row, nonempty=True)

    def _rowsum(self, op: RowSum, p0: ir.Value) -> None:
        b, x, lay = self.b, self.x, self.lay
        a = lay.arrays[op.a]
        w = lay.width
        n_vec, tail = divmod(a.width, w)

        def row(r: ir.Value, _c: list) -> list:
            src = self._row_ptr(op.a, p0, r)
            if a.width == 1:
                b.store(b.load(src), self._row_ptr(op.out, p0, r))
                return []
            acc = x.zero()
            if n_vec:
                (acc,) = x.loop(
                    0, n_vec, 1, lambda v, c: [b.fadd(c[0], x.vload(x.gep(src, b.mul(v, x.i64(w)))))], [acc],
                    nonempty=True,
                )  # fmt: skip
            if tail:
                mask = ir.Constant(ir.VectorType(ir.IntType(1), w), [j < tail for j in range(w)])
                acc = b.fadd(acc, b.select(mask, x.vload(x.gep(src, n_vec * w)), x.zero()))
            b.store(self._hsum(acc), self._row_ptr(op.out, p0, r))
            return []

        x.loop(0, lay.panel, 1, row, nonempty=True)

    def _row_out(self, op: RowOut, out: ir.Value, b0: ir.Value, nb: ir.Value, p0: ir.Value) -> None:
        """Rows p0 … of the panel (those inside the block) of `op.a` into the float64 output, row b0 + p0 + r."""
        b, x = self.b, self.x
        n = self.lay.arrays[op.a].width

        def row(r: ir.Value, _c: list) -> list:
            i = b.add(p0, r)
            with b.if_then(b.icmp_signed("<", i, nb), likely=True):
                src = self._row_ptr(op.a, p0, r)
                dst = b.gep(out, [b.mul(b.add(b0, i), x.i64(n))])

                def column(j: ir.Value, _c: list) -> list:
                    value = b.load(x.gep(src, j))
                    b.store(value if value.type == F64 else b.fpext(value, F64), b.gep(dst, [j]))
                    return []

                x.loop(0, n, 1, column, nonempty=True)
            return []

        x.loop(0, self.lay.panel, 1, row, nonempty=True)

    # -- accumulations over the block's nb rows
    def _accumulate(self, ops: Sequence[Op], nb: ir.Value) -> None:
        groups: dict[str, list[AccOuter]] = {}
        for op in ops:
            if isinstance(op, AccOuter):
                groups.setdefault(op.acc, []).append(op)
        done: set[str] = set()
        for op in ops:
            if isinstance(op, AccOuter):
                if op.acc not in done:
                    self._acc_outer(groups[op.acc], nb)
                    done.add(op.acc)
            elif isinstance(op, AccGram):
                self._acc_outer([AccOuter(op.acc, op.a, op.a)], nb, upper=True)
            elif isinstance(op, AccColSum):
                self._acc_colsum(op, nb)
            elif isinstance(op, AccSum):
                self._acc_sum(op, nb)

    def _acc_outer(self, ops: Sequence[AccOuter], nb: ir.Value, upper: bool = False) -> None:
        b, x, lay = self.b, self.x, self.lay
        acc = lay.accs[ops[0].acc]
        sub = ACC_SUB_ROWS

        def sub_block(s0: ir.Value, _c: list) -> list:
            left = b.sub(nb, s0)
            trip = b.select(b.icmp_signed("<", left, x.i64(sub)), left, x.i64(sub))
            pairs = [
                (a, c, x.gep(self.base[o.a], b.mul(s0, x.i64(a.ld))), x.gep(self.base[o.c], b.mul(s0, x.i64(c.ld))))
                for o in ops
                for a, c in [(lay.arrays[o.a], lay.arrays[o.c])]
            ]
            self._acc_outer_tiles(acc, pairs, trip, upper)
            return []

        x.loop(0, nb, sub, sub_block, nonempty=True)

    def _acc_outer_tiles(self, acc: _Acc, pairs: list, trip: ir.Value, upper: bool = False) -> None:
        """acc += Σ_pairs aᵀ c over `trip` rows from the pairs' row pointers, tile by tile; `upper`: only the
        column vectors with an entry on or above the diagonal (`_upper_tiles`)."""
        b, x, lay = self.b, self.x, self.lay
        w = lay.width
        n, m_pad = acc.shape[0], acc.stored[1]
        mr, nv_full = lay.mr, lay.nv

        def tile(i0: ir.Value, j0: ir.Value, rows: int, nv: int) -> None:
            sources = [
                (x.gep(abase, i0), list(range(rows)), a.ld, x.gep(cbase, j0), c.ld) for a, c, abase, cbase in pairs
            ]
            tiles = x.micro(rows, nv, trip, sources)
            target = x.gep(self.acc_ptr[acc.name], b.add(b.mul(i0, x.i64(m_pad)), j0))
            for r in range(rows):
                for v in range(nv):
                    at = x.gep(target, r * m_pad + v * w)
                    vec = x.to_f64(tiles[r][v])
                    ptr = b.bitcast(at, ir.PointerType(vec.type))
                    b.store(b.fadd(b.load(ptr, align=8), vec), ptr, align=8)

        def i_tiles(j0: ir.Value, nv: int) -> None:  # the (rows × nv·W) panel of C stays in L1 across them
            full_i, rest_i = divmod(n, mr)
            if full_i:
                x.each(0, full_i * mr, mr, lambda i: tile(i, j0, mr, nv))
            if rest_i:
                tile(x.i64(full_i * mr), j0, rest_i, nv)

        if upper:
            self._upper_tiles(tile, n, m_pad)
            return
        full, rest = divmod(m_pad // w, nv_full)
        if full:
            x.each(0, full * nv_full * w, nv_full * w, lambda j: i_tiles(j, nv_full))
        if rest:
            i_tiles(x.i64(full * nv_full * w), rest)

    def _upper_tiles(self, tile: Callable[[ir.Value, ir.Value, int, int], None], n: int, m_pad: int) -> None:
        """The tiles of a symmetric (n × n) accumulator from its diagonal rightwards: for each tile of rows i0…,
        the column vectors from the one holding column i0 to the last, in tiles of nv vectors and one of the
        vectors left (the loops' bounds depend on i0; the code does not grow with n)."""
        b, x, lay = self.b, self.x, self.lay
        w, mr, nv = lay.width, lay.mr, lay.nv

        def row_tile(i0: ir.Value, rows: int) -> None:
            js = b.mul(b.sdiv(i0, x.i64(w)), x.i64(w))
            left = b.sdiv(b.sub(x.i64(m_pad), js), x.i64(w))  # vectors from js to the end
            whole = b.add(js, b.mul(b.sdiv(left, x.i64(nv)), x.i64(nv * w)))

            def body(j: ir.Value, _c: list) -> list:
                tile(i0, j, rows, nv)
                return []

            x.loop(js, whole, nv * w, body)
            rem = b.srem(left, x.i64(nv))
            for r in range(1, nv):
                with b.if_then(b.icmp_signed("==", rem, x.i64(r))):
                    tile(i0, whole, rows, r)

        full_i, rest_i = divmod(n, mr)
        if full_i:
            x.each(0, full_i * mr, mr, lambda i: row_tile(i, mr))
        if rest_i:
            row_tile(x.i64(full_i * mr), rest_i)

    def _acc_colsum(self, op: AccColSum, nb: ir.Value) -> None:
        b, x, lay = self.b, self.x, self.lay
        a = lay.arrays[op.a]
        w = lay.width
        n_vec = a.ld // w
        group = 8
        base = self.base[op.a]
        for g0 in range(0, n_vec, group):
            vs = list(range(g0, min(n_vec, g0 + group)))
            f64v = ir.VectorType(F64, w)

            def body(r: ir.Value, c: list, vs: list = vs) -> list:
                rowp = x.gep(base, b.mul(r, x.i64(a.ld)))
                return [b.fadd(c[k], x.to_f64(x.vload(x.gep(rowp, v * w)))) for k, v in enumerate(vs)]

            sums = x.loop(0, nb, 1, body, [x.zero(f64v)] * len(vs), nonempty=True)
            for k, v in enumerate(vs):
                ptr = b.bitcast(x.gep(self.acc_ptr[op.acc], v * w), ir.PointerType(f64v))
                b.store(b.fadd(b.load(ptr, align=8), sums[k]), ptr, align=8)

    def _acc_sum(self, op: AccSum, nb: ir.Value) -> None:
        b, x = self.b, self.x
        a = self.lay.arrays[op.a]
        base = self.base[op.a]

        def body(r: ir.Value, c: list) -> list:
            value = b.load(x.gep(base, b.mul(r, x.i64(a.ld))))
            return [b.fadd(c[0], value if value.type == F64 else b.fpext(value, F64))]

        (total,) = x.loop(0, nb, 1, body, [ir.Constant(F64, 0.0)], nonempty=True)
        ptr = self.acc_ptr[op.acc]
        b.store(b.fadd(b.load(ptr), total), ptr)


# ---------------------------------------------------------------------- the executor

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_counter = 0
_counter_lock = threading.Lock()


def _symbol(prefix: str) -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        return f"symsm_{prefix}_{_counter}"


@cache
def _host_avx512() -> bool:
    from .native import _llvm

    return bool(_llvm().get_host_cpu_features().get("avx512f"))


def default_lanes(dtype: str, dim: int = 0) -> int:
    """SIMD lanes of the block kernels for rows of `dim` entries: one 512-bit register where the host has AVX-512
    (measured: its FMA peak per core is twice the 256-bit one's, and ICA d = 32–256 runs 20–30 % faster), unless
    rows padded to it would be over 1.5 times as long as padded to a 256-bit one (float32 at d = 8: half of
    every vector would be padding; measured about 20 % slower); else one AVX2 register."""
    narrow, wide = LANES[dtype], WIDE_LANES[dtype]
    if not _host_avx512() or (dim and 2 * _ceil(dim, wide) * wide > 3 * _ceil(dim, narrow) * narrow):
        return narrow
    return wide


def default_tile(dim: int = 0, lanes: int = 4, itemsize: int = 8) -> tuple[int, int, int]:
    """The register tile (rows, vectors) and register tiles of rows per panel for a program of width `dim` with
    vectors of `lanes` elements of `itemsize` bytes. With AVX2's 16 vector registers 4 × 3 (12
    accumulators); with AVX-512's 32: 4 × 4 on 256-bit vectors, and on 512-bit vectors 6 × 4 (24) where a row
    is at most 4 vectors, else 8 × 3, with 4 tiles per panel from d = 64 (a θ micro-panel then serves 32 rows
    from L1; measured at d = 8–256: benchmarks/STRUCTURED_SPEED.md)."""
    if not _host_avx512():
        return (4, 3, 1)
    if lanes * itemsize < 64:
        return (4, 4, 1)
    vectors = -(-dim // lanes)
    if vectors <= 4:
        return (6, 4, 1)
    return (8, 3, 4 if dim >= 64 else 1)


class BlockKernel:
    """A block program compiled for one dtype: `kernel(X, params)` → {accumulator name: float64 array}.

    `lanes`: SIMD lanes (default `default_lanes(dtype)`); `mr`, `nv`: the register tile (rows × SIMD vectors)
    and `tiles`: register tiles of rows per panel (defaults: `default_tile`); `block_rows`: rows per block
    (default: the arrays the accumulations read fill about `l2_bytes`)."""

    def __init__(
        self,
        program: BlockProgram,
        dtype: str = "float64",
        *,
        mr: int | None = None,
        nv: int | None = None,
        tiles: int | None = None,
        lanes: int | None = None,
        x_dtype: str | None = None,
        block_rows: int | None = None,
        l2_bytes: int = 192 * 1024,
        symbol: str | None = None,
        object_file: Path | None = None,
    ) -> None:
        """`x_dtype`: the rows' dtype (default `dtype`; float64 rows feed a float32 kernel, rounded as the kernel
        copies them into its panels, as numpy's astype would: no converted copy of X).
        `symbol`, `object_file`: the function's name and a file of the private cache directory that keeps its
        object code (verified by native.py's header: sha256, the symbol, the layout and the target); a file that
        does not match is rebuilt, never loaded."""
        self.program = program
        self.dtype = np.dtype(dtype)
        self.x_dtype = np.dtype(x_dtype or dtype)
        if self.x_dtype.itemsize < self.dtype.itemsize or self.x_dtype.kind != "f":
            raise ValueError(f"x_dtype {self.x_dtype} cannot feed a {self.dtype} kernel (float64 rows: float32 ok)")
        lanes = lanes or default_lanes(self.dtype.name, program.dim)
        tile = default_tile(program.dim, lanes, self.dtype.itemsize)
        self.layout = _plan(
            program, self.dtype.name, mr or tile[0], nv or tile[1], tiles or tile[2], block_rows, l2_bytes, lanes
        )
        self.symbol = symbol or _symbol("block")
        self.ir = ""
        self.compiled = False
        obj = None
        tag = ""
        if object_file is not None:
            lay = self.layout
            shape = f"lanes={lay.width} mr={lay.mr} nv={lay.nv} panel={lay.panel} block_rows={lay.block_rows}"
            shape += f" {self.dtype.name} rows={self.x_dtype.name}"
            tag = f"{self.symbol} {shape} {target_description()} codegen-opt={CODEGEN_OPT}"
            obj = _read_object(object_file, tag)
        if obj is None:
            module = ir.Module(name="symsm_blocks")
            _Generator(program, self.layout, module, self.symbol, self.x_dtype.name).build()
            self.ir = str(module)
            obj = compile_module(module, narrow_vectors=False)
            self.compiled = True
            if object_file is not None:
                with contextlib.suppress(OSError):  # an unwritable cache costs a recompile in the next process
                    symsm_cache.write_private_file(object_file, _object_header(tag, obj) + obj)
        address = _load_object(obj, [self.symbol])[self.symbol]
        self._fn = ctypes.CFUNCTYPE(None, _P, _I64, _P, _P, _P, _P)(address)
        self._free_work: list[list[np.ndarray]] = []  # per-thread work buffers, kept between calls
        self._work_lock = threading.Lock()

    def _take_work(self) -> list[np.ndarray]:
        """Work buffers (one per thread slot) no other call is using: the last call's when free, so their pages are
        not faulted in again on every call."""
        with self._work_lock:
            return self._free_work.pop() if self._free_work else []

    def _give_work(self, works: list[np.ndarray]) -> None:
        with self._work_lock:
            if len(self._free_work) < 2:  # concurrent callers beyond two allocate their own
                self._free_work.append(works)

    def pack(self, params: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The θ arrays in the layout the machine code reads (matrices as (k, n) padded, vectors padded)."""
        lay = self.layout
        out = []
        for name, kind in lay.slots:
            shape = lay.params[name].shape
            value = np.asarray(params[name], dtype=self.dtype)
            if value.shape != shape and not (kind == "s" and value.size == 1):
                raise ValueError(f"parameter {name!r} must have shape {shape}, got {value.shape}")
            if kind in ("T", "N"):  # (k, n) in micro-panels of nv vectors of columns, each (k, nv·W) contiguous
                kn = value.T if kind == "T" else value
                k, n = kn.shape
                padded = np.zeros((k, lay.pad(n)), dtype=self.dtype)
                padded[:, :n] = kn
                step = lay.nv * lay.width
                packed = np.concatenate([padded[:, c : c + step].ravel() for c in range(0, padded.shape[1], step)])
            elif kind == "v":
                packed = np.zeros(lay.pad(shape[0]), dtype=self.dtype)
                packed[: shape[0]] = value
            else:
                packed = np.full(1, value.reshape(-1)[0], dtype=self.dtype)
            out.append(packed)
        return out

    def chunks(self, n: int) -> tuple[int, int]:
        """(rows per chunk, number of chunks): depends on n (and the program), never on the thread count."""
        rows = self.layout.block_rows
        n_chunks = max(1, min(MAX_CHUNKS, _ceil(n, rows)))
        per = _ceil(_ceil(n, n_chunks), rows) * rows
        return per, max(1, _ceil(n, per))

    def __call__(
        self, X: np.ndarray, params: Mapping[str, np.ndarray], out: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The accumulators' totals; a program with a per-row output (`RowOut`) writes it into `out`, a
        C-contiguous float64 array (N, n) (or (N,) for width 1)."""
        lay = self.layout
        if not (
            isinstance(X, np.ndarray)
            and X.dtype == self.x_dtype
            and X.ndim == 2
            and X.shape[1] == self.program.dim
            and X.flags.c_contiguous
        ):
            raise TypeError(f"X must be a C-contiguous {self.x_dtype} array of shape (n, {self.program.dim})")
        n = X.shape[0]
        if lay.out_width:
            if not (
                isinstance(out, np.ndarray)
                and out.dtype == np.float64
                and out.size == n * lay.out_width
                and out.shape[:1] == (n,)
                and out.flags.c_contiguous
            ):
                raise TypeError(f"out must be a C-contiguous float64 array of {n} rows of {lay.out_width}")
            o, o_stride = out.ctypes.data, lay.out_width * 8
        else:
            o, o_stride = 0, 0
        packed = self.pack(params)
        pointers = (ctypes.c_void_p * max(1, len(packed)))(*[p.ctypes.data for p in packed])
        per, n_chunks = self.chunks(n)
        partial = np.zeros((n_chunks, lay.acc_size))
        fn, xs, pp = self._fn, X.ctypes.data, ctypes.addressof(pointers)
        row_bytes, part, stride = X.strides[0], partial.ctypes.data, partial.strides[0]

        works = self._take_work()

        def run(slot: int, c: int) -> None:
            while len(works) <= slot:  # entries are only ever added: each slot keeps its own buffer
                works.append(np.empty(max(1, lay.work_size), dtype=self.dtype))
            rows = min(per, n - c * per)
            if rows > 0:
                at = o + c * per * o_stride if o else 0
                fn(xs + c * per * row_bytes, rows, pp, part + c * stride, works[slot].ctypes.data, at)

        try:
            if n:
                run_chunks(run, n_chunks)
        finally:
            self._give_work(works)
        totals = partial[0].copy()
        for row in partial[1:]:  # chunk order: deterministic
            totals += row
        result = {}
        for name, acc in lay.accs.items():
            stored = totals[acc.offset : acc.offset + math.prod(acc.stored)].reshape(acc.stored)
            result[name] = stored[..., : acc.shape[-1]].copy() if acc.shape else stored[0].copy()
            if acc.gram:  # the upper triangle was accumulated
                upper = np.triu(result[name])
                result[name] = upper + np.triu(upper, 1).T
        del packed
        return result


# ---------------------------------------------------------------------- the FMA peak


def fma_peak(dtype: str = "float64", iters: int = 20_000_000, lanes: int | None = None) -> Callable[[], float]:
    """A function measuring one core's FMA throughput: 12 independent vector FMA chains (returns flops done), on
    vectors of `lanes` (default: the block kernels', `default_lanes`)."""
    ctype = _llvm_type(dtype)
    w = lanes or default_lanes(dtype)
    module = ir.Module(name="symsm_fma_peak")
    symbol = _symbol("fma_peak")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, ir.PointerType(ctype)]), symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x = _IR(b, ctype, w)
    n, buf = fn.args
    m = x.vload(buf)
    a = x.vload(x.gep(buf, w))
    chains = 12
    accs = x.loop(
        0, n, 1, lambda _i, c: [x.fma(v, m, a) for v in c],
        [x.vload(x.gep(buf, 2 * w + k * w)) for k in range(chains)], nonempty=True,
    )  # fmt: skip
    total = accs[0]
    for v in accs[1:]:
        total = b.fadd(total, v)
    x.vstore(total, buf)
    b.ret_void()
    address = _load_object(compile_module(module, narrow_vectors=False), [symbol])[symbol]
    cfn = ctypes.CFUNCTYPE(None, _I64, _P)(address)
    flops = 2.0 * chains * w * iters

    def run() -> float:
        data = np.full((2 + chains) * w, 0.5, dtype=dtype)
        data[:w] = 0.999
        cfn(iters, data.ctypes.data)
        return flops

    return run
