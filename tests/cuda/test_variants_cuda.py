"""Objective variants (sliced, sliced_vr, denoising) on the CUDA backend against the numba CPU backend.

Run by tests/run_all.sh under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, its own process). The draws are
made on the host from the seed, so a CUDA loss and a CPU loss with the same seed see the same directions and
noise: their values, gradients and per-row integrands agree to roundoff, for numpy input and for data resident
on the device (`to_device`, whose rows get the draws appended by a device kernel). The bound is scale-aware as
in test_cuda_loss.py: |cuda − cpu| ≤ 1e-11 × mean_t |term_t| (float64), 1e-4 (float32).

The PTX compilation of the variant kernels is checked in the main suite (tests/test_variants.py): the
simulator replaces numba-cuda's compiler.
"""

from __future__ import annotations

import numpy as np
import pytest
from models import CASES

import symsm
from symsm.derive.objectives import Denoising, Sliced, SlicedVR

N_ROWS = 48  # small: the simulator runs ~30k elements/s and the sliced kernels are several times the exact one
SMALL_LAUNCH = {"threads_per_block": 16, "max_blocks": 2, "max_blocks_output": 2}  # several rows per thread
TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-4}
OBJECTIVES = {
    "sliced": Sliced(n_directions=2),
    "sliced_vr": SlicedVR(directions="gaussian"),
    "denoising": Denoising(noise_scale=0.5),
}
MODELS = ["student_t", "ica_logcosh"]


def _configure(loss):
    for name, value in SMALL_LAUNCH.items():
        setattr(loss, name, value)
    return loss


@pytest.fixture(scope="module")
def losses():
    """{(model, objective): (case, cpu loss, cuda float64 loss)}, compiled on first use, same seed."""
    store: dict = {}

    def get(name: str, objective: str, dtype=np.float64):
        key = (name, objective, np.dtype(dtype))
        if key not in store:
            case = CASES[name]()
            spec = OBJECTIVES[objective]
            cpu = case.model.compile(objective=spec, seed=3)
            gpu = _configure(case.model.compile(backend="cuda", dtype=dtype, objective=spec, seed=3))
            store[key] = (case, cpu, gpu)
        return store[key]

    return get


def _check(cpu, gpu, theta, X, X_gpu, tol):
    """value_and_grad, value and per_sample of `gpu` on X_gpu against `cpu` on X, scale-aware."""
    per_row = cpu.per_sample(theta, X)
    v_cpu, g_cpu = cpu.value_and_grad(theta, X)
    assert v_cpu == pytest.approx(per_row.mean(), rel=1e-12)
    grad_scale = np.mean(np.abs(cpu.per_sample_grad(theta, X)), axis=0)
    value_scale = np.mean(np.abs(per_row))
    v_gpu, g_gpu = gpu.value_and_grad(theta, X_gpu)
    assert abs(v_gpu - v_cpu) <= tol * value_scale, (v_gpu, v_cpu)
    assert np.all(np.abs(g_gpu - g_cpu) <= tol * grad_scale), (g_gpu, g_cpu)
    assert abs(gpu.value(theta, X_gpu) - v_cpu) <= tol * value_scale
    np.testing.assert_allclose(gpu.per_sample(theta, X_gpu), per_row, rtol=0, atol=tol * value_scale)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_values_and_gradients_match_cpu_with_the_same_seed(losses, name, objective):
    case, cpu, gpu = losses(name, objective)
    X = case.X[:N_ROWS]
    np.testing.assert_array_equal(gpu.draws(N_ROWS), cpu.draws(N_ROWS))
    _check(cpu, gpu, case.theta, X, X, TOL[np.dtype(np.float64)])
    handle = gpu.to_device(X)  # rows resident on the device: the draws are appended there
    _check(cpu, gpu, case.theta, X, handle, TOL[np.dtype(np.float64)])
    np.testing.assert_allclose(gpu.score(case.theta, handle), cpu.score(case.theta, X), rtol=1e-12, atol=1e-12)


def test_the_draws_matter_and_resample_acts_on_both_backends(losses):
    case, cpu, gpu = losses("student_t", "sliced")
    X = case.X[:N_ROWS]
    handle = gpu.to_device(X)
    before = gpu.value(case.theta, handle)
    gpu.resample(4)
    after = gpu.value(case.theta, handle)
    assert after != pytest.approx(before, rel=1e-6)  # new directions, new value (not a cached device copy)
    cpu.resample(4)
    scale = np.mean(np.abs(cpu.per_sample(case.theta, X)))
    assert abs(after - cpu.value(case.theta, X)) <= 1e-11 * scale
    gpu.resample(3)
    cpu.resample(3)
    assert gpu.value(case.theta, handle) == before


def test_float32_losses_agree_with_the_float64_cpu_backend(losses):
    """float32 CUDA kernels read the draws in float32 (Gaussian noise rounded once): within the float32 bound."""
    case, cpu, gpu = losses("student_t", "denoising", np.float32)
    X = case.X[:N_ROWS].astype(np.float32).astype(np.float64)
    cpu32 = case.model.compile(objective=OBJECTIVES["denoising"], seed=3, dtype=np.float32)
    np.testing.assert_array_equal(gpu.draws(N_ROWS), cpu32.draws(N_ROWS))
    _check(cpu, gpu, case.theta, X, gpu.to_device(X), TOL[np.dtype(np.float32)])


def test_quadratic_form_of_a_variant_equals_the_cpu_one(losses):
    """For an exponential family the sliced objective is quadratic in θ: (A, b, c) from the CUDA loss (rows
    from the device, the same draws) equal the CPU loss's, and reproduce the CUDA kernels' J̃ and ∇J̃."""
    case, cpu, gpu = losses("polynomial_exp_family", "sliced")
    X = case.X[:N_ROWS]
    A, b, c = gpu.quadratic_form(gpu.to_device(X))
    A_cpu, b_cpu, c_cpu = cpu.quadratic_form(X)
    np.testing.assert_allclose(A, A_cpu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b, b_cpu, rtol=1e-12, atol=1e-12)
    assert c == pytest.approx(c_cpu, rel=1e-12)
    theta = np.array([0.1, -0.3, 0.2, -0.4, -0.6])
    value, grad = gpu.value_and_grad(theta, X)
    assert 0.5 * theta @ A @ theta + b @ theta + c == pytest.approx(value, rel=1e-10)
    np.testing.assert_allclose(A @ theta + b, grad, rtol=1e-9, atol=1e-10)


def test_closed_form_fit_of_a_variant_on_cuda_equals_the_cpu_fit(losses):
    """symsm.fit on the CUDA loss (rows resident on the device) gives the CPU fit: same draws, same closed form,
    same sandwich standard errors (per-row gradients of the variant's fitting kernel, draws included)."""
    case, cpu, gpu = losses("polynomial_exp_family", "sliced")
    X = case.X[:N_ROWS]
    on_cpu = symsm.fit(cpu, X)
    on_gpu = symsm.fit(gpu, gpu.to_device(X))
    assert on_gpu.method == on_cpu.method == "closed_form"
    np.testing.assert_allclose(on_gpu.theta, on_cpu.theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(on_gpu.se, on_cpu.se, rtol=1e-8)
