"""float32 CPU kernels: float32 vector math (ulp against numpy), column loads and masked tails against float64,
sums that stay accurate over long blocks of rows (float32 within chunks, float64 across them), and results
bit-identical whatever the thread count."""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
import sympy as sp
from llvmlite import ir

import symsm
from symsm.backends.llvm import kernels, native
from symsm.backends.llvm.vecmath import F32, VECTOR_FUNCTIONS, vector_function
from symsm.core import threads

WIDTH = 8
REFERENCE = {"exp": np.exp, "expm1": np.expm1, "tanh": np.tanh, "log": np.log, "log1p": np.log1p}
MAX_ULP = {"exp": 1.0, "expm1": 2.0, "tanh": 3.0, "log": 1.0, "log1p": 3.0}  # of float32, against float64 numpy


def _apply(name: str):
    """f(x, out, n): the float32 vector function over n float32 values (n divisible by WIDTH)."""
    module = ir.Module(name=f"test_f32_{name}")
    vf, pf, i64 = ir.VectorType(F32, WIDTH), ir.PointerType(F32), ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pf, pf, i64]), f"apply_{name}")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x, out, n = fn.args
    head, body, done = (b.append_basic_block(s) for s in ("head", "body", "done"))
    entry = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    v = b.load(b.bitcast(b.gep(x, [i]), ir.PointerType(vf)), align=4)
    r = b.call(vector_function(module, name, WIDTH, F32), [v])
    b.store(r, b.bitcast(b.gep(out, [i]), ir.PointerType(vf)), align=4)
    i.add_incoming(b.add(i, ir.Constant(i64, WIDTH)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    address = native._load_object(native.compile_module(module), [f"apply_{name}"])[f"apply_{name}"]
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(address)


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(5)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1.0, -1.0, 0.5, 2.0, 3.4e38]
    if name == "exp":
        parts = [rng.uniform(-87, 88.7, 100000), rng.uniform(-1, 1, 50000), [88.72, 89.5, -103.0, -105.0]]
    elif name in ("expm1", "tanh"):
        parts = [rng.uniform(-20, 20, 100000), rng.uniform(-1, 1, 50000), rng.uniform(-1e-4, 1e-4, 2000)]
        parts.append([0.6931, -0.6932, 0.3465, 0.3466, 9.0, 10.0, 89.0])
    elif name == "log":
        parts = [np.exp(rng.uniform(-87, 88, 100000)), rng.uniform(0.5, 2, 50000), [1.4142135, 0.70710677]]
    else:  # log1p
        parts = [np.exp(rng.uniform(-40, 88, 100000)), -rng.uniform(0, 1, 50000), rng.uniform(-1e-6, 1e-6, 2000)]
        parts.append([-2.0, -0.9999999])
    x = np.concatenate([*map(np.asarray, parts), special]).astype(np.float32)
    return np.concatenate([x, np.zeros((-x.size) % WIDTH, np.float32)])


@pytest.mark.parametrize("name", sorted(VECTOR_FUNCTIONS))
def test_float32_vector_function_accuracy_and_special_values(name):
    x = _inputs(name)
    out = np.empty_like(x)
    _apply(name)(x.ctypes.data, out.ctypes.data, x.size)
    with np.errstate(all="ignore"):
        exact = REFERENCE[name](x.astype(np.float64))
        ref = exact.astype(np.float32)
    assert np.array_equal(np.isnan(ref), np.isnan(out)), x[np.isnan(ref) != np.isnan(out)][:5]
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]), x[inf][out[inf] != ref[inf]][:5]
    normal = np.isfinite(ref) & (np.abs(ref) >= np.finfo(np.float32).tiny)
    ulp = np.abs(out[normal] - exact[normal]) / np.spacing(np.abs(ref[normal])).astype(np.float64)
    assert ulp.max() <= MAX_ULP[name], (ulp.max(), x[normal][np.argmax(ulp)])
    tiny = np.isfinite(ref) & ~normal  # subnormal results: within a few subnormal steps
    assert np.all(np.abs(out[tiny] - ref[tiny]) <= 4 * np.finfo(np.float32).smallest_subnormal)
    zeros = normal & (ref == 0)
    assert np.array_equal(np.signbit(out[zeros]), np.signbit(ref[zeros]))


def _columns_model(d: int) -> symsm.Model:
    """Every column read differently (a transposition error would show): tanh, log1p, products of neighbours."""
    x = sp.symbols(f"x0:{d}", real=True)
    m = sp.symbols(f"m0:{d}", real=True)
    a = sp.symbols(f"a0:{d}", real=True)
    log_f = sum(
        -sp.log(1 + (x[i] - m[i]) ** 2 / (i + 2)) + a[i] * sp.tanh(x[i] * x[(i + 1) % d] / (i + 1)) for i in range(d)
    )
    return symsm.Model(log_f, x, [*m, *a], name=f"f32_columns_{d}")


@pytest.mark.parametrize("d", [1, 4, 5, 8, 11])
def test_float32_kernels_agree_with_float64_on_columns_and_masked_tails(d):
    model = _columns_model(d)
    f64, f32 = model.compile(), model.compile(dtype=np.float32)
    rng = np.random.default_rng(d)
    theta = rng.normal(0.0, 0.5, model.n_params)
    X = rng.normal(0.0, 1.5, (1003, d)).astype(np.float32).astype(np.float64)  # the same values in both
    for n in (1, 7, 8, 9, 300, 1003):
        v64, g64 = f64.value_and_grad(theta, X[:n])
        v32, g32 = f32.value_and_grad(theta, X[:n].astype(np.float32))
        assert abs(v32 - v64) <= 1e-5 * abs(v64) + 1e-6
        assert np.max(np.abs(g32 - g64)) <= 1e-5 * np.max(np.abs(g64)) + 1e-6
        s64, s32 = f64.score(theta, X[:n]), f32.score(theta, X[:n].astype(np.float32))
        np.testing.assert_allclose(s32, s64, rtol=2e-5, atol=2e-6 * np.abs(s64).max())
        p64, p32 = f64.per_sample(theta, X[:n]), f32.per_sample(theta, X[:n].astype(np.float32))
        np.testing.assert_allclose(p32, p64, rtol=2e-5, atol=2e-6 * np.abs(p64).max())


def _block_totals(loss: symsm.CompiledLoss, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The per-row sums of value_and_grad's kernel over all rows of X as one block (one thread, one call)."""
    kernel = loss._module.value_and_grad
    fns = kernel.functions()
    th = np.ascontiguousarray(theta, dtype=kernel.dtype)
    consts = np.empty(max(1, len(kernel.tables["consts"])), dtype=kernel.dtype)
    fns["prologue"](th.ctypes.data, consts.ctypes.data)
    buf = np.empty(kernel.buffer, dtype=kernel.dtype)
    out = np.zeros(kernel.n_totals + 1)  # the last: the block's finiteness flag
    fns["block"](th.ctypes.data, consts.ctypes.data, X.ctypes.data, 0, X.shape[0], buf.ctypes.data, out.ctypes.data)
    assert out[-1] == 0.0
    return out[:-1]


def test_float32_sums_over_a_long_block_keep_float64_accuracy():
    """2·10⁶ rows in one block: each lane adds ≤ F32_CHUNK / 8 = 32 rows in float32 before the chunk's sum goes
    into float64, so the error does not grow with the rows. (A float32 running sum per lane would add 250 000
    terms: relative errors up to ~250 000 · 2⁻²⁴ ≈ 1.5 %, typically ~10⁻⁴.)"""
    d = 2
    x = sp.symbols(f"x0:{d}", real=True)
    W = symsm.matrix("W", d, d)
    y = W * sp.Matrix(x)
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), x, {"W": W}, name="f32_long_block")
    theta = np.array([1.0, 0.3, -0.2, 0.8])
    n = 2_000_000
    X32 = np.random.default_rng(1).laplace(0.0, 1.0, (n, d)).astype(np.float32)
    t64 = _block_totals(model.compile(), theta, X32.astype(np.float64))
    t32 = _block_totals(model.compile(dtype=np.float32), theta, X32)
    scale = np.abs(t64).max()
    rel = np.abs(t32 - t64) / scale
    assert rel.max() < 1e-6, rel
    assert kernels.chunk_rows(0, "float32") <= kernels.F32_CHUNK


def test_float32_results_do_not_depend_on_the_thread_count(monkeypatch):
    model = _columns_model(3)
    loss = model.compile(dtype=np.float32)
    theta = np.linspace(-0.5, 0.5, model.n_params)
    X = np.random.default_rng(2).normal(size=(300_001, 3)).astype(np.float32)
    results = []
    for t in (1, 2, 3):
        monkeypatch.setattr(threads, "threads", lambda t=t: t)
        v, g = loss.value_and_grad(theta, X)
        results.append((v, g.tobytes()))
    assert results[0] == results[1] == results[2]


def test_float32_input_check_sums_in_float32_and_still_finds_non_finite_values():
    from symsm.core.arrays import _all_finite

    X = np.ones((200_000, 2), np.float32)
    assert _all_finite(X)
    X[150_000, 1] = 3e38  # finite, but a float32 sum of its chunk overflows: the elementwise check decides
    X[150_001, 1] = 3e38
    assert _all_finite(X)
    for bad in (np.inf, -np.inf, np.nan):
        Y = X.copy()
        Y[199_999, 0] = bad
        assert not _all_finite(Y)


def test_float32_sums_of_ten_million_values_match_math_fsum():
    """The accumulation alone, through the second-moments sum kernel (a plain sum Σ x and a product tile
    Σ x·x): 10⁷ float32 values in [0.05, 0.15) against math.fsum of the same values in float64. A float32
    running sum loses the low digits once the total dwarfs the terms (here: ~1 % wrong); float32 lanes over
    ≤ 32 terms, then float64, keep the error near float32's resolution of one term."""
    from symsm.runtime.moments import _module

    n = 10_000_000
    x = np.random.default_rng(7).uniform(0.05, 0.15, n).astype(np.float32)
    means = _module(1, np.dtype(np.float32)).moments(np.zeros(1, np.float32), x.reshape(n, 1))
    x64 = x.astype(np.float64)
    exact = [math.fsum(x64.tolist()) / n, math.fsum((x64 * x64).tolist()) / n]  # x64² is exact: 48 bits
    rel = np.abs(np.asarray(means) - exact) / np.abs(exact)
    assert rel.max() < 1e-8, rel  # measured ~2e-10: the errors of the chunks do not add up
    naive = float(np.cumsum(x, dtype=np.float32)[-1]) / n  # one float32 running sum
    assert abs(naive - exact[0]) / exact[0] > 1e-3


def test_float32_kernels_use_256_bit_registers_only():
    """A float32 sum kernel's float64 accumulators (8 lanes) and row indices (8 × i64) are 512-bit vectors in
    its IR; compiled, they must be split into 256-bit registers: code with zmm registers runs at a lower clock
    on many Intel CPUs (benchmarks/FLOAT32.md). Only hosts with AVX-512 could use zmm at all."""
    kernel = _columns_model(5).compile(dtype=np.float32)._module.value_and_grad
    module = ir.Module(name="f32_register_width")
    kernel.build(module)
    assembly = native._target_machine(native.CODEGEN_OPT).emit_assembly(native.optimised_module(module))
    assert "vfmadd" in assembly and "ymm" in assembly  # the kernel is there, vectorised
    assert "zmm" not in assembly
