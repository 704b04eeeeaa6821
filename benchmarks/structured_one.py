"""One repository's structured ICA value_and_grad, timed in its own process, to compare two checkouts:

    for r in /path/to/main /path/to/branch; do
        PYTHONPATH=$r SYMSM_CACHE_DIR=/tmp/cache-$(basename $r) python benchmarks/structured_one.py $r 32 1000000
    done

`model.compile(path="structured")` of ICA log cosh (benchmarks/structured.py's model and θ), one warm-up call,
then the median wall and process CPU time of `--repeat` calls and the load average (numbers in
benchmarks/STRUCTURED_SPEED.md)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the checkout whose symsm and benchmarks/structured.py are timed")
    parser.add_argument("d", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    root = os.path.abspath(args.root)
    sys.path.insert(0, root)
    import symsm

    if not os.path.abspath(symsm.__file__).startswith(root):
        raise SystemExit(f"symsm imported from {symsm.__file__}, not {root}: set PYTHONPATH={root}")
    from benchmarks.structured import ica_model, ica_theta

    model, theta = ica_model(args.d), ica_theta(args.d)
    X = np.random.default_rng(1).standard_normal((args.n, args.d))
    loss = model.compile(path="structured")
    loss.value_and_grad(theta, X)
    wall, cpu = [], []
    for _ in range(args.repeat):
        c, t = time.process_time(), time.perf_counter()
        loss.value_and_grad(theta, X)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(
        f"{root} ICA d = {args.d}, N = {args.n}: wall {1e3 * statistics.median(wall):.1f} ms, "
        f"CPU {1e3 * statistics.median(cpu):.1f} ms, load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
