"""Time of the KSD test at n = 10,000, d = 10, 1,000 bootstrap draws, against what the machine can do.

    python benchmarks/ksd_timing.py [--n 10000] [--d 10] [--bootstrap 1000] [--repeat 3]

Measured, on warm kernels (one untimed call first): `symsm.ksd_test` end to end (the score kernel, the
median bandwidth, the signs, the blocked pair sums with the bootstrap fused in) with the float32 bootstrap
(default) and the float64 one, and the pair sums without a bootstrap; median wall time and process CPU time
over `--repeat` calls, the peak of numpy's allocations during a call (tracemalloc) next to the n × n float64
matrix that is never formed, and the machine's matrix-product speed (numpy, square float64/float32 products
of the bootstrap's shape) with the flop count it implies for the bootstrap: n²·B multiply-adds over the
pair blocks a ≤ b. The load average is printed too: on a shared machine the wall time is not the CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

import symsm
from symsm.criticism.ksd import DEFAULT_BLOCK


def gaussian_model(d: int) -> symsm.Model:
    terms = " + ".join(f"(x{i} - m{i})**2" for i in range(d))
    return symsm.Model.from_string(
        f"-({terms}) / (2 * s**2)",
        " ".join(f"x{i}" for i in range(d)),
        " ".join([*(f"m{i}" for i in range(d)), "s"]),
        positive="s",
        name=f"iso_gauss_{d}d",
        init={"s": 1.0},
    )


def gemm_gflops(dtype: type, m: int = 2048, k: int = 2048, n: int = 1000, repeat: int = 5) -> float:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    a @ b
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def timed(fn, repeat: int) -> tuple[float, float, object]:
    result = fn()
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n, d, B = args.n, args.d, args.bootstrap

    import numba

    loss = gaussian_model(d).compile()
    X = np.random.default_rng(0).standard_normal((n, d))
    theta = np.r_[np.zeros(d), 1.0]
    print(f"# KSD timing: n = {n}, d = {d}, B = {B}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"numba threads {numba.get_num_threads()}, load average {os.getloadavg()[0]:.1f} (1 min) at the start"
    )
    g64, g32 = gemm_gflops(np.float64), gemm_gflops(np.float32)
    # U_ab W_b over the block pairs a ≤ b, diagonal blocks in full: B·(n² + n·block) multiply-adds × 2
    flops = 2.0 * B * (n * n + n * min(DEFAULT_BLOCK, n)) / 2
    print(f"numpy matrix product (2048×2048 @ 2048×1000): {g64:.1f} GFLOP/s float64, {g32:.1f} GFLOP/s float32")
    print(
        f"bootstrap products: ≈ {flops / 1e9:.0f} GFLOP → ≥ {flops / g64 / 1e9:.2f} s in float64, "
        f"≥ {flops / g32 / 1e9:.2f} s in float32 at those speeds"
    )
    rows = []
    for label, kwargs in [
        ("ksd_test, float32 bootstrap (default)", {"n_bootstrap": B}),
        ("ksd_test, float64 bootstrap", {"n_bootstrap": B, "bootstrap_dtype": "float64"}),
        ("ksd_test, 1 draw (≈ the statistic alone)", {"n_bootstrap": 1}),
    ]:
        wall, cpu, res = timed(lambda kw=kwargs: symsm.ksd_test(loss, X, theta, **kw), args.repeat)
        tracemalloc.start()
        symsm.ksd_test(loss, X, theta, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((label, wall, cpu, peak, res))
    print()
    print("| call | wall s (median) | CPU s (process) | peak numpy memory | KSD² | p |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, wall, cpu, peak, res in rows:
        print(
            f"| {label} | {wall:.2f} | {cpu:.2f} | {peak / 2**20:.0f} MiB | {res.statistic:.3g} | {res.p_value:.3g} |"
        )
    matrix = n * n * 8 / 2**20
    print(f"\n(an n × n float64 matrix would be {matrix:.0f} MiB; load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
