"""Measurements that need a process of their own; run by benchmarks/run.py, print one JSON line.

    python -m benchmarks.subproc warm MODEL        first call in a new process on a filled cache (cache hit)
    python -m benchmarks.subproc memory MODEL N    peak extra memory of one value_and_grad on N rows
    python -m benchmarks.subproc dtypes MODEL N R   float64 against float32 value_and_grad on N rows, R rounds

All use the cache directory in $SYMSM_CACHE_DIR (set by the runner to the one its cold run filled).

Peak memory: the kernel's allocations come from numba's runtime, which tracemalloc does not see, so the
peak resident set size is read from the kernel (VmHWM in /proc/self/status), after resetting it with
``echo 5 > /proc/self/clear_refs`` once X is in memory: the peak then covers exactly the call. Where that
reset is not available, ru_maxrss (peak of the whole process) is used, and the JSON says so.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def warm(name: str) -> dict:
    t0 = time.perf_counter()
    importlib.import_module("symsm")  # timed: what a new process pays before it can use a loss
    from symsm.core import cache

    t1 = time.perf_counter()
    from benchmarks.models import make_model

    bm = make_model(name)
    t2 = time.perf_counter()
    loss = bm.model.compile()
    t3 = time.perf_counter()
    X = bm.make_data(1000, 1)
    loss.value_and_grad(bm.theta, X)
    t4 = time.perf_counter()
    loss.value_and_grad(bm.theta, X)
    t5 = time.perf_counter()
    return {
        "import_s": t1 - t0,
        "model_s": t2 - t1,
        "load_s": t3 - t2,
        "first_call_s": t4 - t3,
        "second_call_s": t5 - t4,
        "total_s": t4 - t2,
        "cache_events": [e.kind for e in cache.events()],
        "key": loss.key,
    }


def memory(name: str, n: int) -> dict:
    import tracemalloc

    from benchmarks.models import make_model

    bm = make_model(name)
    loss = bm.model.compile()
    small = bm.make_data(1000, 1)
    loss.value_and_grad(bm.theta, small)  # compile / load everything before measuring
    X = bm.make_data(n, 2)
    gc.collect()
    out: dict = {"n": n, "d": bm.d, "P": bm.P, "input_bytes": X.nbytes}

    def measure(fn) -> dict:
        gc.collect()
        exact = _reset_peak()
        rss_before = _status_kib("VmRSS")
        maxrss_before = _maxrss_kib()
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if exact and rss_before is not None:
            extra = (_status_kib("VmHWM") - rss_before) * 1024
            method = "VmHWM after clear_refs"
        else:
            extra = max(0, _maxrss_kib() - max(maxrss_before, rss_before or 0)) * 1024
            method = "ru_maxrss (process peak; a compile-time peak above it would hide the call)"
        return {"extra_bytes": extra, "method": method, "tracemalloc_peak_bytes": traced_peak, "seconds": dt}

    out["value_and_grad"] = measure(lambda: loss.value_and_grad(bm.theta, X))
    module = getattr(loss, "_module", None)
    if module is not None and hasattr(loss, "_inputs") and hasattr(loss, "_reduced"):
        th, data = loss._inputs(bm.theta, X)  # validated once, outside the measurement
        out["kernel_only"] = measure(lambda: module.value_and_grad(th, loss._reduced(data)))
    out["rss_with_input_bytes"] = (_status_kib("VmRSS") or 0) * 1024
    return out


def dtypes(name: str, n: int, repeat: int) -> dict:
    """float64 and float32 value_and_grad calls interleaved (benchmarks.run.dtype_timing), in a process that
    has not imported JAX: XLA's worker threads, once started, stay alive and compete with the short calls of
    this 2-core timing (the runner's own process has run JAX's baselines before it gets here)."""
    import numpy as np

    from benchmarks.models import make_model
    from benchmarks.run import dtype_timing, rel_diff

    bm = make_model(name)
    loss64 = bm.model.compile()
    loss32 = bm.model.compile(dtype=np.float32)
    X = bm.make_data(n, 2)  # the runner's data for this N (same seed)
    X32 = X.astype(np.float32)
    v64 = loss64.value_and_grad(bm.theta, X)
    v32 = loss32.value_and_grad(bm.theta, X32)
    out = dtype_timing(
        {
            "float64": lambda: loss64.value_and_grad(bm.theta, X),
            "float32": lambda: loss32.value_and_grad(bm.theta, X32),
        },
        repeat=repeat,
    )
    out["float32_vs_float64"] = rel_diff(v32, v64)
    out["process"] = "child process without JAX (benchmarks/subproc.py dtypes)"
    out["jax_imported"] = "jax" in sys.modules
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "warm":
        result = warm(argv[1])
    elif len(argv) >= 3 and argv[0] == "memory":
        result = memory(argv[1], int(float(argv[2])))
    elif len(argv) >= 4 and argv[0] == "dtypes":
        result = dtypes(argv[1], int(float(argv[2])), int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
