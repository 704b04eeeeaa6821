"""The CUDA backend on the sphere and the simplex against the llvm CPU backend (and the hand-written numpy
integrands of tests/test_sphere.py and tests/test_simplex.py), under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
a process of its own: tests/run_all.sh); N tiny, small launches. Agreement is scale-aware as in
test_cuda_domains.py: |cuda − cpu| ≤ tol × mean_t |term_t|."""

from __future__ import annotations

import numpy as np
import pytest
from test_simplex import THETA as ALPHA
from test_simplex import compositions, dirichlet, hand_alr
from test_sphere import THETA, fisher_bingham, hand_fb, sphere_points

TOL = {np.dtype(np.float64): 1e-11, np.dtype(np.float32): 1e-4}
SMALL_LAUNCH = {"threads_per_block": 16, "max_blocks": 2, "max_blocks_output": 2}
CASES = {
    "fisher_bingham_sphere": (fisher_bingham, lambda: sphere_points(40, 11), THETA, hand_fb),
    "dirichlet_alr": (lambda: dirichlet(transform="alr"), lambda: compositions(40, 12), ALPHA, hand_alr),
}


def _configure(loss):
    for name, value in SMALL_LAUNCH.items():
        setattr(loss, name, value)
    return loss


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_value_and_grad_match_cpu_and_numpy(name, dtype):
    make, data, theta, hand = CASES[name]
    model, X = make(), data()
    cpu = model.compile()
    gpu = _configure(model.compile(backend="cuda", dtype=dtype))
    tol = TOL[np.dtype(dtype)]
    v_cpu, g_cpu = cpu.value_and_grad(theta, X)
    assert v_cpu == pytest.approx(np.mean(hand(theta, X)), rel=1e-12)
    v_gpu, g_gpu = gpu.value_and_grad(theta, X)
    scale = np.mean(np.abs(hand(theta, X)))
    rows = np.array([cpu.value_and_grad(theta, X[t : t + 1])[1] for t in range(X.shape[0])])
    assert abs(v_gpu - v_cpu) <= tol * scale, (v_gpu, v_cpu)
    assert np.all(np.abs(g_gpu - g_cpu) <= tol * np.mean(np.abs(rows), axis=0)), (g_gpu, g_cpu)


def test_quadratic_form_matches_cpu():
    X = sphere_points(40, 13)
    model = fisher_bingham()
    A, b, c = _configure(model.compile(backend="cuda")).quadratic_form(X)
    A_cpu, b_cpu, c_cpu = model.compile().quadratic_form(X)
    np.testing.assert_allclose(A, A_cpu, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(b, b_cpu, rtol=1e-11, atol=1e-13)
    assert c == pytest.approx(c_cpu, rel=1e-11, abs=1e-13)


def test_ppi_sqrt_minsq_matches_cpu():
    """The sqrt-mapped PPI under minsq (min and its steps in the kernel; rows with zeros) on 16 rows."""
    from symsm.model.modelfile import load_model

    model = load_model("ppi_5d")
    U = np.random.default_rng(14).dirichlet([1, 1, 2, 2, 3], size=16)
    U[3] = [0.0, 0.2, 0.3, 0.1, 0.4]
    theta = np.linspace(-3, 2, model.n_params)
    v_cpu, g_cpu = model.compile().value_and_grad(theta, U)
    v_gpu, g_gpu = _configure(model.compile(backend="cuda")).value_and_grad(theta, U)
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=1e-11, atol=1e-13)

