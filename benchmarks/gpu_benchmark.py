"""GPU benchmark of symsm's CUDA backend: value_and_grad with the data resident on the card, against the read
bandwidth of the card, the numba CPU backend and JAX jit on the same card, in one run.

    python benchmarks/gpu_benchmark.py [--models gauss8,ica8] [--sizes 1e7,1e8] [--dtypes float64,float32]
                                       [--repeat 20] [--cpu-repeat 3] [--no-cpu] [--no-jax] [--out FILE.json]

Measured per (model, dtype, N), medians over `--repeat` calls after one untimed warm-up call (compilation):

* symsm: `loss.value_and_grad(theta, loss.to_device(X))` end to end (host prologue, θ copy, kernel, per-block
  partial sums back, host epilogue: what a fit pays per iteration), and the kernel alone (CUDA events);
* bandwidth: bytes of X / time, against the read bandwidth of the card measured here (a grid-stride read of a
  `--bandwidth-bytes` array) and the nominal peak from the device attributes where the driver reports them;
  the read-once bound is bytes of X / measured read bandwidth;
* the numba CPU backend (`backend="numba"`) on the host copy of X, on this machine's cores;
* JAX jit on the same card: value_and_grad over θ of J̃ written two ways — "vectorised" (the closed form of
  the score and ∂ᵢ² log f in jax.numpy over all rows; the strongest JAX baseline) and "autodiff" (JAX
  differentiates the model's own log f: forward-over-reverse per row, vmapped, rows in chunks of at most
  `--jax-chunk-bytes` of per-row Hessian columns). Both are checked against symsm's value first.

Models (defined here, so the script runs on its own on a machine without network): gauss<d>, the full
Gaussian −½(x−μ)ᵀM(x−μ) with M symmetric (P = d + d(d+1)/2), and ica<d>, −Σ_k log cosh((Wx)_k) with W d×d
(P = d²). JAX runs after all symsm and CPU measurements, with XLA_PYTHON_CLIENT_PREALLOCATE=false, so the
two never compete for memory.

Without a GPU the script can be dry-run under the simulator (slow: tiny N only), e.g.
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_benchmark.py --sizes 600 --repeat 1 --cpu-repeat 1 \\
        --threads 32 --bandwidth-bytes 65536
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX must not take 75 % of the card up front

import argparse
import json
import math
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sympy as sp

if not hasattr(np, "row_stack"):  # numba-cuda 0.30 registers an overload for it; numpy 2.5 removed the alias
    np.row_stack = np.vstack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/gpu_benchmark.py` from anywhere

import symsm
from symsm.runtime.device import device_name, import_cuda, require_device, simulator_enabled

GOALS = {"gauss": 10.0, "ica": 25.0}  # float64: symsm at least this many times faster than JAX (issue 5)


# ---------------------------------------------------------------------- models


@dataclass
class BenchModel:
    name: str
    family: str
    model: symsm.Model
    theta: np.ndarray
    make_data: Callable[[int, int], np.ndarray]  # (n, seed) -> (n, d) float64

    @property
    def d(self) -> int:
        return self.model.dim

    @property
    def P(self) -> int:
        return self.model.n_params


def make_model(name: str) -> BenchModel:
    match = re.fullmatch(r"(gauss|ica)(\d+)", name)
    if not match:
        raise SystemExit(f"unknown model {name!r}: expected gauss<d> or ica<d>")
    family, d = match.group(1), int(match.group(2))
    rng = np.random.default_rng(d)
    x = sp.Matrix(sp.symbols(f"x0:{d}", real=True))
    if family == "gauss":
        mu = sp.Matrix(sp.symbols(f"mu0:{d}", real=True))
        M = symsm.symmetric("M", d)
        model = symsm.Model(-((x - mu).T * M * (x - mu))[0, 0] / 2, list(x), {"mu": mu, "M": M}, name=f"gauss{d}")
        A = rng.standard_normal((d, d)) / np.sqrt(d)
        cov = A @ A.T + 0.5 * np.eye(d)
        mean = rng.normal(0.0, 0.5, d)
        chol = np.linalg.cholesky(cov)
        prec = np.linalg.inv(cov) * 1.1  # near, not at, the optimum
        prec = (prec + prec.T) / 2  # exactly symmetric (pack checks M[i, j] == M[j, i])
        theta = model.pack({"mu": mean + 0.05, "M": prec})
        return BenchModel(name, "full Gaussian", model, theta, lambda n, seed: mean + _normal(n, d, seed) @ chol.T)
    W = symsm.matrix("W", d, d)
    y = W * x
    model = symsm.Model(sum(-sp.log(sp.cosh(y[k])) for k in range(d)), list(x), {"W": W}, name=f"ica{d}")
    mixing = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)  # well conditioned
    theta = model.pack({"W": np.linalg.inv(mixing) + rng.normal(0.0, 0.1, (d, d))})

    def make_data(n: int, seed: int) -> np.ndarray:
        s = np.random.default_rng(seed).laplace(0.0, 1.0 / np.sqrt(2), (n, d))  # unit-variance sources
        return s @ mixing.T

    return BenchModel(name, "ICA log cosh", model, theta, make_data)


def _normal(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


# ---------------------------------------------------------------------- timing helpers


def median_seconds(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def kernel_seconds(cuda: Any, launch: Any, repeat: int) -> float | None:
    """Median kernel time from CUDA events (None under the simulator, whose events do not time)."""
    if simulator_enabled():
        return None
    times = []
    for _ in range(repeat):
        start, stop = cuda.event(timing=True), cuda.event(timing=True)
        start.record()
        launch()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


# ---------------------------------------------------------------------- the card


def read_bandwidth(cuda: Any, n_bytes: int, repeat: int) -> float | None:
    """Bytes per second of a grid-stride read (summed per thread, so nothing is optimised away)."""
    if simulator_enabled():
        return None  # the simulator has no timing, and this read would take minutes there
    n = max(1, n_bytes // 8)

    @cuda.jit
    def read(a, out):
        acc = 0.0
        for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
            acc += a[i]
        out[cuda.grid(1)] = acc

    threads = 256
    blocks = 32 * cuda.get_current_device().MULTIPROCESSOR_COUNT
    a = cuda.to_device(np.ones(n))
    out = cuda.device_array(blocks * threads)
    read[blocks, threads](a, out)  # compile
    cuda.synchronize()
    seconds = kernel_seconds(cuda, lambda: read[blocks, threads](a, out), repeat)
    return None if seconds is None else n * 8 / seconds


def nominal_bandwidth(cuda: Any) -> float | None:
    """2 × memory clock × bus width, where the driver still reports them (CUDA 13 may not)."""
    if simulator_enabled():
        return None
    try:
        dev = cuda.get_current_device()
        return 2.0 * dev.MEMORY_CLOCK_RATE * 1e3 * dev.GLOBAL_MEMORY_BUS_WIDTH / 8
    except Exception:
        return None


# ---------------------------------------------------------------------- JAX baselines


def jax_functions(bm: BenchModel, n: int, chunk_bytes: int) -> dict[str, Any]:
    """{formulation: jit(value_and_grad(J̃))(theta, X)} for the model, written in JAX."""
    import jax
    import jax.numpy as jnp

    d, names = bm.d, bm.model.param_names
    index = {name: k for k, name in enumerate(names)}
    out: dict[str, Any] = {}

    if bm.name.startswith("gauss"):
        mu_idx = jnp.asarray([index[f"mu{i}"] for i in range(d)])
        m_idx = jnp.asarray([[index[f"M_{min(i, j)}_{max(i, j)}"] for j in range(d)] for i in range(d)])

        def log_f(theta, xr):
            r = xr - theta[mu_idx]
            return -0.5 * r @ (theta[m_idx] @ r)

        def vectorised(theta, X):
            M = theta[m_idx]
            S = -(X - theta[mu_idx]) @ M  # score rows (M symmetric)
            return -jnp.trace(M) + 0.5 * jnp.mean(jnp.sum(S * S, axis=1))

    else:
        w_idx = jnp.asarray([[index[f"W_{i}_{j}"] for j in range(d)] for i in range(d)])

        def log_f(theta, xr):
            return -jnp.sum(jnp.log(jnp.cosh(theta[w_idx] @ xr)))

        def vectorised(theta, X):
            W = theta[w_idx]
            T = jnp.tanh(X @ W.T)
            S = -T @ W  # score rows
            H = -((1.0 - T * T) @ (W * W))  # ∂ᵢ² log f per row
            return jnp.mean(jnp.sum(H, axis=1) + 0.5 * jnp.sum(S * S, axis=1))

    out["vectorised"] = vectorised
    grad_x = jax.grad(log_f, argnums=1)

    def integrand(theta, xr):
        eye = jnp.eye(d, dtype=xr.dtype)  # tangents of the data's dtype (float32 runs stay float32)
        g, hcols = jax.vmap(lambda e: jax.jvp(lambda y: grad_x(theta, y), (xr,), (e,)))(eye)
        return jnp.sum(jnp.diagonal(hcols)) + 0.5 * jnp.sum(g[0] * g[0])

    rows = max(1, min(n, chunk_bytes // (8 * d * d)))
    n_full, rest = divmod(n, rows)

    def autodiff(theta, X):
        def block_sum(Xb):
            return jnp.sum(jax.vmap(integrand, in_axes=(None, 0))(theta, Xb))

        total = jnp.sum(jax.lax.map(block_sum, X[: n_full * rows].reshape(n_full, rows, d))) if n_full else 0.0
        if rest:
            total = total + block_sum(X[n_full * rows :])
        return total / n

    out["autodiff"] = autodiff
    return {name: jax.jit(jax.value_and_grad(fn)) for name, fn in out.items()}


def measure_jax(bm: BenchModel, X: np.ndarray, dtype: np.dtype, reference: float, args: Any) -> dict[str, Any]:
    import jax

    results: dict[str, Any] = {}
    try:
        Xj = jax.device_put(X.astype(dtype))
        th = jax.device_put(bm.theta.astype(dtype))
    except Exception as exc:  # out of memory
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    for name, fn in jax_functions(bm, X.shape[0], args.jax_chunk_bytes).items():
        try:
            value, _ = jax.block_until_ready(fn(th, Xj))  # compile + check
            seconds = median_seconds(lambda fn=fn: jax.block_until_ready(fn(th, Xj)), args.repeat)
            results[name] = {"ms": seconds * 1e3, "value": float(value), "rel_diff": _rel(float(value), reference)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return results


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------------- the run


def parse_sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gauss8,ica8")
    parser.add_argument("--sizes", default="1e7,1e8", type=parse_sizes)
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cpu-repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads per block (default: the generated one)")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--jax-chunk-bytes", type=int, default=1 << 30)
    parser.add_argument("--bandwidth-bytes", type=int, default=4 << 30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    cuda = import_cuda()
    require_device()
    card = device_name()
    measured_bw = read_bandwidth(cuda, args.bandwidth_bytes, max(3, args.repeat))
    nominal_bw = nominal_bandwidth(cuda)
    print(f"# card: {card}; simulator: {simulator_enabled()}; host: {platform.node()}, {os.cpu_count()} cores")
    print(f"# read bandwidth measured: {_gbs(measured_bw)} GB/s; nominal: {_gbs(nominal_bw)} GB/s")

    dtypes = [np.dtype(t) for t in args.dtypes.split(",")]
    rows: list[dict[str, Any]] = []
    jax_todo = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        bm = make_model(name)
        for n in args.sizes:
            X = bm.make_data(n, args.seed)
            for dtype in dtypes:
                row = measure_symsm(cuda, bm, X, dtype, args, measured_bw)
                rows.append(row)
                jax_todo.append((bm, n, dtype, row))
                print(_line(row), flush=True)
            del X
    if not args.no_jax:
        import jax

        jax.config.update("jax_enable_x64", True)
        print(f"# JAX {jax.__version__} on {jax.devices()}", flush=True)
        for bm, n, dtype, row in jax_todo:
            X = bm.make_data(n, args.seed)
            row["jax"] = measure_jax(bm, X, dtype, row["value"], args)
            best = [(r["ms"], k) for k, r in row["jax"].items() if isinstance(r, dict) and "ms" in r]
            if best:
                row["jax_best_ms"], row["jax_best"] = min(best)
                row["speedup_vs_jax"] = row["jax_best_ms"] / row["call_ms"]
            print(_line(row), flush=True)
            del X
    summary = {"card": card, "measured_read_GBps": _num(measured_bw), "nominal_GBps": _num(nominal_bw), "rows": rows}
    summary["goals"] = goals(rows)
    print(json.dumps(summary["goals"], indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1, default=float))
        print(f"# results written to {args.out}")


def measure_symsm(cuda: Any, bm: BenchModel, X: np.ndarray, dtype: np.dtype, args: Any, bw: float | None) -> dict:
    n, d = X.shape
    loss = bm.model.compile(backend="cuda", dtype=dtype)
    if args.threads:
        loss.threads_per_block = args.threads
    handle = loss.to_device(X)
    theta = bm.theta
    value, _ = loss.value_and_grad(theta, handle)  # compile the kernels and host functions
    call = median_seconds(lambda: loss.value_and_grad(theta, handle), args.repeat)
    mod = loss._module
    params = loss._params(mod, "value_and_grad", theta)
    blocks = loss._blocks(n, loss.max_blocks)
    _, d_partial, d_params = loss._scratch(cuda, mod, "value_and_grad", blocks)
    d_params.copy_to_device(params)
    kernel = kernel_seconds(
        cuda,
        lambda: mod.value_and_grad_kernel[blocks, loss.threads_per_block](d_params, handle.array, d_partial),
        args.repeat,
    )
    n_bytes = n * d * dtype.itemsize
    row: dict[str, Any] = {
        "model": bm.name,
        "family": bm.family,
        "d": d,
        "P": bm.P,
        "N": n,
        "dtype": dtype.name,
        "value": value,
        "threads_per_block": loss.threads_per_block,
        "blocks": blocks,
        "sums": mod.LAYOUT["value_and_grad"][1],
        "call_ms": call * 1e3,
        "kernel_ms": None if kernel is None else kernel * 1e3,
        "GBps_call": n_bytes / call / 1e9,
        "read_once_bound_ms": None if bw is None else n_bytes / bw * 1e3,
    }
    if row["read_once_bound_ms"]:
        row["x_bound"] = row["call_ms"] / row["read_once_bound_ms"]
        row["fraction_of_measured_bw"] = n_bytes / call / bw
    if not args.no_cpu:
        cpu = bm.model.compile(backend="numba", dtype=dtype)
        Xh = np.ascontiguousarray(X, dtype=dtype)
        v_cpu, _ = cpu.value_and_grad(theta, Xh)
        row["cpu_ms"] = median_seconds(lambda: cpu.value_and_grad(theta, Xh), args.cpu_repeat) * 1e3
        row["speedup_vs_cpu"] = row["cpu_ms"] / row["call_ms"]
        row["cpu_rel_diff"] = _rel(value, v_cpu)
    return row


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, checked on the measured rows (None where a number is missing)."""
    out: dict[str, Any] = {}
    for r in rows:
        family = r["model"].rstrip("0123456789")
        key = f"{r['model']} N={r['N']:.0e}"
        if r["dtype"] == "float64" and family in GOALS and "speedup_vs_jax" in r:
            out[f"{key}: ≥{GOALS[family]:g}× JAX (f64)"] = bool(r["speedup_vs_jax"] >= GOALS[family])
        if "x_bound" in r:
            out[f"{key} {r['dtype']}: × read-once bound"] = round(r["x_bound"], 2)
    for r32 in (r for r in rows if r["dtype"] == "float32"):
        r64 = next(
            (r for r in rows if r["dtype"] == "float64" and r["model"] == r32["model"] and r["N"] == r32["N"]), None
        )
        if r64:
            out[f"{r32['model']} N={r32['N']:.0e}: f32 ≥ 1.5× faster than f64"] = bool(
                r64["call_ms"] / r32["call_ms"] >= 1.5
            )
    return out


def _line(r: dict[str, Any]) -> str:
    parts = [
        f"{r['model']:>7} {r['dtype']:>7} N={r['N']:.0e}",
        f"symsm {r['call_ms']:9.3f} ms (kernel {_f(r['kernel_ms'])} ms)",
        f"{r['GBps_call']:8.1f} GB/s",
        f"bound {_f(r.get('read_once_bound_ms'))} ms (×{_f(r.get('x_bound'), 1)})",
    ]
    if "cpu_ms" in r:
        parts.append(f"CPU {r['cpu_ms']:9.1f} ms (×{r['speedup_vs_cpu']:.1f})")
    if "jax_best_ms" in r:
        parts.append(f"JAX {r['jax_best']} {r['jax_best_ms']:.3f} ms (×{r['speedup_vs_jax']:.1f})")
    elif "jax" in r:
        parts.append(f"JAX: {r['jax']}")
    return " | ".join(parts)


def _f(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _gbs(v: float | None) -> str:
    return "n/a" if v is None else f"{v / 1e9:,.0f}"


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v / 1e9


if __name__ == "__main__":
    main()
