"""The roofline: what the machine can do, measured in the same run, and what a generated kernel asks of it.

* Memory: a numba `prange` sum over a large float64 array (read once, nothing written) gives the read
  bandwidth; the bound for a model is N·d·8 bytes at that bandwidth (every kernel reads X at least once).
* Compute: a micro-benchmark of independent vector FMA chains (LLVM IR compiled by llvmlite, run from one
  thread per numba thread; ctypes releases the GIL) gives the peak double-precision flop rate, counting an
  FMA as 2 flops. The bound for a model is N · (flops per row) at that rate.
* Flops per row are counted from the instruction tables of the generated module (numba backend): every
  add, sub, mul, div and sqrt of the row body counts 1 (a mul and an add that LLVM fuses into an FMA still
  count 2); neg and copy count 0; each per-row sum the block accumulates counts 1 (its add), each product
  accumulated by the register tiles counts 2 (its FMA); an elementary function that symsm.backends.llvm.vecmath
  vectorises counts the flops of its implementation (fadd/fsub/fmul/fdiv 1, llvm.fma 2, integer bit
  operations, selects, min/max and comparisons 0); any other call counts 0 and is listed as a scalar call.
  Divisions are also listed on their own: their throughput is far below the peak rate, so a body with many
  divisions sits above its flop bound.
"""

from __future__ import annotations

import ctypes
import re
import sys
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = ["count_kernel_ops", "fma_peak", "model_ops_per_row", "read_bandwidth", "read_once"]

_FLOP = {"add": 1, "sub": 1, "mul": 1, "div": 1, "sqrt": 1, "neg": 0, "copy": 0}


@njit(parallel=True, fastmath=True, cache=False)
def _sum_blocks(flat: np.ndarray, n_blocks: int) -> float:
    n = flat.size
    parts = np.zeros(n_blocks)
    for b in prange(n_blocks):
        s = 0.0
        for i in range(b * n // n_blocks, (b + 1) * n // n_blocks):
            s += flat[i]
        parts[b] = s
    return parts.sum()


def read_once(X: np.ndarray) -> float:
    """Sum every element of X once (the read kernel)."""
    return _sum_blocks(X.reshape(-1), 8 * get_num_threads())


def read_bandwidth(n_bytes: int, repeat: int = 7) -> dict[str, float]:
    """Median read bandwidth (bytes/s) of the read kernel over a fresh array of `n_bytes`."""
    a = np.random.default_rng(0).random(n_bytes // 8)
    read_once(a)  # compile
    read_once(a)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        read_once(a)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"bytes": float(a.nbytes), "median_s": med, "best_s": float(min(times)), "bytes_per_s": a.nbytes / med}


# ---------------------------------------------------------------------- FMA peak (llvmlite)

_N_ACC = 12  # independent chains: more than FMA latency × FMA ports on current x86 cores


def _fma_ir(width: int) -> str:
    vt = f"<{width} x double>"
    init = ", ".join(["double 1.0"] * width)
    mul = ", ".join(["double 0.9999999"] * width)
    add = ", ".join(["double 1.0e-7"] * width)
    lines = [
        f"declare {vt} @llvm.fma.v{width}f64({vt}, {vt}, {vt})",
        "define double @fma_loop(i64 %n) {",
        "entry:",
        "  br label %loop",
        "loop:",
        "  %i = phi i64 [0, %entry], [%inext, %loop]",
    ]
    for k in range(_N_ACC):
        lines.append(f"  %a{k} = phi {vt} [<{init}>, %entry], [%b{k}, %loop]")
    for k in range(_N_ACC):
        lines.append(f"  %b{k} = call {vt} @llvm.fma.v{width}f64({vt} %a{k}, {vt} <{mul}>, {vt} <{add}>)")
    lines += [
        "  %inext = add i64 %i, 1",
        "  %c = icmp slt i64 %inext, %n",
        "  br i1 %c, label %loop, label %exit",
        "exit:",
        f"  %s0 = fadd {vt} %b0, %b1",
    ]
    for k in range(2, _N_ACC):
        lines.append(f"  %s{k - 1} = fadd {vt} %s{k - 2}, %b{k}")
    lines += [f"  %r = extractelement {vt} %s{_N_ACC - 2}, i32 0", "  ret double %r", "}"]
    return "\n".join(lines)


_engines: list[Any] = []  # keep the compiled code alive


def _fma_function(width: int) -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    mod = llvm.parse_assembly(_fma_ir(width))
    mod.verify()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=2
    )
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    _engines.append(engine)
    return ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_int64)(engine.get_function_address("fma_loop"))


def fma_peak(threads: int | None = None, seconds: float = 0.3, repeat: int = 5) -> dict[str, Any]:
    """Peak float64 flop rate (FMA = 2 flops) over `threads` threads, for 4- and 8-lane vectors; best width."""
    threads = threads or get_num_threads()
    out: dict[str, Any] = {"threads": threads, "by_width": {}}
    for width in (4, 8):
        fn = _fma_function(width)
        n = 1000
        while True:  # calibrate the loop count to ~`seconds` on one thread
            t = time.perf_counter()
            fn(n)
            dt = time.perf_counter() - t
            if dt > seconds / 4:
                break
            n *= 4
        n = int(n * seconds / dt)
        rates = []
        for _ in range(repeat):
            pool = [threading.Thread(target=fn, args=(n,)) for _ in range(threads)]
            t = time.perf_counter()
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            dt = time.perf_counter() - t
            rates.append(threads * n * _N_ACC * width * 2 / dt)
        out["by_width"][width] = float(np.median(rates))
    best = max(out["by_width"], key=out["by_width"].get)
    out["width"] = best
    out["flops_per_s"] = out["by_width"][best]
    return out


# ---------------------------------------------------------------------- operation counts


def _vecmath_flops() -> dict[str, int]:
    """Flops per lane of each vectorised elementary function, counted in its LLVM IR."""
    try:
        from llvmlite import ir

        from symsm.backends.llvm.vecmath import VECTOR_FUNCTIONS, vector_function
    except ImportError:
        return {}
    counts = {}
    for name in sorted(VECTOR_FUNCTIONS):
        module = ir.Module()
        vector_function(module, name, 4)
        text = str(module)
        n = len(re.findall(r"= (?:fadd|fsub|fmul|fdiv)\b", text))
        n += 2 * len(re.findall(r'call [^@]*@"?llvm\.fma\.', text))
        n += len(re.findall(r'call [^@]*@"?llvm\.sqrt\.', text))
        counts[name] = n
    return counts


def count_kernel_ops(module: Any, kernel: str = "value_and_grad") -> dict[str, Any] | None:
    """Per-row operation counts of one reducing kernel of a generated numba module, or None if the module
    does not have the expected tables (another backend or layout)."""
    upper = kernel.upper()
    body = getattr(module, f"{upper}_BODY", None)
    if body is None:
        return None
    if isinstance(body, str):  # tables are kept as text in generated modules
        from symsm.backends.llvm.native import parse_table

        body = parse_table(body)
    products = getattr(module, f"{upper}_PRODUCTS", ())
    ops: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    sums = 0
    for ins in body:
        dst, op, *args = ins
        if op == "call":
            calls[str(args[0])] += 1
        else:
            ops[op] += 1
        if re.fullmatch(r"s\d+", str(dst)):
            sums += 1
    vec = _vecmath_flops()
    flops = sum(_FLOP.get(op, 0) * k for op, k in ops.items())
    call_flops = sum(vec.get(fn, 0) * k for fn, k in calls.items())
    scalar_calls = {fn: k for fn, k in calls.items() if fn not in vec}
    total = flops + call_flops + sums + 2 * len(products)
    return {
        "kernel": kernel,
        "instructions": len(body),
        "ops": dict(ops),
        "calls": dict(calls),
        "sums": sums,
        "products": len(products),
        "arith_flops": flops,
        "function_flops": call_flops,
        "vecmath_flops_per_call": {fn: vec[fn] for fn in calls if fn in vec},
        "scalar_calls": scalar_calls,
        "divisions": ops.get("div", 0),
        "flops_per_row": total,
    }


def _generated_module(loss: Any) -> Any:
    module = getattr(loss, "_module", None)
    if module is None:
        module = sys.modules.get(f"symsm_generated_{loss.key[:32]}")
    return module


def model_ops_per_row(loss: Any, n: int) -> dict[str, Any] | None:
    """Per-row counts for `loss.value_and_grad` on n rows: the model's kernel, or, when the integrand is
    quadratic in x (symsm evaluates it at moment matching points), the moments kernel that reads the rows."""
    module = _generated_module(loss)
    if module is None:
        return None
    d = loss.model.dim
    if getattr(module, "QUADRATIC_IN_DATA", False) and n > 2 * d:
        try:
            from symsm.runtime.moments import _module as moments_module

            counts = count_kernel_ops(moments_module(d, np.dtype(loss.dtype)), "moments")
        except (ImportError, AttributeError):
            counts = None
        if counts is not None:
            counts["path"] = "moments (integrand quadratic in x: one pass of moments, then the kernel on 2d points)"
        return counts
    counts = count_kernel_ops(module, "value_and_grad")
    if counts is not None:
        counts["path"] = "value_and_grad kernel"
    return counts
