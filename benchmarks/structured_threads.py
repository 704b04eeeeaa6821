"""One thread on 200k rows against two threads on 10⁶ rows, in one process: ``python -m benchmarks.structured_threads
--d 32`` (benchmarks/STRUCTURED_SPEED.md, "Where the 1.48× went").

The rewritten ICA value_and_grad program's `StructuredKernel.run` (what the compiled loss calls), interleaved
round by round: one thread on the first n/5 rows (times × 5, the breakdown's setting), one thread on n rows, two
threads on n rows as on main (a static split: one contiguous range of chunks per thread, fresh work buffers each
call; the θ-level numpy products on OpenBLAS's threads), with numpy's products on one thread
(symsm.core.threads.blas_one_thread), and with the chunks handed to whichever thread is free too
(symsm.core.threads.run_chunks). After
every call the FMA loop's peak is measured (one thread, CPU time), and the call is set against the 10d² roofline
at that peak. Reports best and median of process CPU time and of the ratios, the CPU time outside the machine code
(the call's CPU time minus the threads' CPU time inside it), the cores a call got (CPU / wall), and the range of
the peaks."""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import threading
import time
from typing import Any

import numpy as np

from .structured import ica_model, ica_theta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args(argv)
    from symsm.backends.llvm import blocks
    from symsm.backends.llvm import structured as structured_module
    from symsm.backends.llvm.structured import StructuredKernel
    from symsm.core import threads as threads_module
    from symsm.core.threads import blas_one_thread
    from symsm.derive.derivation import Derivation
    from symsm.ir.blocks import build_block_programs

    d, n = args.d, args.n
    model = ica_model(d)
    program = build_block_programs(Derivation(model, path="structured").structured, model)["value_and_grad"]
    kernel = StructuredKernel(program.text(), np.float64)
    native = kernel.native()
    theta = ica_theta(d)
    X = np.random.default_rng(1).standard_normal((n, d))
    small = X[: n // 5].copy()
    inside: list[float] = []  # the threads' CPU time inside the machine code, this call
    lock = threading.Lock()
    fn = native._fn

    def timed_fn(*a: Any) -> None:
        c = time.thread_time()
        fn(*a)
        with lock:
            inside.append(time.thread_time() - c)

    native._fn = timed_fn  # the instance's own attribute: only this benchmark's kernel object
    variants = {  # name: (rows, threads, dynamic chunks, BLAS on one thread around the kernel, scale to n rows)
        f"1 thread, {n // 5} rows (× 5)": (small, 1, True, True, 5),
        f"1 thread, {n} rows": (X, 1, True, True, 1),
        f"2 threads, {n} rows, main (static, BLAS threads)": (X, 2, False, False, 1),
        f"2 threads, {n} rows, static, BLAS one thread": (X, 2, False, True, 1),
        f"2 threads, {n} rows, dynamic, BLAS one thread": (X, 2, True, True, 1),
    }
    fma = blocks.fma_peak("float64", iters=5_000_000)
    fma()
    saved = threads_module.threads, threads_module.DYNAMIC_CHUNKS
    rows: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in variants}
    peaks: list[float] = []
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    try:
        for _ in range(args.repeat + 1):
            for name, (data, t, dynamic, one_blas, scale) in variants.items():
                threads_module.threads = lambda t=t: t
                threads_module.DYNAMIC_CHUNKS = dynamic
                structured_module.blas_one_thread = blas_one_thread if one_blas else contextlib.nullcontext
                if not dynamic:
                    native._free_work.clear()
                inside.clear()
                time.sleep(0.25)  # OpenBLAS's threads, spinning after an earlier call's products, asleep again
                c, w = time.process_time(), time.perf_counter()
                kernel.run(theta, data)
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                c = time.thread_time()
                gflops = fma() / (time.thread_time() - c) / 1e9
                peaks.append(gflops)
                roof = 10 * d * d * n / gflops / 1e9
                rows[name].append((cpu * scale, cpu * scale / roof, (cpu - sum(inside)) * scale, cpu / wall))
    finally:
        threads_module.threads, threads_module.DYNAMIC_CHUNKS = saved
        structured_module.blas_one_thread = blas_one_thread
        native._fn = fn
    print(f"ICA d = {d}, value_and_grad (rewritten program), times scaled to {n} rows; load {os.getloadavg()[0]:.2f}; "
          f"FMA peak {min(peaks):.1f}–{max(peaks):.1f} GFLOP/s (median {statistics.median(peaks):.1f})")  # fmt: skip
    for name, rs in rows.items():
        rs = rs[1:]  # the first round: warm-up

        def med(i: int, rs: list = rs) -> float:
            return statistics.median(r[i] for r in rs)

        print(f"  {name:50s} CPU ms best {1e3 * min(r[0] for r in rs):6.1f} median {1e3 * med(0):6.1f}; × 10d² "
              f"roofline best {min(r[1] for r in rs):.2f} median {med(1):.2f}; outside the machine code "
              f"{1e3 * med(2):.1f} ms; cores used {med(3):.2f}", flush=True)  # fmt: skip
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
