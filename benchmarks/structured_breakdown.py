"""Where one thread's time goes in the ICA value_and_grad block kernel: ``python -m benchmarks.structured_breakdown
--d 32 --n 200000`` (the breakdown tables of benchmarks/STRUCTURED_SPEED.md).

The block program's ops are added one group at a time, each variant compiled as its own block kernel; an op whose
output nothing reads any more would be dropped by LLVM, so each variant ends with a row sum + sum ("sink") of the
arrays the dropped ops would have read (a few vector adds a row). Besides: chains of 1–4 plain row products
X·Wᵀ, ·W, ·Wᵀ, ·Wᵀ (no tables), a streaming read of X with numpy, and the FMA peak (`blocks.fma_peak`).
Process CPU time of one thread, best and median of `--repeat` interleaved rounds."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from typing import Any

os.environ["NUMBA_NUM_THREADS"] = "1"  # before symsm's thread count is read: one thread

import numpy as np

from .structured import ica_model, ica_theta

# cumulative variants: (label, indices of the ICA value_and_grad program's LLVM ops kept, arrays sunk), of the
# program as lowered (build_block_programs(..., rewrite=False)); "rewritten program": the program as symsm runs it
# ops: 0 r1 = X·Wᵀ, 1 table (tanh) → e0 e1 f3, 2 r3 = e0·W, 3 rowsum r4, 4 e4 = r3², 5 rowsum r5, 6 r6 = r3·Wᵀ,
# 7 e5 (row scalars), 8 table → e6 e7, 9 acc_sum, 10 acc_colsum e6, 11 acc_outer e0 r3, 12 acc_outer e7 X,
# 13 the column sums of X (the kernel's test of X)
STEPS: list[tuple[str, tuple[int, ...], tuple[str, ...]]] = [
    ("copy of X into the panels", (), ("X",)),
    ("+ column sums of X", (13,), ("X",)),
    ("+ r1 = X·Wᵀ", (0, 13), ("r1",)),
    ("+ tanh table", (0, 1, 13), ("e0", "e1", "f3")),
    ("+ r3 = e0·W", (0, 1, 2, 13), ("e1", "f3", "r3")),
    ("+ row sums, r3²", (0, 1, 2, 3, 4, 5, 13), ("f3", "r3", "r4", "r5")),
    ("+ r6 = r3·Wᵀ", (0, 1, 2, 3, 4, 5, 6, 13), ("f3", "r3", "r4", "r5", "r6")),
    ("+ the last tables", (*range(9), 13), ("e5", "e6", "e7", "e0", "r3")),
    ("+ acc_sum, acc_colsum", (*range(11), 13), ("e7", "e0", "r3")),
    ("+ acc_outer e0ᵀr3", (*range(12), 13), ("e7",)),
    ("full program", tuple(range(14)), ()),
]


def _sink(names: tuple[str, ...]) -> tuple[Any, ...]:
    from symsm.backends.llvm import blocks

    ops: list[Any] = []
    for k, name in enumerate(names):
        ops += [blocks.RowSum(f"__sink_row{k}", name), blocks.AccSum(f"__sink{k}", f"__sink_row{k}")]
    return tuple(ops)


def kernels(d: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from symsm.backends.llvm import blocks
    from symsm.backends.llvm.structured import StructuredKernel
    from symsm.derive.derivation import Derivation
    from symsm.ir.blocks import build_block_programs

    model = ica_model(d)
    der = Derivation(model, path="structured").structured
    text = build_block_programs(der, model, rewrite=False)["value_and_grad"].text()
    sk = StructuredKernel(text, np.float64)
    prog = sk.llvm_program
    rewritten = StructuredKernel(build_block_programs(der, model)["value_and_grad"].text(), np.float64)
    if len(prog.ops) != 14:
        raise SystemExit(f"the ICA program has {len(prog.ops)} ops, not the 14 STEPS names: update STEPS")
    env = sk.prologue(np.asarray(ica_theta(d), dtype=np.float64))
    params = {p.name: env[p.name] for p in prog.params}
    env = rewritten.prologue(np.asarray(ica_theta(d), dtype=np.float64))
    params.update({p.name: env[p.name] for p in rewritten.llvm_program.params})
    out: dict[str, Any] = {}
    for label, keep, sunk in STEPS:
        ops = tuple(op for i, op in enumerate(prog.ops) if i in keep) + _sink(sunk)
        out[label] = blocks.BlockKernel(replace(prog, ops=ops), "float64")
    out["rewritten program"] = rewritten.native()  # symsm/ir/block_passes.py: 7d² + d flops a row in products
    full_gram = tuple(
        blocks.AccOuter(op.acc, op.a, op.a) if isinstance(op, blocks.AccGram) else op
        for op in rewritten.llvm_program.ops
    )  # every tile of the Gram matrix, as acc_outer e0ᵀe0 (8d²)
    out["rewritten, full Gram tiles"] = blocks.BlockKernel(replace(rewritten.llvm_program, ops=full_gram), "float64")
    W = blocks.MatMul
    chain = [W("q1", "X", "W", True), W("q2", "q1", "W", False), W("q3", "q2", "W", True), W("q4", "q3", "W", True)]
    for k in range(1, 5):
        ops = (*chain[:k], *_sink((f"q{k}",)))
        out[f"{k} plain product(s)"] = blocks.BlockKernel(replace(prog, ops=ops), "float64")
    return out, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    from symsm.backends.llvm import blocks
    from symsm.derive.derivation import Derivation
    from symsm.ir.blocks import build_block_programs, flops_per_row

    d, n = args.d, args.n
    ks, params = kernels(d)
    X = np.random.default_rng(0).standard_normal((n, d))
    lay = ks["full program"].layout
    print(f"ICA d = {d}, N = {n}, one thread; lanes {lay.width}, tile {lay.mr} × {lay.nv}, panel {lay.panel}, "
          f"block_rows {lay.block_rows}; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in ks}
    times["numpy streaming read of X"] = []
    flat = X.reshape(-1, 512)
    for _ in range(args.repeat):
        for label, kern in ks.items():
            t = time.process_time()
            kern(X, params)
            times[label].append(time.process_time() - t)
        t = time.process_time()
        np.add.reduce(flat, axis=0)
        times["numpy streaming read of X"].append(time.process_time() - t)
    peak = blocks.fma_peak("float64")
    t = time.process_time()
    gflops = peak() / (time.process_time() - t) / 1e9
    product = 2.0 * d * d * n / gflops / 1e6  # ms of one row product at the peak
    own = flops_per_row(
        build_block_programs(Derivation(ica_model(d), path="structured").structured, ica_model(d))["value_and_grad"]
    )["matmul"] / (d * d)
    print(f"FMA peak {gflops:.1f} GFLOP/s: one row product (2d² a row) {product:.2f} ms, the roofline's 10d² "
          f"{5 * product:.2f} ms, the rewritten program's {own:.2f}d² {own / 2 * product:.2f} ms")  # fmt: skip
    prev = 0.0
    for label, ts in times.items():
        best = min(ts)
        step = ""
        if label in dict((s[0], None) for s in STEPS):  # cumulative: the step's own cost
            step, prev = f"  step {1e3 * (best - prev):+7.2f}", best
        print(f"{label:28s} best {1e3 * best:7.2f}  median {1e3 * statistics.median(ts):7.2f} ms{step}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
