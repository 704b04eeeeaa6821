"""float64 against float32 on the CPU, interleaved: value_and_grad through the public API (data already in the
kernel's dtype), the numpy input check alone (`as_data`) and the kernel alone, for each benchmark model.

    python -m benchmarks.float32_ab --models student8,ica8,ica32,gauss2,poly --n 1e6 --rounds 11

Each round calls all six in turn, so both dtypes see the same load; medians of wall and process CPU time (all
threads) in ms, ratios float64 / float32, the load average before and after, and the relative difference of
float32's J̃ and ∇J̃ from float64's. Runs against whichever symsm is on the path: with PYTHONPATH set to two
checkouts in turn it gives a before/after comparison (benchmarks/FLOAT32.md).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from symsm.core.arrays import as_data

from .models import make_model, model_names


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def compare(name: str, n: int, rounds: int) -> str:
    bm = make_model(name)
    X64 = np.ascontiguousarray(bm.make_data(n, 0), dtype=np.float64)
    X32 = X64.astype(np.float32)
    loss64, loss32 = bm.model.compile(), bm.model.compile(dtype=np.float32)
    theta = bm.theta
    j64, g64 = loss64.value_and_grad(theta, X64)
    j32, g32 = loss32.value_and_grad(theta, X32)
    rel_j = abs(j32 - j64) / abs(j64)
    rel_g = float(np.max(np.abs(g32 - g64)) / np.max(np.abs(g64)))
    th64, d64 = loss64._inputs(theta, X64)
    th32, d32 = loss32._inputs(theta, X32)
    calls: dict[str, Callable[[], Any]] = {
        "vg64": lambda: loss64.value_and_grad(theta, X64),
        "vg32": lambda: loss32.value_and_grad(theta, X32),
        "check64": lambda: as_data(bm.model, X64),
        "check32": lambda: as_data(bm.model, X32, dtype=np.float32),
        "kernel64": lambda: loss64._module.value_and_grad(th64, loss64._reduced(d64)),
        "kernel32": lambda: loss32._module.value_and_grad(th32, loss32._reduced(d32)),
    }
    for fn in calls.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    load0 = os.getloadavg()[0]
    for _ in range(rounds):
        for k, fn in calls.items():
            w, c = _timed(fn)
            wall[k].append(w)
            cpu[k].append(c)
    load1 = os.getloadavg()[0]
    med = {k: (float(np.median(wall[k])) * 1e3, float(np.median(cpu[k])) * 1e3) for k in calls}

    def ratio(part: str) -> str:
        a, b = med[part + "64"], med[part + "32"]
        return f"{a[0] / b[0]:.2f} ({a[1] / b[1]:.2f})"

    times = " ".join(f"{k} {w:.3g} ({c:.3g})" for k, (w, c) in med.items())
    return (
        f"{name:9s} {times} | ratio vg {ratio('vg')} check {ratio('check')} kernel {ratio('kernel')} | "
        f"rel J {rel_j:.1e} rel grad {rel_g:.1e} | load {load0:.2f}-{load1:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.float32_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="student8,ica8,ica32,gauss2,poly")
    p.add_argument("--n", default="1e6", help="rows")
    p.add_argument("--rounds", type=int, default=11)
    a = p.parse_args(argv)
    print("wall ms (process CPU ms); ratios float64 / float32", flush=True)
    for name in model_names(a.models):
        print(compare(name, int(float(a.n)), a.rounds), flush=True)


if __name__ == "__main__":
    main()
