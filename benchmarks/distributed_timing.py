"""One distributed pass of value_and_grad on dask against the in-memory numba call, and where the time goes.

    python -m benchmarks.distributed_timing [--model ica8] [--n 10000000] [--chunk-rows 1250000]
                                            [--workers 1,2] [--repeat 5]

The data (N × d float64, from the model's own generator) are made once in this process; the in-memory call
is `loss.value_and_grad(θ, X)` on them with numba's threads (all cores). For each cluster size a
`LocalCluster(n_workers=w, threads_per_worker=1, processes=True)` on 127.0.0.1 receives the same array,
chunked by rows and persisted in the workers' memory (so a pass reads no disk and nothing is copied but the
per-chunk sums), and `loss.value_and_grad(θ, X_dask)` is timed after one warm-up pass (workers load the
shipped kernels then). Reported per configuration: median and min over `--repeat` passes, the agreement with
the in-memory result, and the split of a pass into the kernels' own time on the workers (the task stream's
compute intervals; the busiest worker sets the pace) and the rest — scheduling, messages, the client's
graph construction and combination — next to the time of a pass of trivial tasks (one per persisted chunk,
returning its row count: dask's own cost of a pass). The machine's load (os.getloadavg) is printed with every
number: on a shared machine the timings are only as quiet as it is.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.models import make_model


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min, {os.cpu_count()} CPUs)"


def _times(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _describe(label: str, times: list[float]) -> str:
    return f"{label:<34} median {statistics.median(times):8.3f} s   min {min(times):8.3f} s   ({_load()})"


def _row_count(block: np.ndarray) -> np.ndarray:
    """A chunk task that does nothing but say how many rows it saw (the cost of a pass without kernels)."""
    return np.array([[block.shape[0]]], dtype=np.float64)


def _on_cluster(w: int, loss, theta: np.ndarray, X: np.ndarray, ref: tuple, args: argparse.Namespace) -> None:
    """Time passes on a LocalCluster of `w` single-threaded worker processes holding X in memory."""
    import dask.array as da
    import distributed

    ref_value, ref_grad = ref
    t = time.perf_counter()
    with (
        distributed.LocalCluster(
            n_workers=w, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        started = time.perf_counter() - t
        t = time.perf_counter()
        with warnings.catch_warnings():  # "Sending large graph": the data go to the workers once, on purpose
            warnings.simplefilter("ignore", UserWarning)
            Xd = da.from_array(X, chunks=(args.chunk_rows, -1)).persist()
        distributed.wait(Xd)
        print(
            f"\n{w} worker(s): cluster up in {started:.1f} s, data persisted on the workers in "
            f"{time.perf_counter() - t:.1f} s"
        )
        t = time.perf_counter()
        value, grad = loss.value_and_grad(theta, Xd)  # warm: workers load the shipped kernels
        print(f"  first pass (workers import symsm and load the kernels): {time.perf_counter() - t:.2f} s")
        rel = max(
            abs(value - ref_value) / abs(ref_value),
            float(np.max(np.abs(grad - ref_grad)) / np.max(np.abs(ref_grad))),
        )
        print(f"  agreement with the in-memory result: {rel:.1e} (largest relative difference)")
        with distributed.get_task_stream(client=client) as ts:
            times = _times(lambda: loss.value_and_grad(theta, Xd), args.repeat)
        print(_describe(f"  distributed pass, {w} worker(s)", times))
        busy: dict[str, float] = {}
        for task in ts.data:
            if "_chunk_task" not in str(task["key"]):
                continue
            for ss in task["startstops"]:
                if ss["action"] == "compute":
                    busy[task["worker"]] = busy.get(task["worker"], 0.0) + ss["stop"] - ss["start"]
        kernel = max(busy.values()) / args.repeat if busy else float("nan")
        per_chunk = sum(busy.values()) / (args.repeat * Xd.numblocks[0]) if busy else float("nan")
        print(f"  one chunk task ({args.chunk_rows} rows) computes in {per_chunk:.3f} s on average")
        mean = statistics.fmean(times)  # the task stream covers all passes: compare means with means
        print(
            f"  mean pass {mean:.3f} s = kernels on the busiest worker {kernel:.3f} s + the rest (scheduling, "
            f"messages, client) {mean - kernel:.3f} s ({100 * (mean - kernel) / mean:.0f} %)"
        )
        empty = _times(
            lambda: Xd.map_blocks(_row_count, chunks=((1,) * Xd.numblocks[0], (1,)), dtype=float).compute(),
            args.repeat,
        )
        print(_describe("  a pass of trivial chunk tasks", empty))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ica8", help="benchmark model (gauss<d>, ica<d>, student<d>, poly)")
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--chunk-rows", type=int, default=1_250_000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import dask
    import distributed
    import numba

    import symsm

    n = int(args.n)
    bench = make_model(args.model)
    loss = bench.model.compile()
    print(
        f"symsm {symsm.__version__}, dask {dask.__version__}, distributed {distributed.__version__}, "
        f"numba {numba.__version__}, Python {platform.python_version()}, {platform.machine()}"
    )
    print(
        f"model {bench.name} ({bench.description}), d = {bench.d}, P = {bench.P}, N = {n:.3g}, "
        f"chunks of {args.chunk_rows} rows ({-(-n // args.chunk_rows)} chunks)"
    )
    t = time.perf_counter()
    X = bench.make_data(n, args.seed)
    print(f"data: {X.nbytes / 2**20:.0f} MiB made in {time.perf_counter() - t:.1f} s; {_load()}")
    theta = bench.theta

    loss.value_and_grad(theta, X)  # warm: compile or load the kernels
    ref_value, ref_grad = loss.value_and_grad(theta, X)
    threads = numba.get_num_threads()
    print(_describe(f"in memory, numba {threads} threads", _times(lambda: loss.value_and_grad(theta, X), args.repeat)))
    numba.set_num_threads(1)
    one_thread = _times(lambda: loss.value_and_grad(theta, X), max(1, args.repeat // 2))
    numba.set_num_threads(threads)
    print(_describe("in memory, numba 1 thread", one_thread))

    for w in [int(s) for s in args.workers.split(",") if s.strip()]:
        _on_cluster(w, loss, theta, X, (ref_value, ref_grad), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
