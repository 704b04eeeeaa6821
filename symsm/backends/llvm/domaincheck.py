"""One compiled pass over X that accepts rows on the unit sphere or on the simplex (symsm.core.arrays'
`_check_manifold_rows` criterion) and, by the same token, rows with finite entries only.

`rows_on_manifold(arr, domain, positive)` is a filter: True means every row passes the test below, so the host
may skip both its finiteness pass and its chunked numpy domain pass; False means "let numpy look" — the host
then runs `as_data`'s full checks, which raise the usual error naming the first offending row (or accept a row
that only this test's arithmetic put at the edge of the tolerance).

The test per row, in the data's dtype (as the numpy pass computes it), branch-free with ordered comparisons so
that a NaN or ±∞ anywhere fails it:

* sphere: |Σ xⱼ² − 1| ≤ tol (⇒ |‖x‖ − 1| < tol);
* simplex: every xⱼ ≥ 0 (> 0 where the method needs it) and |Σ xⱼ − 1| ≤ tol (entries ≥ 0 and a finite sum:
  all finite).

tol = √ε of the dtype, as in symsm.core.arrays. The loop takes GROUP rows at a time as SIMD lanes (their
GROUP·d contiguous entries loaded at once, each column a shuffle; the same sums in the same order as one row at a
time), the last N mod GROUP rows one by one, with the d entries unrolled (d is fixed per function); one function
per (domain, positive, d, dtype), compiled on first use and kept; the rows split into blocks on the kernels'
threads (symsm.core.threads).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from functools import cache

import numpy as np
from llvmlite import ir

from ...core.threads import run_blocks
from .native import _load_object, compile_module

__all__ = ["rows_on_manifold"]

I1 = ir.IntType(1)
I64 = ir.IntType(64)
MAX_DIM = 64  # the unrolled row body: wider data keep numpy's pass
BLOCK_ROWS = 1 << 15  # rows per block at least (a block is one call from one of the kernels' threads)
MAX_BLOCKS = 16
GROUP = 4  # rows tested together, one per SIMD lane
_lock = threading.Lock()


def _build(domain: str, positive: bool, d: int, dtype: str) -> ir.Module:
    ctype = ir.DoubleType() if dtype == "float64" else ir.FloatType()
    tol = float(np.sqrt(np.finfo(np.dtype(dtype)).eps))
    module = ir.Module(name=f"symsm_domaincheck_{domain}_{d}_{dtype}")
    fn = ir.Function(module, ir.FunctionType(I64, [ir.PointerType(ctype), I64]), name="symsm_domaincheck")
    x_p, n = fn.args
    entry = fn.append_basic_block("entry")
    vloop, vdone = fn.append_basic_block("vloop"), fn.append_basic_block("vdone")
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    wide = ir.VectorType(ctype, GROUP)
    group = ir.Constant(I64, GROUP)
    n_wide = b.mul(b.sdiv(n, group), group)  # rows [0, n_wide) in groups of GROUP, the rest one at a time
    b.cbranch(b.icmp_signed(">", n_wide, ir.Constant(I64, 0)), vloop, vdone)

    # GROUP rows at once: their GROUP·d contiguous entries as one vector, column j by a shuffle (lanes are
    # rows), the same test on vectors of GROUP rows
    b.position_at_end(vloop)
    vi = b.phi(I64, "vi")
    vok = b.phi(ir.VectorType(I1, GROUP), "vok")
    vi.add_incoming(ir.Constant(I64, 0), entry)
    vok.add_incoming(ir.Constant(ir.VectorType(I1, GROUP), [1] * GROUP), entry)
    ptr = b.bitcast(b.gep(x_p, [b.mul(vi, ir.Constant(I64, d))]), ir.PointerType(ir.ArrayType(ctype, GROUP * d)))
    block = b.load(b.bitcast(ptr, ir.PointerType(ir.VectorType(ctype, GROUP * d))), align=np.dtype(dtype).itemsize)
    undef = ir.Constant(ir.VectorType(ctype, GROUP * d), ir.Undefined)
    columns = [
        b.shuffle_vector(
            block, undef, ir.Constant(ir.VectorType(ir.IntType(32), GROUP), [j + k * d for k in range(GROUP)])
        )
        for j in range(d)
    ]
    vok_next = b.and_(vok, _row_test(b, columns, domain, positive, wide, tol))
    vi_next = b.add(vi, group)
    vi.add_incoming(vi_next, vloop)
    vok.add_incoming(vok_next, vloop)
    b.cbranch(b.icmp_signed("<", vi_next, n_wide), vloop, vdone)

    b.position_at_end(vdone)
    lanes = b.phi(ir.VectorType(I1, GROUP), "lanes")
    lanes.add_incoming(ir.Constant(ir.VectorType(I1, GROUP), [1] * GROUP), entry)
    lanes.add_incoming(vok_next, vloop)
    wide_ok = b.extract_element(lanes, ir.Constant(ir.IntType(32), 0))
    for k in range(1, GROUP):
        wide_ok = b.and_(wide_ok, b.extract_element(lanes, ir.Constant(ir.IntType(32), k)))
    b.cbranch(b.icmp_signed("<", n_wide, n), loop, done)

    b.position_at_end(loop)
    i = b.phi(I64, "i")
    ok = b.phi(I1, "ok")
    i.add_incoming(n_wide, vdone)
    ok.add_incoming(wide_ok, vdone)
    base = b.mul(i, ir.Constant(I64, d))
    values = [b.load(b.gep(x_p, [b.add(base, ir.Constant(I64, j))])) for j in range(d)]
    ok_next = b.and_(ok, _row_test(b, values, domain, positive, ctype, tol))
    i_next = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(i_next, loop)
    ok.add_incoming(ok_next, loop)
    b.cbranch(b.icmp_signed("<", i_next, n), loop, done)

    b.position_at_end(done)
    result = b.phi(I1, "result")
    result.add_incoming(wide_ok, vdone)
    result.add_incoming(ok_next, loop)
    b.ret(b.zext(result, I64))
    return module


def _row_test(b: ir.IRBuilder, values: list, domain: str, positive: bool, ty: ir.Type, tol: float) -> ir.Value:
    """The module docstring's test of one row (scalars) or of GROUP rows (vectors of `ty`, one lane a row)."""

    def const(v: float) -> ir.Constant:
        return ir.Constant(ty, [v] * ty.count) if isinstance(ty, ir.VectorType) else ir.Constant(ty, v)

    total = None
    row_ok = None
    for v in values:
        if domain == "sphere":
            term = b.fmul(v, v)
        else:
            term = v
            sign = b.fcmp_ordered(">" if positive else ">=", v, const(0.0))
            row_ok = sign if row_ok is None else b.and_(row_ok, sign)
        total = term if total is None else b.fadd(total, term)
    dev = b.fsub(total, const(1.0))
    within = b.and_(b.fcmp_ordered("<=", dev, const(tol)), b.fcmp_ordered(">=", dev, const(-tol)))
    return within if row_ok is None else b.and_(row_ok, within)


@cache
def _function(domain: str, positive: bool, d: int, dtype: str) -> Callable[[int, int], int]:
    with _lock:
        obj = compile_module(_build(domain, positive, d, dtype))
        address = _load_object(obj, ["symsm_domaincheck"])["symsm_domaincheck"]
        fn: Callable[[int, int], int] = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(address)
        return fn


def rows_on_manifold(arr: np.ndarray, domain: str, positive: bool = False) -> bool:
    """Whether every row of the C-contiguous float64/float32 (N, d) `arr` is finite and on `domain` ("sphere" or
    "simplex"; `positive`: simplex entries > 0 rather than ≥ 0) by the test of the module docstring. False also
    where this pass does not apply (another dtype or layout, d > MAX_DIM): the caller's own check decides."""
    if (
        arr.ndim != 2
        or arr.dtype.name not in ("float64", "float32")
        or not arr.flags.c_contiguous
        or not 0 < arr.shape[1] <= MAX_DIM
        or domain not in ("sphere", "simplex")
    ):
        return False
    fn = _function(domain, positive and domain == "simplex", arr.shape[1], arr.dtype.name)
    n, row_bytes, base = arr.shape[0], arr.shape[1] * arr.itemsize, arr.ctypes.data
    n_blocks = min(MAX_BLOCKS, -(-n // BLOCK_ROWS))
    ok = [True] * n_blocks

    def blocks(lo: int, hi: int) -> None:  # ctypes releases the GIL: the threads read their rows in parallel
        for k in range(lo, hi):
            start, stop = k * n // n_blocks, (k + 1) * n // n_blocks
            ok[k] = bool(fn(base + start * row_bytes, stop - start))

    run_blocks(blocks, n_blocks)
    return all(ok)
