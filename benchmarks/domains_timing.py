"""Evaluation on the sphere and the simplex against the same formula on ℝᵈ (issue 19's target: ≤ 2×).

    python -m benchmarks.domains_timing [--n 1000000] [--repeat 7]

For each pair the two losses are compiled (the usual cache), then value_and_grad(θ, X) is timed on the same
N rows, alternating A, B, A, B, … in one process (this machine is shared and noisy: interleaving keeps the ratio
honest), median wall time and median process CPU time over --repeat pairs of calls:

* api: `loss.value_and_grad(θ, X)`, everything a user pays — for the sphere and the simplex the rows' domain
  check (norms or sums, chunked), for ℝᵈ the moment-matching shortcut where the integrand is of degree ≤ 2 in x
  (one pass of moments, then 2d rows; the manifold losses cannot use it: those points are off the domain);
* kernel: the generated module's value_and_grad on all N rows (no checks, no shortcut): the cost of the
  formula itself;
* bound: `loss.bind(X)` once, then `bound.value_and_grad(θ)` (symsm/runtime/bound.py): the rows checked once,
  the integrand's terms affine in θ with θ-free coefficients summed once at bind time (for both formulas: the
  ℝᵈ one's own θ-free terms are hoisted too), and per call only the rest of the integrand (on ℝᵈ with an
  integrand of degree ≤ 2 in x, the moment points computed once);
* bound, all rows: where the ℝᵈ formula binds to its moment points (Fisher–Bingham), the ℝᵈ side bound
  through the split on all N rows instead (`BoundLoss(loss, X, moments=False)`), the manifold side as in "bound";
* bind: the cost of `loss.bind(X)` itself (kernels already generated and compiled: a cache hit), once per data set.

Pairs: Fisher–Bingham on S² (d = 3, P = 8) against the same log f on ℝ³; the PPI model of the microbiome fit
(simplex, sqrt map, minsq, d = 5, P = 14) against the same log f in u on ℝ⁵ (positive data, no map); the
Dirichlet by alr (d = 3) against the same log f on ℝ³. The ratios are manifold / ℝᵈ, of the median wall times and
of the median process CPU times (all threads: steadier than wall time on a shared machine, where a call's threads
wait for cores). The load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} CPUs)"


def _pairs(n: int):
    import sympy as sp

    import symsm
    from symsm.model.modelfile import load_model

    rng = np.random.default_rng(0)
    x = sp.symbols("x0:3", real=True)
    k = sp.symbols("k0:3", real=True)
    m = sp.symbols("m00 m01 m02 m11 m12", real=True)
    M = sp.Matrix([[m[0], m[1], m[2]], [m[1], m[3], m[4]], [m[2], m[4], -m[0] - m[3]]])
    xv = sp.Matrix(x)
    fb = sum(ki * xi for ki, xi in zip(k, x, strict=True)) + (xv.T * M * xv)[0, 0]
    S = rng.normal([2, 1, 0.5], 1, size=(n, 3))
    S /= np.linalg.norm(S, axis=1, keepdims=True)
    theta_fb = np.array([0.7, -0.4, 1.1, 0.5, -0.3, 0.2, -0.6, 0.35])
    yield (
        "Fisher-Bingham d=3",
        symsm.Model(fb, x, [*k, *m], name="fb_sphere", domain="sphere"),
        symsm.Model(fb, x, [*k, *m], name="fb_real"),
        theta_fb,
        S,
    )
    ppi = load_model("ppi_5d")
    U = rng.dirichlet([2, 2, 3, 3, 4], size=n)
    theta_ppi = np.linspace(-3, 2, ppi.n_params)
    yield (
        "PPI d=5 (sqrt, minsq)",
        ppi,
        symsm.Model(ppi.log_f, ppi.data, {g.name: g.template for g in ppi.groups}, name="ppi_real"),
        theta_ppi,
        U,
    )
    diri = load_model("dirichlet_3d")
    D = rng.dirichlet([2, 3, 4], size=n)
    yield (
        "Dirichlet d=3 (alr)",
        diri,
        symsm.Model(diri.log_f, diri.data, {g.name: g.template for g in diri.groups}, name="dirichlet_real"),
        np.array([2.0, 3.0, 4.0]),
        D,
    )


def _time(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    from symsm.runtime.bound import BoundLoss

    print(f"# N = {args.n}, {args.repeat} interleaved pairs per line, float64, llvm backend; {_load()} at start")
    print("| model | what | manifold wall ms | ℝᵈ wall ms | ratio | manifold CPU ms | ℝᵈ CPU ms | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|")
    routes: list[str] = []
    for name, manifold, real, theta, X in _pairs(args.n):
        a, b = manifold.compile(), real.compile()
        a.value_and_grad(theta, X[:1000])
        b.value_and_grad(theta, X[:1000])
        th = np.ascontiguousarray(theta, dtype=np.float64)
        Xc = np.ascontiguousarray(X)
        a.bind(X[:1000]).value_and_grad(theta)  # the bound kernels generated and compiled before timing
        b.bind(X[:1000]).value_and_grad(theta)
        bound_a, bound_b = a.bind(X), b.bind(X)
        routes.append(f"# {name}: {bound_a!r} / {bound_b!r}")
        runs = {
            "api": (partial(a.value_and_grad, theta, X), partial(b.value_and_grad, theta, X)),
            "kernel": (partial(a._module.value_and_grad, th, Xc), partial(b._module.value_and_grad, th, Xc)),
            "bound": (partial(bound_a.value_and_grad, theta), partial(bound_b.value_and_grad, theta)),
            "bind": (partial(a.bind, X), partial(b.bind, X)),
        }
        if "kernels" in repr(bound_b):  # ℝᵈ bound to its moment points: also the split on all of its rows
            rows_b = BoundLoss(b, X, moments=False)
            rows_b.value_and_grad(theta)
            routes.append(f"# {name}, bound on all rows: {rows_b!r}")
            runs["bound, all rows"] = (partial(bound_a.value_and_grad, theta), partial(rows_b.value_and_grad, theta))
        for what, (fa, fb_) in runs.items():
            ta, tb = [], []
            for _ in range(args.repeat):
                ta.append(_time(fa))
                tb.append(_time(fb_))
            wa, wb = statistics.median(t[0] for t in ta), statistics.median(t[0] for t in tb)
            ca, cb = statistics.median(t[1] for t in ta), statistics.median(t[1] for t in tb)
            cells = [name, what, f"{wa * 1e3:.1f}", f"{wb * 1e3:.1f}", f"{wa / wb:.2f}"]
            cells += [f"{ca * 1e3:.1f}", f"{cb * 1e3:.1f}", f"{ca / cb:.2f}"]
            print("| " + " | ".join(cells) + " |")
    print("\n".join(routes))
    print(f"# {_load()} at end")


if __name__ == "__main__":
    main()
