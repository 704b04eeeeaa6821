"""Interleaved A/B of the structured kernels in one process: ``python -m benchmarks.structured_ab`` (the numbers
of benchmarks/STRUCTURED_SPEED.md).

For ICA log cosh at each d, value_and_grad four ways, each call interleaved with the others, `--repeat` rounds:

* *before*: `StructuredKernel.run` of the program as lowered, without the rewrites of symsm/ir/block_passes.py
  (`build_block_programs(..., rewrite=False)`: five row products, 10d² flops a row), today's kernel defaults;
* *after kernel*: `StructuredKernel.run` of the rewritten program (what symsm runs: 7d² + d flops a row in
  products), today's defaults (`default_lanes`, `default_tile`, the kernel's own test of X);
* *compiled loss*: `model.compile(path="structured").value_and_grad`, today's whole path;
* *JAX hand*: JAX (jit, float64) with the derivatives written by hand.
 Medians of wall and
process CPU time (all threads); the load average at the start and end. `--float32` runs the after-kernel
in float32 too (against the float64 after-kernel). The roofline (CPU time): 10d²·N flops (the issue's) and the
program's own products' flops, at the FMA loop's per-core peak measured in the same process
(benchmarks/block_kernels.fma_peak)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from .block_kernels import fma_peak, jax_ica
from .structured import _rel, ica_model, ica_theta

DIMS = {8: 1_000_000, 32: 1_000_000, 64: 1_000_000, 128: 100_000, 256: 100_000}


def kernels(d: int, float32: bool) -> tuple[Any, dict[str, Any], dict[str, int]]:
    from symsm.backends.llvm.structured import StructuredKernel
    from symsm.derive.derivation import Derivation
    from symsm.ir.blocks import build_block_programs, flops_per_row

    model = ica_model(d)
    der = Derivation(model, path="structured").structured
    lowered = build_block_programs(der, model, rewrite=False)["value_and_grad"]
    program = build_block_programs(der, model)["value_and_grad"]
    text = program.text()
    out = {}
    before = StructuredKernel(lowered.text(), np.float64)
    before.native()
    out["before"] = before
    flops = {"before": flops_per_row(lowered)["matmul"], "after kernel": flops_per_row(program)["matmul"]}
    after = StructuredKernel(text, np.float64)
    after.native()
    out["after kernel"] = after
    if float32:
        f32 = StructuredKernel(text, np.float32)
        f32.native()
        out["after f32"] = f32
    return model, out, flops


def measure(d: int, n: int, args: argparse.Namespace) -> None:
    """One dimension's interleaved rounds, printed."""
    import jax

    from symsm.backends.llvm.blocks import fma_peak as blocks_fma_peak

    model, ks, flops = kernels(d, args.float32)
    theta = ica_theta(d)
    X = np.random.default_rng(1).standard_normal((n, d))
    X32 = X.astype(np.float32)
    loss = model.compile(path="structured")
    calls = {
        "before": lambda k=ks["before"]: k.run(theta, X),
        "after kernel": lambda k=ks["after kernel"]: k.run(theta, X),
        "compiled loss": lambda: loss.value_and_grad(theta, X),
    }
    if "after f32" in ks:
        loss32 = model.compile(path="structured", dtype=np.float32)
        calls["after f32"] = lambda k=ks["after f32"]: k.run(theta, X32)
        calls["loss f32"] = lambda: loss32.value_and_grad(theta, X32)
        calls["loss f32, X f64"] = lambda: loss32.value_and_grad(theta, X)
    if args.threading_ab:  # main's threading: one contiguous range of chunks per thread, fresh work buffers a call,
        # the θ-level numpy products on OpenBLAS's threads
        import contextlib

        from symsm.backends.llvm import structured as structured_module
        from symsm.core import threads as threads_module

        def static(k: Any = ks["after kernel"]) -> Any:
            threads_module.DYNAMIC_CHUNKS = False
            structured_module.blas_one_thread = contextlib.nullcontext
            k.native()._free_work.clear()
            try:
                return k.run(theta, X)
            finally:
                threads_module.DYNAMIC_CHUNKS = True
                structured_module.blas_one_thread = threads_module.blas_one_thread

        calls["after, main's threads"] = static
        flops["after, main's threads"] = flops["after kernel"]
    results = {name: fn() for name, fn in calls.items()}
    if not args.no_jax:
        vg = jax_ica(d, n)
        th, Xj = jax.numpy.asarray(theta), jax.numpy.asarray(X)
        calls["JAX hand"] = lambda: jax.block_until_ready(vg(th, Xj))
        jv = calls["JAX hand"]()
        results["JAX hand"] = (float(jv[0]), np.asarray(jv[1]))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    paired: dict[str, list[float]] = {name: [] for name in calls}  # CPU time / the roofline at the peak just after
    fma = blocks_fma_peak("float64", iters=5_000_000)
    fma()
    load0 = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, fn in calls.items():
            if args.threading_ab:
                time.sleep(0.25)  # OpenBLAS's threads, spinning after an earlier call's products, asleep again
            c, t = time.process_time(), time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t, time.process_time() - c))
            c = time.thread_time()
            gflops = fma() / (time.thread_time() - c) / 1e9
            paired[name].append(times[name][-1][1] / (10 * d * d * n / gflops / 1e9))
    load1 = os.getloadavg()[0]
    ref = results["compiled loss"]
    peak = fma_peak("float64")["per_core"]  # GFLOP/s, after the rounds: the same process, the same load
    print(f"ICA d = {d}, N = {n}, float64 unless noted, load {load0:.1f} → {load1:.1f}; FMA peak {peak:.1f} "
          f"GFLOP/s a core: roofline (CPU) 10d²·N {10 * d * d * n / peak / 1e6:.1f} ms")  # fmt: skip
    jw = statistics.median(t[0] for t in times.get("JAX hand", [(float("nan"), 0.0)]))
    jc = statistics.median(t[1] for t in times.get("JAX hand", [(0.0, float("nan"))]))
    for name, ts in times.items():
        w, c = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        rel = _rel(results[name], ref)
        print(
            f"  {name:16s} wall {1e3 * w:8.1f} ms  CPU {1e3 * c:8.1f} ms  JAX/this wall {jw / w:5.2f}× "
            f"CPU {jc / c:5.2f}×  rel. diff to the compiled loss {rel:.1e}",
            flush=True,
        )
        if name in flops:
            roof, own = 10 * d * d * n / peak / 1e9, flops[name] * n / peak / 1e9
            pm, pb, frac = statistics.median(paired[name]), min(paired[name]), flops[name] / (10 * d * d)
            print(
                f"  {'':16s} × roofline (CPU): {c / roof:.2f} against 10d², {c / own:.2f} against the program's "
                f"own {flops[name] / (d * d):.2f}d² a row; each call against the peak right after it: "
                f"{pm:.2f} (best {pb:.2f}) against 10d², {pm / frac:.2f} (best {pb / frac:.2f}) against its own; "
                f"cores used {c / w:.2f}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dims", default="8,32,64,128,256")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1, help="N / scale")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--threading-ab", action="store_true", help="also the after-kernel threaded as on main")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    for d in (int(v) for v in args.dims.split(",")):
        measure(d, DIMS[d] // args.scale, args)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
