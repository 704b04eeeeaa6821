"""The CUDA backend on the non-negative orthant [0, ∞)ᵈ and on boxes (generalized score matching with a coordinate
weight h) against the numba CPU backend and the hand-written numpy integrand of tests/domain_models.py.

Run under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1, a process of its own) by tests/run_all.sh; the simulator is
slow, so N is small (≤ 96 rows) and the launches use small blocks (several blocks and a grid-stride loop).
Agreement is scale-aware as in test_cuda_loss.py: |cuda − cpu| ≤ tol × mean_t |term_t|.
"""

from __future__ import annotations

import numpy as np
import pytest
from domain_models import box_ggm, nonnegative_ggm, truncated_normal

TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-4}
N_ROWS = 64
SMALL_LAUNCH = {"threads_per_block": 16, "max_blocks": 2, "max_blocks_output": 2}
CASES = {
    "truncated_normal_one_minus_exp": lambda: truncated_normal("one_minus_exp"),
    "ggm3_t2_bounded": lambda: nonnegative_ggm("t2_bounded"),
    "ggm3_t2": lambda: nonnegative_ggm("t2"),
    # capped and kinked weights: min, max and the step of h′ in the CUDA printer
    "truncated_normal_min_log_pow": lambda: truncated_normal("min_log_pow"),
    "truncated_normal_t2_over_max": lambda: truncated_normal("t2_over_max"),
    # a box with a two-sided, a lower-only and an upper-only coordinate, and a capped weight
    "box_ggm3_min_t2": lambda: box_ggm("min_t2"),
}


def _configure(loss):
    for name, value in SMALL_LAUNCH.items():
        setattr(loss, name, value)
    return loss


@pytest.fixture(scope="module")
def compiled():
    """name → (case, float64 CPU loss, {dtype: CUDA loss})."""
    out = {}
    for name, make in CASES.items():
        case = make()
        cpu = case.model.compile()
        gpus = {
            np.dtype(dt): _configure(case.model.compile(backend="cuda", dtype=dt)) for dt in (np.float64, np.float32)
        }
        out[name] = (case, cpu, gpus)
    return out


def _data(case) -> np.ndarray:
    X = case.X[:N_ROWS].copy()
    X[1, :] = 0.0  # boundary rows are data too
    if case.lower is not None:  # a box: a row on its finite lower ends (0 would sit on the capped weight's kink)
        X[1] = np.where(np.isfinite(case.lower), case.lower, X[2])
    return X


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_weighted_value_and_grad_match_cpu_and_numpy(compiled, name, dtype):
    case, cpu, gpus = compiled[name]
    gpu = gpus[np.dtype(dtype)]
    tol = TOL[np.dtype(dtype)]
    X = _data(case)
    theta = case.theta
    v_cpu, g_cpu = cpu.value_and_grad(theta, X)
    assert v_cpu == pytest.approx(case.objective(theta, X), rel=1e-12)  # the reference is the weighted integrand
    v_gpu, g_gpu = gpu.value_and_grad(theta, X)
    value_scale = np.mean(np.abs(case.integrand(theta, X)))
    rows = np.array([cpu.value_and_grad(theta, X[t : t + 1])[1] for t in range(X.shape[0])])
    grad_scale = np.mean(np.abs(rows), axis=0)
    assert abs(v_gpu - v_cpu) <= tol * value_scale, (v_gpu, v_cpu)
    assert np.all(np.abs(g_gpu - g_cpu) <= tol * grad_scale), (g_gpu, g_cpu)
    per_sample = gpu.per_sample(theta, X)
    assert np.all(np.abs(per_sample - case.integrand(theta, X)) <= tol * value_scale)


@pytest.mark.parametrize("name", ["ggm3_t2_bounded", "box_ggm3_min_t2"])
def test_weighted_quadratic_form_matches_cpu(compiled, name):
    case, cpu, gpus = compiled[name]
    X = _data(case)
    A, b, c = gpus[np.dtype(np.float64)].quadratic_form(X)
    A_cpu, b_cpu, c_cpu = cpu.quadratic_form(X)
    np.testing.assert_allclose(A, A_cpu, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(b, b_cpu, rtol=1e-11, atol=1e-13)
    assert c == pytest.approx(c_cpu, rel=1e-11, abs=1e-13)


def test_data_outside_the_domain_is_refused_on_the_cuda_backend(compiled):
    case, _, gpus = compiled["ggm3_t2"]
    X = _data(case)
    X[5, 1] = -0.125
    for gpu in gpus.values():
        with pytest.raises(ValueError, match=r"outside the model's domain.*row 5, column 1 \(x1\): -0.125"):
            gpu.value_and_grad(case.theta, X)
        with pytest.raises(ValueError, match=r"row 5, column 1 \(x1\)"):
            gpu.to_device(X)
