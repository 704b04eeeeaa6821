"""Running a kernel's blocks of rows on several threads.

The generated CPU kernels are machine code called through ctypes (which releases the GIL) over a range of
blocks; this module calls them from a small pool of Python threads, one contiguous range of blocks per
thread. The split into blocks depends only on the number of rows and the blocks' partial sums are combined
in a fixed order, so results do not depend on the number of threads. (numba's `prange` would do the
threading too, but its parallel lowering compiles the kernel body into several linked modules that LLVM
optimises again each time, which quadruples the compile time of large kernels.)

The number of threads follows numba's (`numba.set_num_threads`, `NUMBA_NUM_THREADS`) when numba is
imported; otherwise `NUMBA_NUM_THREADS` or the CPUs this process may run on (numba's default), so that a
process that only loads cached kernels never pays for importing numba.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from typing import Any

__all__ = ["blas_one_thread", "run_blocks", "run_chunks", "threads"]

#: run_chunks hands out the chunks one at a time to whichever thread is free (True), or splits them into one
#: contiguous range per thread as run_blocks does (False: the benchmarks' A/B switch). Results do not depend on it.
DYNAMIC_CHUNKS = True

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()


def threads() -> int:
    """Threads used for one kernel call: numba's current thread count (see the module docstring)."""
    numba = sys.modules.get("numba")
    if numba is not None and hasattr(numba, "get_num_threads"):
        return max(1, int(numba.get_num_threads()))
    return _default_threads()


@cache
def _default_threads() -> int:
    configured = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="symsm")
            _pool_size = workers
        return _pool


def run_blocks(fn: Callable[..., Any], n_blocks: int, *args: Any) -> None:
    """Call fn(*args, lo, hi) for contiguous ranges [lo, hi) covering range(n_blocks), one per thread."""
    t = min(threads(), n_blocks)
    if t <= 1:
        fn(*args, 0, n_blocks)
        return
    bounds = [k * n_blocks // t for k in range(t + 1)]
    pool = _executor(t - 1)
    futures = [pool.submit(fn, *args, bounds[k], bounds[k + 1]) for k in range(1, t)]
    fn(*args, bounds[0], bounds[1])  # the calling thread takes the first range
    for f in futures:
        f.result()


def run_chunks(fn: Callable[[int, int], Any], n_chunks: int) -> None:
    """Call fn(slot, c) once for every chunk c in range(n_chunks), on up to `threads()` threads; `slot` (0 ≤ slot
    < the threads used) names the calling thread, for per-thread scratch memory. With `DYNAMIC_CHUNKS` each thread
    takes the next chunk nobody has taken yet, so a thread that gets less of a core (another process on it, a
    slower chunk) does fewer chunks instead of holding up the call; the caller must not depend on which thread
    runs a chunk (each chunk writing its own partial results does not)."""
    t = min(threads(), n_chunks)
    if t <= 1:
        for c in range(n_chunks):
            fn(0, c)
        return
    dynamic = DYNAMIC_CHUNKS
    if dynamic:
        taken = itertools.count()  # next() on it is atomic under the GIL

        def work(slot: int) -> None:
            c = next(taken)
            while c < n_chunks:
                fn(slot, c)
                c = next(taken)

    else:
        bounds = [k * n_chunks // t for k in range(t + 1)]

        def work(slot: int) -> None:
            for c in range(bounds[slot], bounds[slot + 1]):
                fn(slot, c)

    pool = _executor(t - 1)
    futures = [pool.submit(work, slot) for slot in range(1, t)]
    try:
        work(0)  # the calling thread is slot 0
    finally:
        for f in futures:  # every thread done before the caller's buffers are released, even on an error
            if not (dynamic and f.cancel()):  # a worker still queued behind another call's would find no chunk
                f.exception()
    for f in futures:
        if not f.cancelled():
            f.result()


# (prefix, suffix) of OpenBLAS's thread-count functions: numpy's wheels (scipy-openblas, 64-bit integers), and
# builds against a system OpenBLAS
_OPENBLAS_NAMES = (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", ""))
_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list[int] = []


@cache
def _openblas() -> tuple[tuple[Any, Any], ...]:
    """(get, set) of the thread count of every OpenBLAS loaded in this process (numpy's among them; none where
    numpy uses another BLAS or the process's maps cannot be read)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return ()
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _OPENBLAS_NAMES:
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                found.append((get, put))
                break
    return tuple(found)


@contextmanager
def blas_one_thread() -> Iterator[None]:
    """numpy's matrix products on one thread inside the block (OpenBLAS; other BLAS libraries unchanged).

    For the small θ-level products around the block kernels (d × d at d ≤ a few hundred): OpenBLAS runs a
    128² product on its thread pool, whose threads then spin, waiting for more work, for ~0.1 s, taking CPU time
    (and a core) from the block kernel's threads that run next. Nested and concurrent uses restore the thread
    count when the last one leaves; numpy called from other threads meanwhile runs on one thread too."""
    global _blas_depth
    libs = _openblas()
    if not libs:
        yield
        return
    with _blas_lock:
        if _blas_depth == 0:
            _blas_saved[:] = [get() for get, _ in libs]
            for _, put in libs:
                put(1)
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for (_, put), n in zip(libs, _blas_saved, strict=True):
                    put(n)
