"""Core pipeline timing: one model from formula to steady-state value_and_grad, next to hand-written JAX.

    python -m benchmarks.core_timing [--model ica8] [--n 1000000] [--repeats 7]

Stages of a cold start (a fresh, empty kernel cache in a temporary directory): model construction,
``model.compile()`` (the exact derivatives — lazy until then —, kernel IR, printing, rendering, import),
the first ``value_and_grad`` (LLVM IR built and compiled to machine code, then one pass over the data), and the
steady-state time (median of `--repeats` calls). In the same process: JAX jit ``value_and_grad`` of the mean
integrand written by hand in jax.numpy (score and ∂ᵢ² log f derived by hand, JAX differentiates in θ only —
benchmarks/models.py), and the autodiff form (JAX differentiates log f in x by forward-over-reverse). Values
and gradients of all three are compared before anything is timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ica8")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ["SYMSM_CACHE_DIR"] = tempfile.mkdtemp(prefix="symsm-core-timing-")  # cold: nothing cached

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from .baselines import jax_value_and_grad
    from .models import make_model

    t = time.perf_counter()
    bm = make_model(args.model)
    construct = time.perf_counter() - t
    t = time.perf_counter()
    loss = bm.model.compile()
    codegen = time.perf_counter() - t
    X = bm.make_data(args.n, 0)
    t = time.perf_counter()
    value, grad = loss.value_and_grad(bm.theta, X)
    first = time.perf_counter() - t

    def steady(fn) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    symsm_s = steady(lambda: loss.value_and_grad(bm.theta, X))
    Xj, thj = jnp.asarray(X), jnp.asarray(bm.theta)
    rows = [("symsm (numba)", first, symsm_s)]
    for form, label in (("hand", "JAX jit, derivatives by hand"), ("jvp", "JAX jit, autodiff (jvp of grad)")):
        integrand = bm.jax_integrand_factory() if form == "hand" else None
        fn = jax_value_and_grad(bm.jax_log_f_factory(), bm.d, args.n, form, integrand)
        t = time.perf_counter()
        v, g = jax.block_until_ready(fn(thj, Xj))
        jax_first = time.perf_counter() - t
        np.testing.assert_allclose(float(v), value, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(g), grad, rtol=1e-7, atol=1e-9 * np.max(np.abs(grad)))
        rows.append((label, jax_first, steady(lambda fn=fn: jax.block_until_ready(fn(thj, Xj)))))

    print(f"{bm.family}, d = {bm.d}, P = {bm.P}, N = {args.n:.0e}, float64; load average {os.getloadavg()[0]:.2f}")
    print(f"model construction {construct:.2f} s; model.compile() (derive, IR, print, render, import) {codegen:.2f} s")
    print(f"{'':34s} {'first call s':>12s} {'steady ms':>10s} {'vs symsm':>9s}")
    for label, first_s, steady_s in rows:
        print(f"{label:34s} {first_s:12.2f} {steady_s * 1e3:10.1f} {steady_s / symsm_s:8.1f}x")


if __name__ == "__main__":
    main()
