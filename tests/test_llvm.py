"""symsm.llvm: vectorised elementary functions (accuracy in ulp, IEEE special values) and the SIMD
kernels against the readable numba-python reference backend."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from llvmlite import ir
from models import CASES
from numba import njit, types
from numba.extending import intrinsic

import symsm
from symsm.backends.llvm import native
from symsm.backends.llvm.vecmath import VECTOR_FUNCTIONS, vector_function
from symsm.core import cache

WIDTH = 4


def _vector_apply(name: str):
    """njit f(x, out) applying the vector function to x, WIDTH elements at a time (len divisible by WIDTH)."""

    @intrinsic
    def apply(typingctx, x, out, i):
        def codegen(context, builder, sig, args):
            xa = context.make_array(sig.args[0])(context, builder, args[0])
            oa = context.make_array(sig.args[1])(context, builder, args[1])
            vec = ir.Constant(ir.VectorType(ir.DoubleType(), WIDTH), ir.Undefined)
            for lane in range(WIDTH):
                ptr = builder.gep(xa.data, [builder.add(args[2], ir.Constant(ir.IntType(64), lane))])
                vec = builder.insert_element(vec, builder.load(ptr), ir.Constant(ir.IntType(32), lane))
            res = builder.call(vector_function(builder.module, name, WIDTH), [vec])
            for lane in range(WIDTH):
                ptr = builder.gep(oa.data, [builder.add(args[2], ir.Constant(ir.IntType(64), lane))])
                builder.store(builder.extract_element(res, ir.Constant(ir.IntType(32), lane)), ptr)
            return context.get_dummy_value()

        return types.void(x, out, i), codegen

    @njit
    def run(x, out):
        for i in range(0, x.size, WIDTH):
            apply(x, out, i)

    return run


REFERENCE = {"exp": np.exp, "expm1": np.expm1, "tanh": np.tanh, "log": np.log, "log1p": np.log1p}
MAX_ULP = {"exp": 1.0, "expm1": 2.0, "tanh": 3.0, "log": 1.0, "log1p": 2.0}


def _inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-310, -1e-310, 5e-324, 1.0, -1.0, 0.5, 2.0]
    if name == "exp":
        parts = [rng.uniform(-745, 709.7, 40000), rng.uniform(-1, 1, 40000), [709.78, -745.13, -740.0, -708.5]]
    elif name in ("expm1", "tanh"):
        parts = [
            rng.uniform(-40, 40, 40000),
            rng.uniform(-1, 1, 40000),
            rng.uniform(-1e-9, 1e-9, 2000),
            [0.6931, -0.6932, 0.3465, 0.3466, 20.0, 23.0, 710.0],
        ]
    elif name == "log":
        parts = [10 ** rng.uniform(-307, 308, 40000), rng.uniform(0.5, 2, 40000), [np.sqrt(2), 0.7071067811865476]]
    else:  # log1p
        parts = [10 ** rng.uniform(-20, 300, 40000), -rng.uniform(0, 1, 40000), rng.uniform(-1e-8, 1e-8, 2000), [-2.0]]
    x = np.concatenate([*map(np.asarray, parts), special])
    pad = (-x.size) % WIDTH
    return np.concatenate([x, np.zeros(pad)])


@pytest.mark.parametrize("name", sorted(VECTOR_FUNCTIONS))
def test_vector_function_accuracy_and_special_values(name):
    x = _inputs(name)
    out = np.empty_like(x)
    _vector_apply(name)(x, out)
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](x)
    both_nan = np.isnan(ref) & np.isnan(out)
    assert np.array_equal(np.isnan(ref), np.isnan(out)), x[np.isnan(ref) != np.isnan(out)][:5]
    inf = np.isinf(ref)
    assert np.array_equal(out[inf], ref[inf]), x[inf][out[inf] != ref[inf]][:5]
    finite = np.isfinite(ref) & ~both_nan
    ulp = np.abs(out[finite] - ref[finite]) / np.spacing(np.abs(ref[finite]))
    assert ulp.max() <= MAX_ULP[name], (ulp.max(), x[finite][np.argmax(ulp)])
    zeros = finite & (ref == 0)
    assert np.array_equal(np.signbit(out[zeros]), np.signbit(ref[zeros]))


@pytest.fixture(params=sorted(CASES))
def both_backends(request, compiled_cases):
    case, loss = compiled_cases[request.param]
    return case, loss, case.model.compile(backend="numba-python")


def test_simd_kernels_match_the_python_reference_backend(both_backends):
    case, fast, reference = both_backends
    assert fast.backend == "llvm" and reference.backend == "numba-python"
    for n in (1, 3, 4, 5, case.X.shape[0]):  # full vectors, masked tails, a single row
        X = case.X[:n]
        v1, g1 = fast.value_and_grad(case.theta, X)
        v2, g2 = reference.value_and_grad(case.theta, X)
        scale = np.abs(case.integrand(case.theta, X)).mean() + 1e-300
        assert abs(v1 - v2) <= 1e-12 * scale
        np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-12 * (np.abs(g2).max() + 1.0))
        np.testing.assert_allclose(
            fast.per_sample(case.theta, X), reference.per_sample(case.theta, X), rtol=1e-11, atol=1e-12 * scale
        )
        np.testing.assert_allclose(fast.score(case.theta, X), reference.score(case.theta, X), rtol=1e-11, atol=1e-13)


def test_float32_simd_kernel(compiled_cases):
    case, loss64 = compiled_cases["ica_logcosh"]
    loss32 = case.model.compile(dtype=np.float32)
    v64, g64 = loss64.value_and_grad(case.theta, case.X)
    v32, g32 = loss32.value_and_grad(case.theta, case.X)
    assert v32 == pytest.approx(v64, rel=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5 * np.abs(g64).max())


# ---------------------------------------------------------------------- symsm.backends.llvm.native: machine code, calls


def _scalar_call_model():
    """Functions without a vector implementation (sin, atan, erf, a general power): the C library, per lane."""
    x = sp.symbols("x0:2", real=True)
    a, b = sp.symbols("a b", real=True)
    c = sp.Symbol("c", positive=True)
    log_f = a * sp.sin(x[0]) - sp.atan(x[1] - b) ** 2 + sp.erf(x[0] * x[1]) - (1 + x[0] ** 2) ** c
    return symsm.Model(log_f, x, [a, b, c], name="scalar_calls")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scalar_library_calls_match_the_reference(tmp_path, monkeypatch, dtype):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    model = _scalar_call_model()
    X = np.random.default_rng(3).normal(size=(37, 2))
    theta = np.array([0.7, -0.3, 0.8])
    fast = model.compile(dtype=dtype)
    reference = model.compile(backend="numba-python")
    v1, g1 = fast.value_and_grad(theta, X)
    v2, g2 = reference.value_and_grad(theta, X)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert v1 == pytest.approx(v2, rel=rtol)
    np.testing.assert_allclose(g1, g2, rtol=rtol, atol=rtol * np.abs(g2).max())
    np.testing.assert_allclose(fast.score(theta, X), reference.score(theta, X), rtol=rtol, atol=rtol)


def test_native_kernels_refuse_arguments_they_cannot_read(compiled_cases):
    """The machine code trusts its pointers: a wrong dtype, shape or layout must never reach it."""
    case, loss = compiled_cases["ica_logcosh"]
    kernel, rows = loss._module.value_and_grad, loss._module.score
    theta, X = np.ascontiguousarray(case.theta, dtype=np.float64), np.ascontiguousarray(case.X)
    with pytest.raises(TypeError, match="theta must be a contiguous float64 array"):
        kernel(theta.astype(np.float32), X)
    with pytest.raises(TypeError, match="theta must be"):
        kernel(theta[:-1], X)
    with pytest.raises(TypeError, match="X must be a C-contiguous float64 array"):
        kernel(theta, np.asfortranarray(X))
    with pytest.raises(TypeError, match="X must be"):
        kernel(theta, X[:, :-1].copy())
    with pytest.raises(TypeError, match="out must be a C-contiguous float64 array"):
        rows(theta, X, np.empty((X.shape[0], X.shape[1] + 1)))
    out = np.empty(X.shape)
    rows(theta, X, out)
    np.testing.assert_allclose(out, loss.score(case.theta, case.X))


def test_unoptimised_code_generation_for_huge_kernels(tmp_path, monkeypatch, compiled_cases):
    """Kernels beyond HUGE_KERNEL instructions are generated at -O0: same results, its own object file."""
    case, loss = compiled_cases["student_t"]
    v0, g0 = loss.value_and_grad(case.theta, case.X)
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(native, "HUGE_KERNEL", 0)
    cache._modules.clear()  # a fresh import, so the kernel compiles under the patched threshold
    try:
        fresh = case.model.compile()
        v1, g1 = fresh.value_and_grad(case.theta, case.X)
        assert fresh._module.value_and_grad.timings["machine_code"] > 0
    finally:
        cache._modules.clear()
    assert v1 == pytest.approx(v0, rel=1e-13)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-13 * np.abs(g0).max())
    (obj,) = tmp_path.glob("symsm_*.value_and_grad.*.o")
    assert native._object_path(str(fresh.path), "value_and_grad", 0) == obj
