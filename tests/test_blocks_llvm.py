"""symsm.backends.llvm.blocks: block-program ops against numpy (float64 to ~1e-13, float32 looser), odd
widths and partial blocks, bit-identical results whatever the thread count, and a hand-assembled ICA
program (value and ∇_W) against numpy and central differences."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from symsm.backends.llvm import blocks
from symsm.backends.llvm.blocks import (
    AccColSum,
    AccGram,
    AccOuter,
    AccSum,
    BlockKernel,
    BlockProgram,
    Elementwise,
    MatMul,
    Param,
    RowSum,
)
from symsm.core import threads as threads_module

WIDTHS = (1, 3, 5, 17, 32, 33, 64, 128)
TOL = {"float64": 1e-13, "float32": 2e-5}


def _check(got: np.ndarray, ref: np.ndarray, scale: np.ndarray, dtype: str) -> None:
    """|got − ref| ≤ tol · scale (scale: the same sum over absolute values: no cancellation can hide errors)."""
    err = np.abs(np.asarray(got) - ref)
    assert np.all(err <= TOL[dtype] * (np.asarray(scale) + 1e-300)), float(np.max(err / (scale + 1e-300)))


def _data(n: int, d: int, dtype: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("transpose", [True, False])
@pytest.mark.parametrize("d", WIDTHS)
def test_matmul_through_accumulations(d: int, transpose: bool, dtype: str) -> None:
    """Y = X Pᵀ or X P, seen through Yᵀ X (which determines Y: XᵀX is invertible) and its column sums."""
    n_out = d + 2 if d > 3 else 7  # a rectangular P
    shape = (n_out, d) if transpose else (d, n_out)
    prog = BlockProgram(
        d, (Param("P", shape),), (MatMul("Y", "X", "P", transpose), AccOuter("G", "Y", "X"), AccColSum("c", "Y"))
    )
    X = _data(203, d, dtype)  # partial last block, several chunks
    P = np.random.default_rng(1).standard_normal(shape)
    kernel = BlockKernel(prog, dtype, block_rows=24)
    out = kernel(X, {"P": P})
    X64, P64 = X.astype(np.float64), P.astype(dtype).astype(np.float64)
    Y = X64 @ (P64.T if transpose else P64)
    absY = np.abs(X64) @ np.abs(P64.T if transpose else P64)
    _check(out["G"], Y.T @ X64, absY.T @ np.abs(X64), dtype)
    _check(out["c"], Y.sum(0), absY.sum(0), dtype)


@pytest.mark.parametrize(("mr", "nv", "tiles"), [(4, 3, 1), (4, 4, 1), (6, 2, 1), (3, 4, 1), (1, 1, 1), (8, 3, 4)])
@pytest.mark.parametrize("lanes", [4, 8])
@pytest.mark.parametrize("d", [5, 33])
def test_tile_shapes(d: int, lanes: int, mr: int, nv: int, tiles: int) -> None:
    """Register tiles and vector widths (256- and 512-bit vectors: LLVM splits the latter where the host lacks
    AVX-512), with partial tiles, panels and blocks."""
    prog = BlockProgram(d, (Param("P", (d, d)),), (MatMul("Y", "X", "P", True), AccOuter("G", "Y", "Y")))
    X = _data(101, d, "float64")
    P = np.random.default_rng(2).standard_normal((d, d))
    out = BlockKernel(prog, mr=mr, nv=nv, tiles=tiles, lanes=lanes, block_rows=17)(X, {"P": P})
    Y = X @ P.T
    _check(out["G"], Y.T @ Y, np.abs(Y).T @ np.abs(Y), "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", WIDTHS)
def test_elementwise_rowsum_and_sums(d: int, dtype: str) -> None:
    """A table with functions, a θ vector, a θ scalar and a per-row array broadcast along columns."""
    table = "\n".join(
        [
            "t call tanh X",
            "e call exp t",
            "l call log1p e",
            "u mul t v",
            "w add u s",
            "A mul w l",
            "B sub l r",
        ]
    )
    prog = BlockProgram(
        d,
        (Param("v", (d,)), Param("s", ())),
        (
            RowSum("r", "X"),
            Elementwise(("A", "B"), ("X", "v", "s", "r"), table),
            RowSum("a", "A"),
            AccSum("J", "a"),
            AccColSum("cB", "B"),
            AccOuter("aX", "a", "X"),
        ),
    )
    X = _data(157, d, dtype, seed=3)
    v = np.random.default_rng(4).standard_normal(d)
    out = BlockKernel(prog, dtype, block_rows=20)(X, {"v": v, "s": 0.25})
    X64, v64 = X.astype(np.float64), v.astype(dtype).astype(np.float64)
    t = np.tanh(X64)
    ell = np.log1p(np.exp(t))
    A = (t * v64 + 0.25) * ell
    r = X64.sum(1, keepdims=True)
    B = ell - r
    a = A.sum(1)
    tol_scale = np.abs(A).sum(1)
    _check(out["J"], a.sum(), tol_scale.sum() * 4, dtype)
    _check(out["cB"], B.sum(0), (np.abs(ell) + np.abs(X64).sum(1, keepdims=True)).sum(0) * 4, dtype)
    _check(out["aX"][0], a @ X64, (tol_scale * 4) @ np.abs(X64), dtype)


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", [3, 8, 17, 33])
def test_fused_matmul_table_rowsum(d: int, dtype: str, fuse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table on a matmul's tiles in registers, a row sum of its output; the product is also read later (so it
    is stored), one table output only by the row sum (so it is not), one by an accumulation."""
    monkeypatch.setattr(blocks, "FUSE_MATMUL_TABLE", fuse)
    prog = BlockProgram(
        d,
        (Param("P", (d + 1, d)), Param("v", (d + 1,))),
        (
            MatMul("Y", "X", "P", transpose=True),
            Elementwise(("A", "B"), ("Y", "v"), "t call tanh Y\nA mul t v\nB mul Y Y"),
            RowSum("a", "A"),
            AccOuter("G", "Y", "B"),
            AccSum("J", "a"),
            AccColSum("c", "Y"),
        ),
    )
    X = _data(91, d, dtype, seed=11)
    rng = np.random.default_rng(12)
    P, v = rng.standard_normal((d + 1, d)), rng.standard_normal(d + 1)
    out = BlockKernel(prog, dtype, block_rows=12)(X, {"P": P, "v": v})
    X64 = X.astype(np.float64)
    P64, v64 = P.astype(dtype).astype(np.float64), v.astype(dtype).astype(np.float64)
    Y = X64 @ P64.T
    absY = np.abs(X64) @ np.abs(P64.T)
    A, B = np.tanh(Y) * v64, Y * Y
    _check(out["J"], A.sum(), np.abs(A).sum() * 4, dtype)
    _check(out["G"], Y.T @ B, 4 * absY.T @ (absY * absY), dtype)
    _check(out["c"], Y.sum(0), absY.sum(0), dtype)


def test_several_outer_products_share_one_accumulator() -> None:
    d = 17
    prog = BlockProgram(
        d,
        (Param("P", (d, d)),),
        (MatMul("Y", "X", "P"), AccOuter("G", "Y", "X"), AccOuter("G", "X", "Y"), AccOuter("H", "X", "X")),
    )
    X = _data(77, d, "float64")
    P = np.random.default_rng(5).standard_normal((d, d))
    out = BlockKernel(prog, block_rows=8)(X, {"P": P})
    Y = X @ P
    scale = np.abs(Y).T @ np.abs(X)
    _check(out["G"], Y.T @ X + X.T @ Y, scale + scale.T, "float64")
    _check(out["H"], X.T @ X, np.abs(X).T @ np.abs(X), "float64")


@pytest.mark.parametrize(("mr", "nv", "lanes"), [(4, 3, 4), (6, 4, 8), (3, 2, 4), (1, 1, 8)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", [1, 3, 5, 17, 32, 33, 70])
def test_gram_accumulation_upper_tiles_mirrored(d: int, dtype: str, mr: int, nv: int, lanes: int) -> None:
    """AccGram (one triangle of tiles, mirrored) equals YᵀY and the full outer product AccOuter(Y, Y)."""
    prog = BlockProgram(
        d, (Param("P", (d, d)),), (MatMul("Y", "X", "P", True), AccGram("G", "Y"), AccOuter("H", "Y", "Y"))
    )
    X = _data(131, d, dtype)
    P = np.random.default_rng(3).standard_normal((d, d))
    out = BlockKernel(prog, dtype, mr=mr, nv=nv, lanes=lanes, block_rows=40)(X, {"P": P})
    X64, P64 = X.astype(np.float64), P.astype(dtype).astype(np.float64)
    Y = X64 @ P64.T
    absY = np.abs(X64) @ np.abs(P64.T)
    _check(out["G"], Y.T @ Y, absY.T @ absY, dtype)
    np.testing.assert_array_equal(out["G"], out["G"].T)
    np.testing.assert_array_equal(np.triu(out["G"]), np.triu(out["H"]))  # the same sums, tile by tile
    with pytest.raises(ValueError, match="Gram accumulator"):
        BlockKernel(BlockProgram(d, (), (AccOuter("G", "X", "X"), AccGram("G", "X"))))
    with pytest.raises(ValueError, match="Gram accumulator"):
        BlockKernel(BlockProgram(d, (), (AccGram("G", "X"), AccOuter("G", "X", "X"))))


def test_bad_programs_are_refused() -> None:
    with pytest.raises(ValueError, match="before any op writes it"):
        BlockKernel(BlockProgram(3, (), (AccSum("J", "v"),)))
    with pytest.raises(ValueError, match="width"):
        BlockKernel(BlockProgram(3, (Param("P", (4, 5)),), (MatMul("Y", "X", "P", True),)))
    with pytest.raises(ValueError, match="twice"):
        BlockKernel(BlockProgram(3, (), (RowSum("v", "X"), RowSum("v", "X"))))
    kernel = BlockKernel(BlockProgram(3, (), (RowSum("v", "X"), AccSum("J", "v"))))
    with pytest.raises(TypeError, match="C-contiguous"):
        kernel(np.zeros((4, 3), dtype=np.float32), {})


# ---------------------------------------------------------------------- ICA log cosh, assembled by hand


def ica_program(d: int) -> BlockProgram:
    """Per row: y = Wx, t = tanh y, s = −Wᵀt, L = −Σ_k (1 − t_k²) c_k + ½‖s‖² (c_k = ‖W_k,:‖²);
    ∇_W L = −2 diag(1 − t²) W − t sᵀ + u xᵀ with u = (2 t ⊙ c − W s) ⊙ (1 − t²)."""
    return BlockProgram(
        d,
        (Param("W", (d, d)), Param("c", (d,))),
        (
            MatMul("Y", "X", "W", transpose=True),
            Elementwise(("A", "D", "E"), ("Y", "c"), "t call tanh Y\nA neg t\ntt mul t t\nD sub #1.0 tt\n"
                        "Dc mul D c\nE neg Dc"),
            MatMul("S", "A", "W"),
            Elementwise(("V",), ("S", "E"), "q mul S S\nh mul q #0.5\nV add h E"),
            RowSum("v", "V"),
            MatMul("Z", "S", "W", transpose=True),
            Elementwise(("U",), ("A", "c", "Z", "D"), "g0 mul A c\ng1 mul g0 #-2.0\ng2 sub g1 Z\nU mul g2 D"),
            AccOuter("G", "A", "S"),
            AccOuter("G", "U", "X"),
            AccColSum("Dsum", "D"),
            AccSum("J", "v"),
        ),
    )  # fmt: skip


def ica_value_and_grad(kernel: BlockKernel, W: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
    out = kernel(X, {"W": W, "c": (W.astype(np.float64) ** 2).sum(1)})
    n = X.shape[0]
    return float(out["J"]) / n, (out["G"] - 2.0 * out["Dsum"][:, None] * W) / n


def numpy_ica_value(W: np.ndarray, X: np.ndarray) -> float:
    T = np.tanh(X @ W.T)
    S = -T @ W
    return float(np.mean(np.sum(-((1.0 - T * T) @ (W * W)) + 0.5 * S * S, axis=1)))


@pytest.mark.parametrize("lanes", [4, 8])
@pytest.mark.parametrize("d", [1, 5, 32, 33])
def test_ica_value_and_grad(d: int, lanes: int) -> None:
    rng = np.random.default_rng(6)
    W = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    X = rng.standard_normal((301, d))
    value, grad = ica_value_and_grad(BlockKernel(ica_program(d), block_rows=40, lanes=lanes), W, X)
    assert value == pytest.approx(numpy_ica_value(W, X), rel=1e-13)
    h = 1e-5
    for i, j in {(0, 0), (d - 1, 0), (d // 2, d - 1)}:
        Wp, Wm = W.copy(), W.copy()
        Wp[i, j] += h
        Wm[i, j] -= h
        fd = (numpy_ica_value(Wp, X) - numpy_ica_value(Wm, X)) / (2 * h)
        assert grad[i, j] == pytest.approx(fd, rel=1e-7, abs=1e-8)


def test_ica_float32_close_to_float64() -> None:
    d = 33
    rng = np.random.default_rng(7)
    W = np.eye(d) + 0.1 * rng.standard_normal((d, d))
    X = rng.standard_normal((500, d))
    v64, g64 = ica_value_and_grad(BlockKernel(ica_program(d)), W, X)
    for lanes in (8, 16):
        kernel = BlockKernel(ica_program(d), "float32", lanes=lanes)
        v32, g32 = ica_value_and_grad(kernel, W.astype(np.float32), X.astype(np.float32))
        assert v32 == pytest.approx(v64, rel=1e-5)
        assert np.max(np.abs(g32 - g64)) <= 1e-4 * np.max(np.abs(g64))


def test_float64_rows_into_a_float32_kernel() -> None:
    """x_dtype float64: the kernel rounds the rows as it copies them, the same bits as numpy's astype first (odd d:
    a partial vector; values at float32's range and beyond round to ±max / ±inf alike)."""
    d = 13
    rng = np.random.default_rng(10)
    W = np.eye(d) + 0.2 * rng.standard_normal((d, d))
    X = rng.standard_normal((777, d))
    X[3, 4] = 1 + 2.0**-30  # rounds to 1 in float32
    ref = ica_value_and_grad(BlockKernel(ica_program(d), "float32", block_rows=40), W, X.astype(np.float32))
    got = ica_value_and_grad(BlockKernel(ica_program(d), "float32", x_dtype="float64", block_rows=40), W, X)
    assert got[0] == ref[0] and np.array_equal(got[1], ref[1])
    prog = BlockProgram(2, (), (AccColSum("c", "X"),))
    big = np.array([[3.4028235e38, 1e39], [-1e39, 1.0]])
    out = BlockKernel(prog, "float32", x_dtype="float64", block_rows=8)(big, {})["c"]
    assert out.tolist() == [-np.inf, np.inf]
    with pytest.raises(ValueError, match="x_dtype"):
        BlockKernel(prog, "float64", x_dtype="float32")
    with pytest.raises(TypeError, match="float64 array"):
        BlockKernel(prog, "float32", x_dtype="float64")(big.astype(np.float32), {})


def test_same_bits_whatever_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    d = 17
    rng = np.random.default_rng(8)
    W = np.eye(d) + 0.2 * rng.standard_normal((d, d))
    X = rng.standard_normal((5003, d))
    kernel = BlockKernel(ica_program(d), block_rows=36)
    assert kernel.chunks(5003)[1] > 4
    results = []
    for dynamic in (True, False):  # chunks taken by whichever thread is free, or one range per thread
        monkeypatch.setattr(threads_module, "DYNAMIC_CHUNKS", dynamic)
        for t in (1, 2, 3, 5):
            monkeypatch.setattr(threads_module, "threads", lambda t=t: t)
            value, grad = ica_value_and_grad(kernel, W, X)
            results.append((value, grad.tobytes()))
    assert all(r == results[0] for r in results)
    # calls from several Python threads at once on one kernel: each call has its own work buffers
    monkeypatch.setattr(threads_module, "threads", lambda: 2)
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda _: ica_value_and_grad(kernel, W, X), range(8)))
    assert all((v, g.tobytes()) == results[0] for v, g in concurrent)


@pytest.mark.parametrize("dynamic", [True, False])
def test_run_chunks_calls_every_chunk_once(monkeypatch: pytest.MonkeyPatch, dynamic: bool) -> None:
    monkeypatch.setattr(threads_module, "DYNAMIC_CHUNKS", dynamic)
    for t, n in ((1, 5), (3, 17), (4, 2)):
        monkeypatch.setattr(threads_module, "threads", lambda t=t: t)
        calls: list[tuple[int, int]] = []
        threads_module.run_chunks(lambda slot, c, calls=calls: calls.append((slot, c)), n)
        assert sorted(c for _, c in calls) == list(range(n))
        assert all(0 <= slot < min(t, n) for slot, _ in calls)
    with pytest.raises(ZeroDivisionError):
        threads_module.run_chunks(lambda slot, c: 1 / (c - 3), 6)


def test_blas_one_thread_sets_and_restores_openblas_threads() -> None:
    libs = threads_module._openblas()
    if not libs:
        pytest.skip("numpy does not use OpenBLAS here")
    get, put = libs[0]
    before = get()
    put(2)  # as on a 2-core machine, whatever this one has
    try:
        with threads_module.blas_one_thread():
            assert get() == 1
            with threads_module.blas_one_thread():  # nested: still one, restored only by the outer one
                assert get() == 1
            assert get() == 1
            A = np.random.default_rng(0).standard_normal((200, 200))
            assert np.allclose(A @ A.T, np.einsum("ik,jk->ij", A, A))
        assert get() == 2
        with pytest.raises(RuntimeError), threads_module.blas_one_thread():
            raise RuntimeError("restored on errors too")
        assert get() == 2
    finally:
        put(before)


def test_fma_peak_runs() -> None:
    run = blocks.fma_peak(iters=1000, lanes=4)
    assert run() == 2.0 * 12 * 4 * 1000
    assert blocks.fma_peak(iters=1000)() == 2.0 * 12 * blocks.default_lanes("float64") * 1000


def _apply_tanh(x: np.ndarray, width: int = 0) -> np.ndarray:
    """blocks.tanh_function (float64) or tanh_function_f32 over x (length a multiple of 16) on vectors of `width`
    (default 4 float64, 8 float32), through a one-off compiled loop."""
    import ctypes

    from llvmlite import ir

    from symsm.backends.llvm.native import _load_object, compile_module

    f32 = x.dtype == np.float32
    ctype, default = (ir.FloatType(), 8) if f32 else (ir.DoubleType(), 4)
    width = width or default
    symbol = f"tanh_test_apply_{x.dtype}_{width}"
    module = ir.Module(name=symbol)
    ptr = ir.PointerType(ctype)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, ir.IntType(64)]), symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    emit = blocks._IR(b, ctype, width)
    src, dst, n = fn.args
    tanh = (blocks.tanh_function_f32 if f32 else blocks.tanh_function)(module, width)

    def body(i, _c):
        emit.vstore(b.call(tanh, [emit.vload(emit.gep(src, i))]), emit.gep(dst, i))
        return []

    emit.loop(0, n, width, body)
    b.ret_void()
    address = _load_object(compile_module(module), [symbol])[symbol]
    out = np.empty_like(x)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(address)(
        x.ctypes.data, out.ctypes.data, len(x)
    )
    return out


def _tanh_inputs() -> np.ndarray:
    rng = np.random.default_rng(9)
    x = np.concatenate(
        [
            np.linspace(-20, 20, 40_000),
            np.geomspace(1e-300, 25, 20_000) * rng.choice([-1, 1], 20_000),
            rng.uniform(-0.3, 0.3, 20_000),
            [0.25, -0.25, np.nextafter(0.25, 0), 5e-324, 0.0, -0.0, np.inf, -np.inf, np.nan, 800.0, -800.0],
        ]
    )
    return np.concatenate([x, np.zeros(-len(x) % 16)])


@pytest.mark.parametrize("width", [4, 8])
def test_tanh_accuracy_and_special_values(width: int) -> None:
    """Within 4 ulp of mpmath on 256-bit and 512-bit vectors (LLVM splits the latter without AVX-512)."""
    mpmath = pytest.importorskip("mpmath")
    x = _tanh_inputs()
    got = _apply_tanh(x, width)
    finite = np.isfinite(x)
    with mpmath.workdps(40):
        ref = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in x[finite][::7]])
    ulp = np.abs(got[finite][::7] - ref) / np.spacing(np.abs(ref) + 1e-320)
    assert ulp.max() <= 4, ulp.max()
    assert np.array_equal(got[~finite][:2], [1.0, -1.0]) and np.isnan(got[~finite][2])
    assert np.signbit(got[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()


def test_tanh_float32() -> None:
    x = _tanh_inputs().astype(np.float32)
    got = _apply_tanh(x)
    finite = np.isfinite(x)
    ref = np.tanh(x[finite].astype(np.float64))
    ulp = np.abs(got[finite] - ref) / np.spacing(np.abs(ref).astype(np.float32) + np.float32(1e-45))
    assert ulp.max() <= 4, ulp.max()
    assert np.array_equal(got[~finite][:2], [1.0, -1.0]) and np.isnan(got[~finite][2])
    assert np.signbit(got[x == 0]).tolist() == np.signbit(x[x == 0]).tolist()
