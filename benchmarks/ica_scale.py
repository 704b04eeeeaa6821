"""ICA log cosh at large d: correctness and speed of value_and_grad next to JAX jit, in one process.

    python -m benchmarks.ica_scale                          # d = 128, N = 1e5 → benchmarks/ICA_SCALE.md
    python -m benchmarks.ica_scale --d 64 --jax-forms hand,jvp_batch,jvp

The model is −Σ_k log cosh((W x)_k) with W d × d (P = d²), built and compiled like any user model (the
cache is used: a cold start takes minutes at d = 128, see benchmarks/STAGES_d128.md). Checks, on the same θ
and rows: J̃ against an independent numpy evaluation of the integrand (score −Wᵀ tanh(Wx), ∂ᵢ² log f =
−Σ_k W_ki² (1 − tanh²(Wx)_k)), a few gradient entries against central differences of that numpy J̃, and
J̃ against each JAX formulation. Times: median of `--repeat` calls after one warm-up for symsm; for JAX the
first call (trace + compile + run) and then as many calls as fit in `--budget` seconds (at least one).
JAX formulations are those of benchmarks/baselines.py: `jvp_batch` (JAX differentiates the model's log f:
forward-over-reverse, batched over rows) and `hand` (score and ∂ᵢ² log f written by hand, JAX
differentiates in θ only).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def numpy_value(W: np.ndarray, X: np.ndarray) -> float:
    T = np.tanh(X @ W.T)
    S = -T @ W
    return float(np.mean(np.sum(-((1.0 - T * T) @ (W * W)) + 0.5 * S * S, axis=1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--n", type=float, default=1e5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed calls per JAX formulation")
    parser.add_argument("--jax-forms", default="hand,jvp_batch")
    parser.add_argument("--out", default=str(HERE / "ICA_SCALE.md"))
    args = parser.parse_args(argv)
    d, n = args.d, int(args.n)

    from .models import make_model

    out: dict = {"d": d, "P": d * d, "N": n, "cpus": os.cpu_count()}
    t = time.perf_counter()
    model = make_model(f"ica{d}").model  # the benchmark suite's ICA model (benchmarks/models.py)
    out["construct_s"] = time.perf_counter() - t
    t = time.perf_counter()
    loss = model.compile()
    out["compile_s"] = time.perf_counter() - t
    assert model.param_names == [f"W_{i}_{j}" for i in range(d) for j in range(d)]  # θ: W row-major

    rng = np.random.default_rng(1)
    W = np.eye(d) + 0.05 * rng.standard_normal((d, d))
    theta = W.ravel()
    X = rng.standard_normal((n, d))
    t = time.perf_counter()
    value, grad = loss.value_and_grad(theta, X)
    out["first_call_s"] = time.perf_counter() - t
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        loss.value_and_grad(theta, X)
        times.append(time.perf_counter() - t)
    out["symsm_s"] = float(np.median(times))
    out["symsm_minmax_s"] = [min(times), max(times)]

    # correctness: numpy value, central differences on a few entries (on ≤ 2·10⁴ rows to keep it quick)
    Xc = X[:20000]
    vc, gc = loss.value_and_grad(theta, Xc)
    ref = numpy_value(W, Xc)
    out["value_rel_err_numpy"] = abs(vc - ref) / abs(ref)
    errs = []
    for idx in rng.choice(d * d, 6, replace=False):
        step = 1e-6
        up, down = theta.copy(), theta.copy()
        up[idx] += step
        down[idx] -= step
        fd = (numpy_value(up.reshape(d, d), Xc) - numpy_value(down.reshape(d, d), Xc)) / (2 * step)
        errs.append(abs(fd - gc[idx]) / (abs(fd) + 1e-3))
    out["grad_rel_err_fd"] = max(errs)

    forms = [f for f in args.jax_forms.split(",") if f]
    if forms:
        import jax
        import jax.numpy as jnp

        from .baselines import jax_value_and_grad

        jax.config.update("jax_enable_x64", True)

        def log_f(th, Z):
            return -jnp.sum(jnp.log(jnp.cosh(Z @ th.reshape(d, d).T)), axis=1)

        def integrand(th, Z):
            Wm = th.reshape(d, d)
            T = jnp.tanh(Z @ Wm.T)
            S = -T @ Wm
            return jnp.sum(-((1 - T * T) @ (Wm * Wm)) + 0.5 * S * S, axis=1)

        th_j, X_j = jnp.asarray(theta), jnp.asarray(X)
        out["jax"] = {}
        for form in forms:
            vg = jax_value_and_grad(log_f, d, n, form, integrand)
            t = time.perf_counter()
            v, g = vg(th_j, X_j)
            jax.block_until_ready(g)
            first = time.perf_counter() - t
            runs, spent = [], 0.0
            while not runs or (spent < args.budget and len(runs) < args.repeat):
                t = time.perf_counter()
                v, g = vg(th_j, X_j)
                jax.block_until_ready(g)
                runs.append(time.perf_counter() - t)
                spent += runs[-1]
            out["jax"][form] = {
                "first_s": first,
                "median_s": float(np.median(runs)),
                "runs": len(runs),
                "value_rel_diff": abs(float(v) - value) / abs(value),
                "grad_rel_diff": float(np.max(np.abs(np.asarray(g) - grad)) / np.max(np.abs(grad))),
                "symsm_speedup": float(np.median(runs)) / out["symsm_s"],
            }

    out["load_average"] = os.getloadavg()[0]
    lines = [
        f"# ICA log cosh, d = {d} (P = {d * d}), N = {n}",
        "",
        f"`python -m benchmarks.ica_scale --d {d} --n {args.n:g}`; {out['cpus']} cores, load average "
        f"{out['load_average']:.1f} at the end; float64, seconds. compile = `model.compile()` (a cache hit if the "
        "cache already holds this model; cold-start stages: benchmarks/STAGES_d128.md); first call includes "
        "compiling the machine code on a cache miss.",
        "",
        f"- construct {out['construct_s']:.1f} s, compile {out['compile_s']:.1f} s, first value_and_grad "
        f"{out['first_call_s']:.1f} s",
        f"- symsm value_and_grad: median {out['symsm_s']:.3f} s (min {min(times):.3f}, max {max(times):.3f}, "
        f"{args.repeat} calls)",
        f"- J̃ against numpy ({min(n, 20000)} rows): {out['value_rel_err_numpy']:.1e} relative; "
        f"6 gradient entries against central differences: ≤ {out['grad_rel_err_fd']:.1e} relative",
        "",
    ]
    if forms:
        lines += [
            "| JAX formulation | first call s | median s (calls) | symsm speed-up | value rel. diff | grad rel. diff |",
            "|---|---|---|---|---|---|",
        ]
        for form, r in out["jax"].items():
            lines.append(
                f"| {form} | {r['first_s']:.2f} | {r['median_s']:.3f} ({r['runs']}) | {r['symsm_speedup']:.2f}× | "
                f"{r['value_rel_diff']:.1e} | {r['grad_rel_diff']:.1e} |"
            )
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(out, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
