"""ksd_test with a CUDA loss: the score comes from the loss's CUDA score kernel, the pair sums run on the host,
and the result equals the CPU backend's (same data, θ, kernel, bandwidth and bootstrap signs)."""

from __future__ import annotations

import numpy as np
import pytest

import symsm


def test_ksd_test_with_a_cuda_loss_matches_the_cpu_backend() -> None:
    model = symsm.Model.from_string(
        "-((x0 - m0)**2 + (x1 - m1)**2) / (2 * s**2)", "x0 x1", "m0 m1 s", positive="s", name="iso_gauss_cuda"
    )
    cpu, gpu = model.compile(), model.compile(backend="cuda")
    X = np.random.default_rng(3).standard_t(4, size=(40, 2))
    theta = [0.1, 0.0, 1.3]
    kwargs = {"n_bootstrap": 50, "bootstrap_dtype": "float64", "block_size": 16}
    on_cpu, on_gpu = symsm.ksd_test(cpu, X, theta, **kwargs), symsm.ksd_test(gpu, X, theta, **kwargs)
    assert on_gpu.statistic == pytest.approx(on_cpu.statistic, rel=1e-12)
    np.testing.assert_allclose(on_gpu.bootstrap, on_cpu.bootstrap, rtol=1e-12, atol=1e-15)
    assert on_gpu.p_value == on_cpu.p_value
