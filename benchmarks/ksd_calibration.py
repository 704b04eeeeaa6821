"""Level and power of `symsm.ksd_test`: a Monte-Carlo study (on demand; a few minutes on 2 cores).

    python benchmarks/ksd_calibration.py [--replications 500] [--bootstrap 1000]

Level: data from the model at the θ tested — d = 2, n = 200, an isotropic Gaussian N(0, I) tested as the
model "iso_gauss" at (m, s) = (0, 1) — and the rejection rate at α = 0.05 (and 0.01), with its Monte-Carlo
standard error √(α(1−α)/R) and a 95% binomial interval. Power at α = 0.05: n = 500, d = 2, tested as a
standard Gaussian, against (a) independent Student-t coordinates with 5 degrees of freedom and (b) the
bivariate (elliptical) Student-t with 5 degrees of freedom and identity shape, each with the IMQ kernel
(default) and the Gaussian kernel, median bandwidth. Every replication has its own data and bootstrap seed.
Prints a Markdown table (copied into benchmarks/KSD.md).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
from scipy import stats

import symsm


def model() -> symsm.Model:
    return symsm.Model.from_string(
        "-((x0 - m0)**2 + (x1 - m1)**2) / (2 * s**2)", "x0 x1", "m0 m1 s", positive="s", name="iso_gauss"
    )


def interval(k: int, n: int) -> str:
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"[{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    R, B = args.replications, args.bootstrap
    loss = model().compile()
    theta = [0.0, 0.0, 1.0]

    def indep_t(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_t(5, size=(n, 2))

    def elliptical_t(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, 2)) / np.sqrt(rng.chisquare(5, size=(n, 1)) / 5)

    def gaussian(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, 2))

    studies = [
        ("level: N(0, I) tested as N(0, I)", gaussian, 200, "imq"),
        ("level: N(0, I) tested as N(0, I)", gaussian, 200, "gaussian"),
        ("power: independent t₅ coordinates", indep_t, 500, "imq"),
        ("power: independent t₅ coordinates", indep_t, 500, "gaussian"),
        ("power: bivariate (elliptical) t₅", elliptical_t, 500, "imq"),
        ("power: bivariate (elliptical) t₅", elliptical_t, 500, "gaussian"),
    ]
    print(f"# KSD calibration: R = {R} replications, B = {B} wild-bootstrap draws, α = 0.05 (and 0.01)\n")
    print("| study | n | kernel | rejections at 0.05 | rate (± MC SE) | 95% interval | rate at 0.01 | s |")
    print("|---|---:|---|---:|---:|---|---:|---:|")
    for label, draw, n, kernel in studies:
        rng = np.random.default_rng(20260101)
        start = time.perf_counter()
        p = np.array(
            [symsm.ksd_test(loss, draw(rng, n), theta, kernel=kernel, n_bootstrap=B, seed=r).p_value for r in range(R)]
        )
        k5, k1 = int(np.sum(p <= 0.05)), int(np.sum(p <= 0.01))
        rate = k5 / R
        se = math.sqrt(max(rate * (1 - rate), 0.05 * 0.95 if label.startswith("level") else 0.0) / R)
        print(
            f"| {label} | {n} | {kernel} | {k5}/{R} | {rate:.3f} ± {se:.3f} | {interval(k5, R)} | {k1 / R:.3f} | "
            f"{time.perf_counter() - start:.0f} |"
        )
    print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
