"""Machine code for the CPU kernels: LLVM IR built from instruction tables, compiled by llvmlite, cached as an
object file next to the generated module and called through ctypes.

A generated CPU module (templates/llvm.py.j2) holds its kernels as instruction tables and creates one
`SumKernel` or `RowKernel` per kernel. On the kernel's first call the IR is built (symsm/backends/llvm/kernels.py),
compiled and written to `<module>.<kernel>.<target>.o`; later processes load that file (a few milliseconds)
instead of compiling again. Nothing here goes through numba: its front end costs ~1 ms per Python operation,
its O3 pipeline re-optimises code that is already in SSA form with common subexpressions shared (for
ICA d = 32 it spent ~25 s of a 28 s first call there), and a new process pays ~1 s to set up numba's
lowering registries before it can load even a cached function.

The pass pipeline is short on purpose (measured on the instruction tables, where every operation is
already needed once): inline the vector math functions, SROA (accumulators into registers), instruction
combining and CFG simplification; then code generation at -O1 (full instruction selection and the greedy
register allocator). Kernels beyond `HUGE_KERNEL` instructions per row are generated at -O0 (fast
instruction selection and register allocation), which keeps them compilable at all at the cost of speed.

Object files carry a header with the sha256 of their bytes, the kernel they hold and the target they were
built for; a file that does not match is recompiled, never loaded. They live in symsm's private cache
directory (symsm/core/cache.py) and are written atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ...core import cache as symsm_cache
from ...core.arrays import first_non_finite
from ...core.errors import NonFiniteDataError
from ...core.threads import run_blocks
from .kernels import buffer_size

__all__ = [
    "HUGE_KERNEL",
    "RowKernel",
    "SumKernel",
    "codegen_opt",
    "compile_module",
    "optimised_module",
    "parse_inputs",
    "parse_table",
    "target_description",
]

CODEGEN_OPT = 1
# Table instructions per row beyond which code generation runs at -O0. -O1 costs ~7.6 s at 8 448 (ICA d = 32)
# and grows like ops^1.9 (~90 s at 30 000); -O0 is ~3× faster to compile and ~2× slower to run.
HUGE_KERNEL = 30_000
OBJECT_MAGIC = b"symsm-object-v1"
_lock = threading.RLock()
_loaded: dict[str, tuple[Any, dict[str, int]]] = {}  # object sha256 → (execution engine, symbol addresses)


@cache
def _llvm() -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    libm = ctypes.util.find_library("m")
    if libm:  # scalar calls (sin, erf, pow, ...) resolve against the C library when an object is loaded
        llvm.load_library_permanently(libm)
    return llvm


def _new_target_machine(opt: int) -> Any:
    llvm = _llvm()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=opt, codemodel="jitdefault"
    )


@cache
def _target_machine(opt: int) -> Any:
    """The target machine that compiles kernels (one per level, kept; never handed to an execution engine)."""
    return _new_target_machine(opt)


@cache
def target_description() -> str:
    """What the machine code depends on besides the IR: LLVM, the host CPU and its features, the pipeline."""
    import llvmlite

    llvm = _llvm()
    return " ".join(
        [
            f"llvmlite={llvmlite.__version__}",
            "llvm=" + ".".join(map(str, llvm.llvm_version_info)),
            llvm.get_process_triple(),
            llvm.get_host_cpu_name(),
            llvm.get_host_cpu_features().flatten(),
            "passes=always-inline,sroa,instcombine,simplifycfg",
        ]
    )


@cache
def _has_avx512vl() -> bool:
    """Whether the host has AVX-512VL: 32 vector registers for 256-bit code (the object files' names include
    the host's features, so a kernel built with larger tiles is never loaded elsewhere)."""
    return "+avx512vl" in _llvm().get_host_cpu_features().flatten().split(",")


def codegen_opt(ops: int) -> int:
    """The code generator's optimisation level for a kernel of `ops` table instructions per row."""
    return 0 if ops > HUGE_KERNEL else CODEGEN_OPT


def compile_module(module: Any, *, opt: int = CODEGEN_OPT, narrow_vectors: bool = True) -> bytes:
    """Object code for an llvmlite `ir.Module` of kernels (see the module docstring for the pipeline).
    `narrow_vectors`: compile for 256-bit registers (`_VECTOR_WIDTH`); False for kernels that choose their
    vector width themselves (the block kernels' register tiles, symsm/backends/llvm/blocks.py)."""
    return _target_machine(opt).emit_object(optimised_module(module, opt=opt, narrow_vectors=narrow_vectors))


def optimised_module(module: Any, *, opt: int = CODEGEN_OPT, narrow_vectors: bool = True) -> Any:
    """An llvmlite `ir.Module` parsed and run through the pass pipeline (llvmlite.binding's module; its
    target machine's `emit_object` or `emit_assembly` gives the code)."""
    llvm = _llvm()
    module.triple = llvm.get_process_triple()
    text = str(module)
    parsed = llvm.parse_assembly(_with_vector_width(text) if narrow_vectors else text)
    parsed.verify()
    machine = _target_machine(opt)
    builder = llvm.create_pass_builder(machine, llvm.PipelineTuningOptions(speed_level=0))
    inliner = llvm.create_new_module_pass_manager()
    inliner.add_always_inliner_pass()
    inliner.run(parsed, builder)
    cleanup = llvm.create_new_function_pass_manager()
    cleanup.add_sroa_pass()
    cleanup.add_instruction_combine_pass()
    cleanup.add_simplify_cfg_pass()
    for fn in parsed.functions:
        if not fn.is_declaration:
            cleanup.run(fn, builder)
    return parsed


# The scalar path's kernels are compiled for 256-bit registers: vector types of 512 bits (the float64
# accumulators of a float32 kernel, its 8 row indices in i64) are split in two rather than put in zmm registers,
# whose use lowers the clock of many Intel CPUs for all the kernel's code (benchmarks/FLOAT32.md). The block
# kernels' dense FMA tiles gain more from 512-bit vectors than the clock costs (benchmarks/STRUCTURED_SPEED.md).
_VECTOR_WIDTH = ' "prefer-vector-width"="256" "min-legal-vector-width"="0"'


def _with_vector_width(text: str) -> str:
    """The IR text with `_VECTOR_WIDTH`'s attributes on every function definition (llvmlite's IR builder has no
    way to write string attributes; it prints each definition's attributes on its `define` line)."""
    return "\n".join(line + _VECTOR_WIDTH if line.startswith("define ") else line for line in text.split("\n"))


def _load_object(obj: bytes, symbols: Sequence[str]) -> dict[str, int]:
    """Link `obj` into this process (once per distinct object) and return the addresses of `symbols`."""
    digest = hashlib.sha256(obj).hexdigest()
    with _lock:
        if digest not in _loaded:
            llvm = _llvm()
            # an engine takes ownership of its target machine (and frees it): each gets its own
            engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _new_target_machine(CODEGEN_OPT))
            engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            engine.finalize_object()
            _loaded[digest] = (engine, {})
        engine, addresses = _loaded[digest]
        for name in symbols:
            if name not in addresses:
                address = engine.get_function_address(name)
                if not address:
                    raise RuntimeError(f"compiled kernel object has no function {name!r}")
                addresses[name] = address
        return {name: addresses[name] for name in symbols}


# ---------------------------------------------------------------------- tables as text


def parse_table(text: str) -> tuple[tuple[Any, ...], ...]:
    """Instructions from their text form, one per line: `dst op operand...`, a constant written `#<float>`.

    Generated modules keep their tables as text so that importing one costs next to nothing (Python compiles
    a tuple literal of 10⁵ instructions in seconds); only a kernel that must be compiled parses its table.
    """
    return tuple(
        tuple(float(word[1:]) if word[0] == "#" else word for word in line.split())
        for line in text.splitlines()
        if line.strip()
    )


def parse_inputs(text: str) -> dict[str, tuple[str, int]]:
    """The names a table reads and where from, one per line: `name source index`."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            name, source, index = line.split()
            out[name] = (source, int(index))
    return out


def table_length(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


# ---------------------------------------------------------------------- object files


def _object_header(tag: str, payload: bytes) -> bytes:
    return b" ".join([OBJECT_MAGIC, hashlib.sha256(payload).hexdigest().encode(), tag.encode()]) + b"\n"


def _read_object(path: Path, tag: str) -> bytes | None:
    """The object code in `path` if its header names `tag` and the sha256 of its bytes matches."""
    data = symsm_cache.read_private_file(path)
    if data is None:
        return None
    header, sep, payload = data.partition(b"\n")
    if not sep or header + b"\n" != _object_header(tag, payload):
        return None
    return payload


def _object_path(module_file: str, kernel: str, opt: int) -> Path:
    digest = hashlib.sha256(f"{target_description()} codegen-opt={opt}".encode()).hexdigest()[:16]
    source = Path(module_file)
    return source.with_name(f"{source.stem}.{kernel}.{digest}.o")


# ---------------------------------------------------------------------- kernels


class _Native:
    """The machine code of one kernel of a generated module: built, compiled or loaded on first use."""

    def __init__(
        self,
        module_file: str,
        key: str,
        kernel: str,
        *,
        dtype: str,
        dim: int,
        n_params: int,
        rows_per_block: int,
        max_blocks: int,
        **tables: Any,
    ) -> None:
        """`tables`: the kernel's instruction tables and input maps as text (see `parse_table`), its constant,
        sum, factor, product, output and result names."""
        self.module_file = module_file
        self.key = key
        self.kernel = kernel
        self.dtype = np.dtype(dtype)
        self.dim, self.n_params = dim, n_params
        self.rows_per_block, self.max_blocks = rows_per_block, max_blocks
        self.tables = tables
        self.ops = table_length(tables["body"])
        self._functions: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.timings: dict[str, float] = {}  # seconds of the last build: "llvm_ir", "machine_code", "load"

    def symbol(self, part: str) -> str:
        return f"symsm_{self.key[:32]}_{self.kernel}_{part}"

    def build(self, module: Any) -> None:  # filled in by subclasses
        raise NotImplementedError

    def _build_prologue(self, module: Any, tables: Mapping[str, Any]) -> None:
        from .kernels import build_section

        dt = self.dtype.name
        build_section(
            module, self.symbol("prologue"), tables["prologue"], tables["prologue_inputs"], tables["consts"], dt,
            [("theta", dt)], out_dtype=dt,
        )  # fmt: skip

    def _start(self, theta: Any, X: Any) -> tuple[dict[str, Any], np.ndarray, int]:
        """Check the arguments, run the prologue: (functions, consts, number of blocks of rows)."""
        # the machine code trusts its pointers: nothing but arrays it can read may reach it
        if not (
            isinstance(theta, np.ndarray)
            and theta.dtype == self.dtype
            and theta.shape == (self.n_params,)
            and theta.flags.c_contiguous
        ):
            raise TypeError(f"theta must be a contiguous {self.dtype} array of shape ({self.n_params},)")
        if not (
            isinstance(X, np.ndarray)
            and X.dtype == self.dtype
            and X.ndim == 2
            and X.shape[1] == self.dim
            and X.flags.c_contiguous
        ):
            raise TypeError(f"X must be a C-contiguous {self.dtype} array of shape (n, {self.dim})")
        fns = self.functions()
        consts = np.empty(max(1, len(self.tables["consts"])), dtype=self.dtype)
        fns["prologue"](theta.ctypes.data, consts.ctypes.data)
        n_blocks = max(1, min(self.max_blocks, (X.shape[0] + self.rows_per_block - 1) // self.rows_per_block))
        return fns, consts, n_blocks

    def signatures(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def functions(self) -> dict[str, Any]:
        if self._functions is None:
            with self._lock:
                if self._functions is None:
                    self._functions = self._link()
        return self._functions

    def _link(self) -> dict[str, Any]:
        start = time.perf_counter()
        opt = codegen_opt(self.ops)
        path = _object_path(self.module_file, self.kernel, opt)
        tag = f"{path.stem} {target_description()} codegen-opt={opt}"
        obj = _read_object(path, tag)
        kind = "machine code loaded"
        if obj is None:
            from llvmlite import ir

            module = ir.Module(name=f"{path.stem}")
            self.build(module)
            built = time.perf_counter()
            obj = compile_module(module, opt=opt)
            self.timings = {"llvm_ir": built - start, "machine_code": time.perf_counter() - built}
            kind = "machine code compiled"
            with contextlib.suppress(OSError):  # an unwritable cache costs a recompile in the next process
                symsm_cache.write_private_file(path, _object_header(tag, obj) + obj)
        sigs = self.signatures()
        loading = time.perf_counter()
        addresses = _load_object(obj, [self.symbol(part) for part in sigs])
        self.timings["load"] = time.perf_counter() - loading
        symsm_cache.record(kind, f"{self.key}/{self.kernel}", path, start)
        return {
            part: ctypes.CFUNCTYPE(None, *argtypes)(addresses[self.symbol(part)]) for part, argtypes in sigs.items()
        }


def _parsed(tables: Mapping[str, Any]) -> dict[str, Any]:
    """The kernel's tables with their text parts parsed (instruction tables and input maps)."""
    out = dict(tables)
    for name, value in tables.items():
        if name.endswith("_inputs"):
            out[name] = parse_inputs(value)
        elif name in ("prologue", "body", "epilogue"):
            out[name] = parse_table(value)
    return out


_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_F64 = ctypes.c_double


BUFFER_ALIGN = 64  # bytes: a cache line, so no vector load of the factor buffer straddles two


def _aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised 1-D array of n elements starting on a `BUFFER_ALIGN`-byte boundary (malloc aligns to
    16 bytes only: at 16 mod 32, half the 32-byte loads of the product tiles would straddle cache lines)."""
    itemsize = dtype.itemsize
    raw = np.empty(n + BUFFER_ALIGN // itemsize, dtype=dtype)
    start = (-raw.ctypes.data % BUFFER_ALIGN) // itemsize
    return raw[start : start + n]


class SumKernel(_Native):
    """f(theta, X) → results: a θ-only prologue, sums over the rows of X in blocks on several threads
    (symsm.core.threads: the split depends only on the number of rows and the partial sums are added in block
    order, so the result does not depend on the thread count), then an epilogue on the totals. Each thread
    makes one call, the loop over its blocks being machine code too (`kernels.build_block_loop`). The same pass
    checks that X is finite (`checks_finite`)."""

    checks_finite = True

    def __init__(self, module_file: str, key: str, kernel: str, **options: Any) -> None:
        super().__init__(module_file, key, kernel, **options)
        t = self.tables
        self.n_totals = len(t["sums"]) + len(t["products"])
        self.buffer = buffer_size(len(t["factors"]) if t["products"] else 0, self.dtype.name, len(t["products"]))

    def build(self, module: Any) -> None:
        from .kernels import TILE, TILE_AVX512, build_block_loop, build_section, build_sum_block

        t, dt = _parsed(self.tables), self.dtype.name
        self._build_prologue(module, t)
        block = build_sum_block(
            module, self.symbol("block"), t["body"], t["body_inputs"], t["sums"], self.dim, dt,
            t["factors"], t["products"], TILE_AVX512 if _has_avx512vl() else TILE, check_finite=True,
        )  # fmt: skip
        build_block_loop(module, self.symbol("blocks"), block, dt)
        build_section(
            module, self.symbol("epilogue"), t["epilogue"], t["epilogue_inputs"], t["results"], "float64",
            [("theta", dt), ("consts", dt), ("totals", "float64")], ("n",),
        )  # fmt: skip

    def signatures(self) -> dict[str, list[Any]]:
        return {
            "prologue": [_P, _P],
            "block": [_P, _P, _P, _I64, _I64, _P, _P],
            "blocks": [_P, _P, _P, _I64, _I64, _I64, _I64, _P, _P, _I64],
            "epilogue": [_P, _P, _P, _F64, _P],
        }

    def __call__(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The results on the rows of X; `NonFiniteDataError` if X holds an infinity or a NaN (checked in the
        same pass: callers need not check X for finiteness first)."""
        fns, consts, n_blocks = self._start(theta, X)
        n = X.shape[0]
        partial = np.zeros((n_blocks, self.n_totals + 1))  # the last column: each block's finiteness flag
        run = fns["blocks"]  # blocks lo..hi in one call: block i on rows [i·n // n_blocks, (i + 1)·n // n_blocks)
        th, co, xs = theta.ctypes.data, consts.ctypes.data, X.ctypes.data
        part, stride = partial.ctypes.data, partial.shape[1]

        def blocks(lo: int, hi: int) -> None:
            buf = _aligned_empty(self.buffer, self.dtype)
            run(th, co, xs, n, n_blocks, lo, hi, buf.ctypes.data, part, stride)

        run_blocks(blocks, n_blocks)
        flagged = np.flatnonzero(partial[:, -1] != 0)
        if flagged.size:
            _raise_non_finite(X, [(i * n // n_blocks, (i + 1) * n // n_blocks) for i in flagged])
        totals = np.zeros(self.n_totals)
        for row in partial[:, :-1]:  # block order: deterministic
            totals += row
        result = np.empty(len(self.tables["results"]))
        fns["epilogue"](th, co, totals.ctypes.data, float(n), result.ctypes.data)
        return result


def _raise_non_finite(X: np.ndarray, ranges: Sequence[tuple[int, int]]) -> None:
    """`NonFiniteDataError` naming the first non-finite value of X in the row ranges a kernel flagged; nothing
    if there is none (the flag's sum overflowed from finite values)."""
    for lo, hi in ranges:
        bad = first_non_finite(X[lo:hi])
        if bad is not None:
            row, col = bad
            raise NonFiniteDataError(
                f"X has non-finite values; the first is at row {lo + row}, column {col}: {X[lo + row, col]}",
                row=lo + row,
                column=col,
            )


class RowKernel(_Native):
    """f(theta, X, out): per-row outputs (out[t] or out[t, k], float64) from a prologue and a row loop."""

    def __init__(self, module_file: str, key: str, kernel: str, *, out_ndim: int, **options: Any) -> None:
        super().__init__(module_file, key, kernel, **options)
        self.out_ndim = out_ndim

    def build(self, module: Any) -> None:
        from .kernels import build_row_block

        t = _parsed(self.tables)
        self._build_prologue(module, t)
        build_row_block(
            module, self.symbol("rows"), t["body"], t["body_inputs"], t["outputs"], self.dim, self.dtype.name
        )

    def signatures(self) -> dict[str, list[Any]]:
        return {"prologue": [_P, _P], "rows": [_P, _P, _P, _I64, _I64, _P]}

    def __call__(self, theta: np.ndarray, X: np.ndarray, out: np.ndarray) -> None:
        fns, consts, n_blocks = self._start(theta, X)
        n, k = X.shape[0], len(self.tables["outputs"])
        shape = (n,) if self.out_ndim == 1 else (n, k)
        if not (
            isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == shape and out.flags.c_contiguous
        ):
            raise TypeError(f"out must be a C-contiguous float64 array of shape {shape}")
        rows = fns["rows"]
        th, co, xs, o = theta.ctypes.data, consts.ctypes.data, X.ctypes.data, out.ctypes.data

        def blocks(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                rows(th, co, xs, i * n // n_blocks, (i + 1) * n // n_blocks, o)

        run_blocks(blocks, n_blocks)
