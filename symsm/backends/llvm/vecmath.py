"""Vectorised elementary functions written in LLVM IR (llvmlite), for the CPU kernels.

numba calls the C library for math.exp/log/tanh one scalar at a time, which stops LLVM from vectorising a
loop over samples; without Intel's SVML there is no vector math library to map the calls to. These
implementations use only arithmetic, comparisons, selects and integer bit operations on vectors, so a whole
kernel body runs on SIMD registers. They are the classic, well-analysed reductions (Cody–Waite argument
reduction with a Taylor polynomial for exp/expm1; fdlibm's log), accurate to a few ulp in float64 over the
whole range, with IEEE special values (±inf, nan, ±0, subnormals) handled by selects. tests/test_vecmath.py
measures the errors against numpy.

Each function is defined once per LLVM module as an internal, always-inlined function on `<W x double>` or
`<W x float>`. The float32 versions are the same reductions with float32 constants and shorter polynomials
(musl's expf/logf splits of ln 2 and logf's coefficients), a few ulp of float32: computing float32 lanes
through float64 (two registers per eight lanes, conversions both ways) cost as much as the float64 kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from llvmlite import ir

__all__ = ["VECTOR_FUNCTIONS", "vector_function"]

F64 = ir.DoubleType()
F32 = ir.FloatType()
I64 = ir.IntType(64)
I32 = ir.IntType(32)

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
LN2_HI = 6.93147180369123816490e-01  # high part with trailing zero bits: k·LN2_HI is exact for |k| < 2**11
LN2_LO = 1.90821492927058770002e-10
SHIFTER = 6755399441055744.0  # 1.5·2**52: adding it rounds to an integer held in the low mantissa bits
EXP_MAX = 709.782712893384  # largest x with exp(x) finite
EXP_MIN = -745.1332191019412  # below: exp(x) rounds to 0
SQRT2 = 1.4142135623730951
TWO54 = 18014398509481984.0
MIN_NORMAL = 2.2250738585072014e-308
# fdlibm e_log.c: log(1+f) = f - f²/2 + s·(f²/2 + R(s²)), s = f/(2+f)
LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)


def _f32(bits: int) -> float:
    """The float32 value with these bits (as a Python float, exactly)."""
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


# float32: musl's expf/logf constants (a split of ln 2 whose high part has trailing zero bits) and logf's
# minimax coefficients of R(s²) on the same reduced range as fdlibm's
LN2_HI32_EXP = _f32(0x3F317200)  # k·LN2_HI32_EXP exact for |k| < 2**9
LN2_LO32_EXP = _f32(0x35BFBE8E)
LN2_HI32_LOG = _f32(0x3F317180)
LN2_LO32_LOG = _f32(0x3717F7D1)
LG32 = (0xAAAAAA / 2.0**24, 0xCCCE13 / 2.0**25, 0x91E9EE / 2.0**25, 0xF89E26 / 2.0**26)
SHIFTER32 = 12582912.0  # 1.5·2**23
MIN_NORMAL32 = 1.1754943508222875e-38
TWO25 = 33554432.0


class _Ops:
    """Small helpers over one IRBuilder for vectors of `width` doubles (or floats: `ctype` F32, with
    32-bit integers for the bit operations)."""

    def __init__(self, builder: ir.IRBuilder, width: int, ctype: ir.Type = F64) -> None:
        self.b = builder
        self.w = width
        self.f32 = ctype == F32
        self.vf = ir.VectorType(ctype, width)
        self.vi = ir.VectorType(I32 if self.f32 else I64, width)

    def c(self, value: float) -> ir.Constant:
        value = float(np.float32(value)) if self.f32 else float(value)  # float32: rounded to nearest
        return ir.Constant(self.vf, [value] * self.w)

    def ci(self, value: int) -> ir.Constant:
        return ir.Constant(self.vi, [int(value)] * self.w)

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        return self.b.call(declare_intrinsic(self.b.module, name, self.vf, len(args)), list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.intrinsic("llvm.fma", a, b, c)

    def add(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fadd(a, b)

    def sub(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fsub(a, b)

    def mul(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fmul(a, b)

    def div(self, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fdiv(a, b)

    def select(self, cond: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.select(cond, a, b)

    def cmp(self, op: str, a: ir.Value, b: ir.Value) -> ir.Value:
        return self.b.fcmp_ordered(op, a, b)

    def horner(self, x: ir.Value, coeffs: list[float]) -> ir.Value:
        """c0 + x·(c1 + x·(c2 + ...)) with fused multiply-adds; coeffs from c0 upwards."""
        acc = self.c(coeffs[-1])
        for coeff in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, self.c(coeff))
        return acc

    def as_int(self, x: ir.Value) -> ir.Value:
        return self.b.bitcast(x, self.vi)

    def as_float(self, x: ir.Value) -> ir.Value:
        return self.b.bitcast(x, self.vf)


def _exp(o: _Ops, x: ir.Value) -> ir.Value:
    if o.f32:
        return _exp32(o, x)
    xc = o.intrinsic("llvm.minnum", o.intrinsic("llvm.maxnum", x, o.c(-746.0)), o.c(710.0))
    shifted = o.fma(xc, o.c(LOG2E), o.c(SHIFTER))
    kd = o.sub(shifted, o.c(SHIFTER))
    r = o.fma(kd, o.c(-LN2_HI), xc)
    r = o.fma(kd, o.c(-LN2_LO), r)
    p = o.horner(r, [1.0 / math.factorial(n) for n in range(14)])  # |r| ≤ ln2/2: error r¹⁴/14! < 2⁻⁵⁸
    k = o.b.sub(o.as_int(shifted), o.ci(0x4338000000000000))  # integer k from the mantissa bits
    k1 = o.b.ashr(k, o.ci(1))
    k2 = o.b.sub(k, k1)  # 2**k = 2**k1 · 2**k2 keeps both factors normal for k in [-1075, 1024]
    s1 = o.as_float(o.b.shl(o.b.add(k1, o.ci(1023)), o.ci(52)))
    s2 = o.as_float(o.b.shl(o.b.add(k2, o.ci(1023)), o.ci(52)))
    y = o.mul(o.mul(p, s1), s2)
    y = o.select(o.cmp(">", x, o.c(EXP_MAX)), o.c(math.inf), y)
    y = o.select(o.cmp("<", x, o.c(EXP_MIN)), o.c(0.0), y)
    return o.select(o.b.fcmp_unordered("uno", x, x), x, y)


def _exp32(o: _Ops, x: ir.Value) -> ir.Value:
    """expf: the same reduction as _exp; 2**k in [2**-150, 2**128] as two normal factors."""
    xc = o.intrinsic("llvm.minnum", o.intrinsic("llvm.maxnum", x, o.c(-104.0)), o.c(89.0))
    shifted = o.fma(xc, o.c(LOG2E), o.c(SHIFTER32))
    kd = o.sub(shifted, o.c(SHIFTER32))
    r = o.fma(kd, o.c(-LN2_HI32_EXP), xc)
    r = o.fma(kd, o.c(-LN2_LO32_EXP), r)
    p = o.horner(r, [1.0 / math.factorial(n) for n in range(8)])  # |r| ≤ ln2/2: error r⁸/8! < 2⁻²⁷
    k = o.b.sub(o.as_int(shifted), o.ci(0x4B400000))
    k1 = o.b.ashr(k, o.ci(1))
    k2 = o.b.sub(k, k1)
    s1 = o.as_float(o.b.shl(o.b.add(k1, o.ci(127)), o.ci(23)))
    s2 = o.as_float(o.b.shl(o.b.add(k2, o.ci(127)), o.ci(23)))
    y = o.mul(o.mul(p, s1), s2)  # overflows to inf by itself above log(FLT_MAX)
    y = o.select(o.cmp(">", x, o.c(89.0)), o.c(math.inf), y)
    y = o.select(o.cmp("<", x, o.c(-104.0)), o.c(0.0), y)
    return o.select(o.b.fcmp_unordered("uno", x, x), x, y)


def _expm1(o: _Ops, x: ir.Value) -> ir.Value:
    # |x| ≤ ln 2: x·(1 + x/2 + x²/6 + ...) to x¹⁷/18!, relative error < 2⁻⁶⁰ (float32: to x⁹/10!, < 2⁻²⁶);
    # elsewhere exp(x) − 1 loses nothing (exp(x) ≤ 1/2 or ≥ 2).
    terms = 10 if o.f32 else 18
    small = o.mul(x, o.horner(x, [1.0 / math.factorial(n + 1) for n in range(terms)]))
    large = o.sub(_exp(o, x), o.c(1.0))
    ax = o.intrinsic("llvm.fabs", x)
    return o.select(o.cmp("<=", ax, o.c(LN2)), small, large)


def _tanh(o: _Ops, x: ir.Value) -> ir.Value:
    # tanh|x| = −e/(2 + e) with e = expm1(−2|x|) ∈ (−1, 0]: no cancellation anywhere.
    ax = o.intrinsic("llvm.fabs", x)
    e = _expm1(o, o.mul(ax, o.c(-2.0)))
    t = o.div(o.b.fneg(e), o.add(o.c(2.0), e))
    return o.intrinsic("llvm.copysign", t, x)


def _log32(o: _Ops, x: ir.Value) -> ir.Value:
    """logf: _log's reduction in float32 (musl's logf: R(s²) of degree 4)."""
    sub = o.cmp("<", x, o.c(MIN_NORMAL32))
    xs = o.select(sub, o.mul(x, o.c(TWO25)), x)
    bits = o.as_int(xs)
    e = o.b.sub(o.b.lshr(bits, o.ci(23)), o.ci(127))
    e = o.b.sub(e, o.b.select(sub, o.ci(25), o.ci(0)))
    m = o.as_float(o.b.or_(o.b.and_(bits, o.ci(0x007FFFFF)), o.ci(0x3F800000)))
    big = o.cmp(">", m, o.c(SQRT2))
    m = o.select(big, o.mul(m, o.c(0.5)), m)
    e = o.b.add(e, o.b.select(big, o.ci(1), o.ci(0)))
    f = o.sub(m, o.c(1.0))
    s = o.div(f, o.add(o.c(2.0), f))
    z = o.mul(s, s)
    w = o.mul(z, z)
    t1 = o.mul(w, o.horner(w, [LG32[1], LG32[3]]))
    t2 = o.mul(z, o.horner(w, [LG32[0], LG32[2]]))
    big_r = o.add(t2, t1)
    hfsq = o.mul(o.mul(o.c(0.5), f), f)
    dk = o.b.sitofp(e, o.vf)
    inner = o.sub(hfsq, o.add(o.mul(s, o.add(hfsq, big_r)), o.mul(dk, o.c(LN2_LO32_LOG))))
    y = o.sub(o.mul(dk, o.c(LN2_HI32_LOG)), o.sub(inner, f))
    y = o.select(o.cmp("==", x, o.c(0.0)), o.c(-math.inf), y)
    y = o.select(o.cmp("==", x, o.c(math.inf)), o.c(math.inf), y)
    return o.select(o.b.fcmp_unordered("ult", x, o.c(0.0)), o.c(math.nan), y)


def _log(o: _Ops, x: ir.Value) -> ir.Value:
    if o.f32:
        return _log32(o, x)
    sub = o.cmp("<", x, o.c(MIN_NORMAL))
    xs = o.select(sub, o.mul(x, o.c(TWO54)), x)
    bits = o.as_int(xs)
    e = o.b.sub(o.b.lshr(bits, o.ci(52)), o.ci(1023))
    e = o.b.sub(e, o.b.select(sub, o.ci(54), o.ci(0)))
    m = o.as_float(o.b.or_(o.b.and_(bits, o.ci(0x000FFFFFFFFFFFFF)), o.ci(0x3FF0000000000000)))
    big = o.cmp(">", m, o.c(SQRT2))
    m = o.select(big, o.mul(m, o.c(0.5)), m)
    e = o.b.add(e, o.b.select(big, o.ci(1), o.ci(0)))
    f = o.sub(m, o.c(1.0))
    s = o.div(f, o.add(o.c(2.0), f))
    z = o.mul(s, s)
    w = o.mul(z, z)
    t1 = o.mul(w, o.horner(w, [LG[1], LG[3], LG[5]]))
    t2 = o.mul(z, o.horner(w, [LG[0], LG[2], LG[4], LG[6]]))
    big_r = o.add(t2, t1)
    hfsq = o.mul(o.mul(o.c(0.5), f), f)
    dk = o.b.sitofp(e, o.vf)
    inner = o.sub(hfsq, o.add(o.mul(s, o.add(hfsq, big_r)), o.mul(dk, o.c(LN2_LO))))
    y = o.sub(o.mul(dk, o.c(LN2_HI)), o.sub(inner, f))
    y = o.select(o.cmp("==", x, o.c(0.0)), o.c(-math.inf), y)
    y = o.select(o.cmp("==", x, o.c(math.inf)), o.c(math.inf), y)
    return o.select(o.b.fcmp_unordered("ult", x, o.c(0.0)), o.c(math.nan), y)  # x < 0 or nan


def _log1p(o: _Ops, x: ir.Value) -> ir.Value:
    # log1p(x) = log(u)·x/(u − 1) with u = 1 + x (exact correction of the rounding of u; Goldberg 1991).
    u = o.add(o.c(1.0), x)
    corrected = o.mul(_log(o, u), o.div(x, o.sub(u, o.c(1.0))))
    y = o.select(o.cmp("==", u, o.c(1.0)), x, corrected)
    y = o.select(o.cmp("==", x, o.c(math.inf)), o.c(math.inf), y)
    return o.select(o.cmp("==", x, o.c(-1.0)), o.c(-math.inf), y)


def declare_intrinsic(module: ir.Module, name: str, ty: ir.Type, n_args: int) -> ir.Function:
    """An overloaded LLVM intrinsic such as llvm.fma.v4f64 (llvmlite cannot mangle vector types itself)."""
    if isinstance(ty, ir.VectorType):
        suffix = f"v{ty.count}{'f64' if ty.element == F64 else 'f32'}"
    else:
        suffix = "f64" if ty == F64 else "f32"
    symbol = f"{name}.{suffix}"
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ty, [ty] * n_args), symbol)


_BUILDERS: dict[str, Callable[[_Ops, ir.Value], ir.Value]] = {
    "exp": _exp,
    "expm1": _expm1,
    "tanh": _tanh,
    "log": _log,
    "log1p": _log1p,
}
VECTOR_FUNCTIONS = frozenset(_BUILDERS)


def vector_function(module: ir.Module, name: str, width: int, ctype: ir.Type = F64) -> ir.Function:
    """The function `symsm.v{name}.{width}` (<W x double> → <W x double>; `symsm.v{name}.{width}f` on
    <W x float> for `ctype` F32), defined in `module` once."""
    symbol = f"symsm.v{name}.{width}" + ("f" if ctype == F32 else "")
    existing = module.globals.get(symbol)
    if existing is not None:
        return existing
    vf = ir.VectorType(ctype, width)
    fn = ir.Function(module, ir.FunctionType(vf, [vf]), symbol)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    builder.ret(_BUILDERS[name](_Ops(builder, width, ctype), fn.args[0]))
    return fn
