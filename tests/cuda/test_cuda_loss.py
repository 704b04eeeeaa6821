"""The CUDA backend (symsm/runtime/device.py, symsm/backends/cuda/generate.py) against the numba CPU backend.

Run by tests/run_all.sh under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, its own process); on a machine with
a GPU, `pytest tests/cuda` runs the same tests on the GPU (and the ones marked `gpu`).

Agreement is scale-aware: |cuda − cpu| ≤ tol × mean_t |term_t| for each reduced entry (J̃ and every ∂θ_k J̃),
where term_t is the per-sample contribution (the integrand, or its θ-gradient) — plain relative error means
nothing for entries near zero or sums that cancel. Both dtypes of the CUDA backend are compared with the
float64 CPU backend (the float32 CPU backend is itself ~1e-6 away from it on these models): tol = 1e-11 for
float64, 1e-4 for float32 (≈ 840 units of float32 roundoff; the float64 bound scaled by the ratio of the two
roundoffs would be 5e-3).
The simulator runs ~30k elements/s, so N is small and the launches use small blocks, which also makes
the grid-stride loop and the cross-block reduction run with several blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from models import CASES

import symsm
from symsm.runtime.device import CudaUnavailableError, DeviceData, import_cuda, simulator_enabled

TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-4}
N_ROWS = 96  # small: the simulator is slow
SMALL_LAUNCH = {"threads_per_block": 16, "max_blocks": 2, "max_blocks_output": 2}  # 32 threads: 3 rows each


def _configure(loss, **launch):
    for name, value in {**SMALL_LAUNCH, **launch}.items():
        setattr(loss, name, value)
    return loss


@pytest.fixture(scope="module")
def losses():
    """(case, {dtype: (float64 CPU loss, CUDA loss of dtype)}) per shared test model, compiled once."""
    out = {}
    for name, make in CASES.items():
        case = make()
        cpu = case.model.compile()
        out[name] = (
            case,
            {
                np.dtype(dt): (cpu, _configure(case.model.compile(backend="cuda", dtype=dt)))
                for dt in (np.float64, np.float32)
            },
        )
    return out


def _per_row_gradients(cpu, theta, X):
    """∂θ of the integrand at each row, from the CPU backend one row at a time (the scale of the bound)."""
    return np.array([cpu.value_and_grad(theta, X[t : t + 1])[1] for t in range(X.shape[0])])


def _check_reductions(cpu, gpu, theta, X, tol):
    v_cpu, g_cpu = cpu.value_and_grad(theta, X)
    v_gpu, g_gpu = gpu.value_and_grad(theta, X)
    value_scale = np.mean(np.abs(cpu.per_sample(theta, X)))
    grad_scale = np.mean(np.abs(_per_row_gradients(cpu, theta, X)), axis=0)
    assert abs(v_gpu - v_cpu) <= tol * value_scale, (v_gpu, v_cpu, value_scale)
    excess = np.abs(g_gpu - g_cpu) - tol * grad_scale
    assert np.all(excess <= 0), (np.abs(g_gpu - g_cpu) / np.maximum(grad_scale, 1e-300)).max()
    assert abs(gpu.value(theta, X) - v_cpu) <= tol * value_scale


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_value_and_grad_match_cpu_backend(losses, name, dtype):
    case, by_dtype = losses[name]
    cpu, gpu = by_dtype[np.dtype(dtype)]
    X = case.X[:N_ROWS]
    _check_reductions(cpu, gpu, case.theta, X, TOL[np.dtype(dtype)])


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_per_sample_and_score_match_cpu_backend(losses, name, dtype):
    case, by_dtype = losses[name]
    cpu, gpu = by_dtype[np.dtype(dtype)]
    tol = TOL[np.dtype(dtype)]
    theta, X = case.theta, case.X[:N_ROWS]
    # per row, the terms are ∂ᵢ² log f and ½(∂ᵢ log f)² (from the hand-written reference, not the code under test)
    s, h = case.score(theta, X), case.hessian_diag(theta, X)
    row_scale = np.sum(np.abs(h) + 0.5 * s * s, axis=1)
    ps = gpu.per_sample(theta, X)
    assert ps.shape == (X.shape[0],) and ps.dtype == np.float64
    assert np.all(np.abs(ps - cpu.per_sample(theta, X)) <= tol * row_scale)
    sc = gpu.score(theta, X)
    assert sc.shape == X.shape and sc.dtype == np.float64
    column_scale = np.mean(np.abs(s), axis=0)
    assert np.all(np.abs(sc - cpu.score(theta, X)) <= tol * (np.abs(s) + column_scale))


def test_many_sums_reduce_in_several_chunks():
    """Σ_k a_k sin(k x) − x²/2 with 20 coefficients: 21 sums, two shared-memory chunks (REDUCE_CHUNK = 16),
    the second one partial."""
    x = sp.Symbol("x", real=True)
    a = symsm.matrix("a", 1, 20)
    model = symsm.Model(sum(a[k] * sp.sin((k + 1) * x) for k in range(20)) - x**2 / 2, [x], {"a": a})
    rng = np.random.default_rng(11)
    theta, X = rng.normal(0, 0.3, 20), rng.normal(size=(40, 1))
    cpu = model.compile()
    for dtype in (np.float64, np.float32):
        gpu = _configure(model.compile(backend="cuda", dtype=dtype), threads_per_block=8, max_blocks=3)
        assert gpu._module.LAYOUT["value_and_grad"][1] > gpu._module.REDUCE_CHUNK
        _check_reductions(cpu, gpu, theta, X, TOL[np.dtype(dtype)])


def test_integrand_free_of_the_data_has_no_sums():
    """log f = a·x: the integrand ½a² does not depend on x, every sum becomes N·(…) and no kernel reduces."""
    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x, [x], [a], name="linear")
    gpu = _configure(model.compile(backend="cuda"))
    assert gpu._module.LAYOUT["value_and_grad"][1] == 0
    X, theta = np.linspace(-1.0, 1.0, 10).reshape(-1, 1), np.array([0.7])
    value, grad = gpu.value_and_grad(theta, X)
    assert value == pytest.approx(0.5 * 0.7**2, rel=1e-15) and grad == pytest.approx([0.7], rel=1e-15)
    np.testing.assert_allclose(gpu.per_sample(theta, X), 0.245, rtol=1e-15)


@pytest.mark.parametrize(("threads", "blocks"), [(1, 1), (2, 5), (32, 1), (8, 64)])
def test_any_launch_configuration_gives_the_same_result(losses, threads, blocks):
    case, by_dtype = losses["student_t"]
    cpu, gpu = by_dtype[np.dtype(np.float64)]
    _configure(gpu, threads_per_block=threads, max_blocks=blocks, max_blocks_output=blocks)
    try:
        _check_reductions(cpu, gpu, case.theta, case.X[:40], TOL[np.dtype(np.float64)])
        np.testing.assert_allclose(gpu.per_sample(case.theta, case.X[:40]), cpu.per_sample(case.theta, case.X[:40]))
    finally:
        _configure(gpu)


@pytest.mark.slow
def test_default_launch_configuration(losses):
    """The generated defaults (THREADS_PER_BLOCK threads, one block for small N) — slow in the simulator."""
    case, _ = losses["gaussian_mixture"]
    cpu = case.model.compile()
    gpu = case.model.compile(backend="cuda")
    gpu = type(gpu)(
        case.model, backend="cuda", dtype=gpu.dtype, key=gpu.key, path=gpu.path, source=gpu.source, module=gpu._module
    )  # a fresh loss object with the module's defaults
    assert gpu.threads_per_block == gpu._module.THREADS_PER_BLOCK
    _check_reductions(cpu, gpu, case.theta, case.X[:40], TOL[np.dtype(np.float64)])


def test_results_are_bit_identical_run_to_run(losses):
    case, by_dtype = losses["ica_logcosh"]
    _, gpu = by_dtype[np.dtype(np.float32)]
    X = case.X[:N_ROWS]
    v1, g1 = gpu.value_and_grad(case.theta, X)
    v2, g2 = gpu.value_and_grad(case.theta, X)
    assert v1 == v2 and np.array_equal(g1, g2)


def test_to_device_handle_is_reused_and_agrees_with_host_data(losses):
    case, by_dtype = losses["gaussian_full"]
    cpu, gpu = by_dtype[np.dtype(np.float64)]
    X = case.X[:N_ROWS]
    handle = gpu.to_device(X)
    assert isinstance(handle, DeviceData) and handle.validated
    assert handle.shape == X.shape and handle.dtype == np.float64 and len(handle) == X.shape[0]
    np.testing.assert_array_equal(handle.copy_to_host(), X)
    from_host = gpu.value_and_grad(case.theta, X)
    for theta in (case.theta, case.theta * 1.1):  # the same handle across iterations of a fit
        v, g = gpu.value_and_grad(theta, handle)
        v_cpu, g_cpu = cpu.value_and_grad(theta, X)
        assert v == pytest.approx(v_cpu, rel=1e-12)
        np.testing.assert_allclose(g, g_cpu, rtol=1e-10, atol=1e-12 * np.abs(g_cpu).max())
    assert gpu.value_and_grad(case.theta, handle)[0] == from_host[0]
    np.testing.assert_array_equal(gpu.score(case.theta, handle), gpu.score(case.theta, X))
    assert gpu.to_device(handle).array is handle.array  # no second copy


def test_device_arrays_are_used_in_place(losses):
    cuda = import_cuda()
    case, by_dtype = losses["polynomial_exp_family"]
    _, gpu = by_dtype[np.dtype(np.float32)]
    X32 = case.X[:N_ROWS].astype(np.float32)
    on_device = cuda.to_device(X32)
    assert gpu.value(case.theta, on_device) == gpu.value(case.theta, X32)
    np.testing.assert_array_equal(gpu.per_sample(case.theta, on_device), gpu.per_sample(case.theta, X32))


def test_device_arrays_of_the_wrong_dtype_or_shape_are_refused(losses):
    cuda = import_cuda()
    case, by_dtype = losses["student_t"]
    _, gpu32 = by_dtype[np.dtype(np.float32)]
    with pytest.raises(ValueError, match=r"dtype float64 but this loss computes in float32"):
        gpu32.value(case.theta, cuda.to_device(case.X[:8]))
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        gpu32.value(case.theta, cuda.to_device(np.zeros((8, 3), np.float32)))
    with pytest.raises(ValueError, match="empty"):
        gpu32.to_device(cuda.to_device(np.zeros((0, 2), np.float32)))


def test_host_input_is_validated_like_the_cpu_backend(losses):
    case, by_dtype = losses["student_t"]
    _, gpu = by_dtype[np.dtype(np.float64)]
    X = case.X[:8].copy()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gpu.value_and_grad(case.theta, X)
    with pytest.raises(ValueError, match="non-finite"):
        gpu.to_device(X)
    with pytest.raises(ValueError, match=r"theta must have shape \(4,\)"):
        gpu.value(case.theta[:3], case.X[:8])
    with pytest.raises(ValueError, match="positive"):
        gpu.value(np.array([0.0, 0.0, -1.0, 4.0]), case.X[:8])


def test_launch_configuration_is_checked(losses):
    _, by_dtype = losses["student_t"]
    _, gpu = by_dtype[np.dtype(np.float64)]
    for bad in (0, 3, 2 * gpu._module.THREADS_PER_BLOCK, 2.0):
        with pytest.raises(ValueError, match="power of two"):
            gpu.threads_per_block = bad


def test_ptx_needs_the_real_compiler(losses):
    _, by_dtype = losses["student_t"]
    _, gpu = by_dtype[np.dtype(np.float64)]
    if simulator_enabled():
        with pytest.raises(CudaUnavailableError, match="NUMBA_ENABLE_CUDASIM"):
            gpu.ptx()
    else:
        assert ".entry" in gpu.ptx()["value_and_grad"]


# ---------------------------------------------------------------------- real GPU only


@pytest.mark.gpu
def test_large_n_on_gpu_matches_cpu_and_is_deterministic():
    case = CASES["ica_logcosh"]()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1_000_000, case.model.dim))
    cpu = case.model.compile()
    gpu = case.model.compile(backend="cuda")
    handle = gpu.to_device(X)
    v1, g1 = gpu.value_and_grad(case.theta, handle)
    v2, g2 = gpu.value_and_grad(case.theta, handle)
    assert v1 == v2 and np.array_equal(g1, g2)
    v_cpu, g_cpu = cpu.value_and_grad(case.theta, X)
    scale = np.mean(np.abs(cpu.per_sample(case.theta, X)))
    assert abs(v1 - v_cpu) <= 1e-11 * scale
    np.testing.assert_allclose(g1, g_cpu, rtol=1e-9, atol=1e-11 * np.abs(g_cpu).max())


@pytest.mark.gpu
def test_foreign_cuda_array_interface_objects_are_accepted():
    cuda = import_cuda()
    case = CASES["student_t"]()
    gpu = case.model.compile(backend="cuda")
    dev = cuda.to_device(case.X)

    class Foreign:  # what CuPy or PyTorch expose: only the interface
        def __init__(self, a):
            self.__cuda_array_interface__ = a.__cuda_array_interface__

    assert gpu.value(case.theta, Foreign(dev)) == gpu.value(case.theta, dev)


# ---------------------------------------------------------------------- quadratic form and fitting


def _natural_gaussian(d: int = 3):
    """−½ xᵀKx + hᵀx with a symmetric K: an exponential family, so J̃ is quadratic in θ = (K, h)."""
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    K = symsm.symmetric("K", d)
    h = sp.Matrix(sp.symbols(f"h0:{d}", real=True))
    return symsm.Model(-(x.T * K * x)[0, 0] / 2 + (h.T * x)[0, 0], list(x), {"K": K, "h": h}, name="natural_gauss")


@pytest.mark.parametrize("which", ["polynomial_exp_family", "natural_gaussian"])
def test_quadratic_form_reproduces_value_and_gradient(losses, which):
    """½θᵀAθ + bᵀθ + c and Aθ + b equal the CPU backend's J̃ and ∇J̃ at random θ (an independent check:
    the CPU quadratic form is not used)."""
    rng = np.random.default_rng(5)
    if which == "natural_gaussian":
        model = _natural_gaussian()
        X = rng.standard_normal((N_ROWS, 3))
    else:
        case, _ = losses[which]
        model, X = case.model, case.X[:N_ROWS]
    cpu = model.compile()
    for dtype in (np.float64, np.float32):
        gpu = _configure(model.compile(backend="cuda", dtype=dtype))
        A, b, c = gpu.quadratic_form(gpu.to_device(X))
        assert A.shape == (model.n_params,) * 2 and np.array_equal(A, A.T)
        Xd = X.astype(dtype).astype(np.float64)  # the data as the loss holds it
        for _ in range(3):
            theta = rng.standard_normal(model.n_params)
            value, grad = cpu.value_and_grad(theta, Xd)
            # the terms: per-sample integrands (CPU side), and those of the quadratic polynomial itself
            at = np.abs(theta)
            scale = np.mean(np.abs(cpu.per_sample(theta, Xd))) + 0.5 * at @ np.abs(A) @ at + np.abs(b) @ at + abs(c)
            assert abs(0.5 * theta @ A @ theta + b @ theta + c - value) <= 1e-11 * scale
            grad_scale = np.mean(np.abs(_per_row_gradients(cpu, theta, Xd)), axis=0) + np.abs(A) @ at + np.abs(b)
            assert np.all(np.abs(A @ theta + b - grad) <= 1e-11 * grad_scale)


def test_quadratic_form_refuses_other_objectives(losses):
    _, by_dtype = losses["student_t"]
    _, gpu = by_dtype[np.dtype(np.float64)]
    with pytest.raises(ValueError, match="not quadratic"):
        gpu.quadratic_form(np.zeros((4, 2)))


@pytest.mark.slow
def test_fit_with_the_cuda_backend_matches_the_cpu_fit(losses):
    case, _ = losses["student_t"]
    X = case.X[:64]
    cpu_fit = symsm.fit(case.model, X, hessian="central_differences")
    gpu_loss = _configure(case.model.compile(backend="cuda"))  # small blocks: the simulator is slow
    gpu_fit = symsm.fit(gpu_loss, X, hessian="central_differences")
    assert gpu_fit.converged and cpu_fit.converged
    np.testing.assert_allclose(gpu_fit.theta, cpu_fit.theta, rtol=1e-6, atol=1e-8)
    case, _ = losses["polynomial_exp_family"]  # closed form through the CUDA quadratic form
    cpu_fit = symsm.fit(case.model, case.X[:N_ROWS])
    gpu_fit = symsm.fit(case.model, case.X[:N_ROWS], backend="cuda")
    assert gpu_fit.method == "closed_form"
    np.testing.assert_allclose(gpu_fit.theta, cpu_fit.theta, rtol=1e-9, atol=1e-12)
