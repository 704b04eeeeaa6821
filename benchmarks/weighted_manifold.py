"""What observation weights cost in the closed form of a model on the simplex (the row-weighted quadratic form).

    python -m benchmarks.weighted_manifold [--n 20000] [--repeat 7]

The PPI model of tests/data/microbiome/ppi_alr_5d.toml (alr, d = 5, P = 14: small enough for the reduction
kernel `quadratic_sums`, which the weighted form runs one row at a time) on Dirichlet(1) compositions. The
unweighted quadratic form (one reduction) and the weighted one (uniform weights) are called in turn, --repeat
rounds after a warm-up each, so a change in the machine's load hits both alike; the table gives median wall and
process CPU times and their ratio, with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    from symsm.model.modelfile import load_model
    from symsm.runtime.accumulate import quadratic_form

    root = Path(__file__).resolve().parent.parent
    loss = load_model(root / "tests" / "data" / "microbiome" / "ppi_alr_5d.toml").compile()
    rng = np.random.default_rng(0)
    U = rng.dirichlet(np.ones(5), size=args.n)
    w = rng.uniform(size=args.n)
    runs = {"unweighted": lambda: quadratic_form(loss, U), "row-weighted": lambda: quadratic_form(loss, U, w)}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for f in runs.values():
        f()
    load0 = os.getloadavg()[0]
    for _ in range(args.repeat):
        for name, f in runs.items():
            t, c = time.perf_counter(), time.process_time()
            f()
            times[name].append((time.perf_counter() - t, time.process_time() - c))
    load1 = os.getloadavg()[0]
    base = [statistics.median(x[i] for x in times["unweighted"]) for i in (0, 1)]
    print(f"N = {args.n}, P = {loss.model.n_params}, {args.repeat} rounds; load average {load0:.2f} → {load1:.2f}")
    print("| quadratic form | wall (ms, median) | CPU (ms, median) | wall / unweighted | CPU / unweighted |")
    print("|---|---:|---:|---:|---:|")
    for name, xs in times.items():
        wall, cpu = (statistics.median(x[i] for x in xs) for i in (0, 1))
        print(f"| {name} | {1e3 * wall:.2f} | {1e3 * cpu:.2f} | {wall / base[0]:.0f} | {cpu / base[1]:.0f} |")


if __name__ == "__main__":
    main()
