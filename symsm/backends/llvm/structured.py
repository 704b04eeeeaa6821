"""The structured path on the LLVM block executor: block programs (symsm/ir/blocks.py) as machine code.

`translate` maps a program's block section onto the ops of symsm/backends/llvm/blocks.py (matmul, elementwise
tables with row scalars as operands, row sums, float64 accumulations, the per-row output of the per_sample and
score kernels); the θ-level prologue and epilogue run in float64 with numpy, as in the reference executor
(symsm/backends/blocks_numpy/executor.py, whose code they share).

The object code of a block section is cached like the scalar kernels' (symsm/backends/llvm/native.py): a file
`<module>.<kernel>.<target digest>.o` next to the generated module in symsm's private cache directory, written
atomically, with a header holding the sha256 of its bytes, the function's symbol, the executor's layout and the
target; a later process loads it (milliseconds) instead of compiling, and a file that does not match is
rebuilt, never loaded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...core import cache as symsm_cache
from ...core.errors import CodegenError
from ...core.threads import blas_one_thread
from ...ir.block_format import BlockProgram as IRProgram
from ..blocks_numpy.executor import BlockKernel as NumpyBlockKernel
from . import blocks as llvm_blocks
from .native import CODEGEN_OPT, target_description

__all__ = ["StructuredKernel", "generate_llvm_blocks_source", "reciprocals", "translate"]


def _theta_shapes(program: IRProgram) -> dict[str, tuple[int, ...]]:
    """The shapes of the θ-level arrays (parameter groups and prologue arrays) the block section may read."""
    shapes: dict[str, tuple[int, ...]] = {}
    for t in program.thetas:
        shapes[t.name] = (t.shape[0], t.shape[0]) if t.kind == "symmetric" else tuple(t.shape)
    for name, a in program.arrays.items():
        if a.kind == "theta":
            shapes[name] = tuple(a.shape)
    return shapes


MAX_RECIPROCAL_POWER = 4
#: the column sums of X, accumulated by the value and value_and_grad kernels: finite iff every entry of X is
#: (or a sum overflowed: then X itself is tested), so the host needs no pass of its own over X
XSUM = "__xsum"


def reciprocals(table: tuple[str, ...] | list[str]) -> list[str]:
    """A table with its divisions by powers of one value (a/c, b/c², e/c³: the derivatives of log cosh) done as
    one reciprocal r = 1/c and products (a·r, b·r², e·r³): a vector division costs ~8 multiplications. The rest of
    the table is unchanged; results differ from the divisions by a few units in the last place."""
    mono: dict[str, dict[str, int]] = {}  # temporaries that are products of one name: {name: power}
    out: list[str] = []
    powers: dict[tuple[str, int], str] = {}

    def power(base: str, k: int) -> str:
        if (base, k) not in powers:
            line = f"div #1.0 {base}" if k == 1 else f"mul {power(base, k - 1)} {power(base, 1)}"
            name = f"__rcp{len(powers)}"
            out.append(f"{name} {line}")
            powers[(base, k)] = name
        return powers[(base, k)]

    def of(name: str) -> dict[str, int]:
        return mono.get(name, {name: 1})

    for line in table:
        dst, kind, *args = line.split()
        if kind == "mul" and not any(a.startswith("#") for a in args):
            merged = dict(of(args[0]))
            for base, k in of(args[1]).items():
                merged[base] = merged.get(base, 0) + k
            if len(merged) == 1:
                mono[dst] = merged
        elif kind == "copy" and not args[0].startswith("#"):
            mono[dst] = of(args[0])
        divisor = of(args[1]) if kind == "div" and not args[1].startswith("#") else {}
        if len(divisor) == 1:
            ((base, k),) = divisor.items()
            if 1 <= k <= MAX_RECIPROCAL_POWER and not base.startswith("#"):
                out.append(f"{dst} mul {args[0]} {power(base, k)}")
                continue
        out.append(line)
    return out


def translate(program: IRProgram) -> llvm_blocks.BlockProgram:
    """The block section of `program` as an LLVM block program (its params: the θ-level arrays it reads)."""
    shapes = _theta_shapes(program)
    ops: list[llvm_blocks.Op] = []
    used: dict[str, None] = {}

    def theta(name: str) -> None:
        if name in shapes:
            used.setdefault(name)

    for k, op in enumerate(program.block):
        kind = op.kind
        if kind == "columns":
            ops.append(llvm_blocks.Columns(op.outs[0], op.ins[0], op.flags[0], program.arrays[op.outs[0]].shape[0]))
        elif kind == "matmul":
            out, a, p = op.outs[0], op.ins[0], op.ins[1]
            theta(p)
            ops.append(llvm_blocks.MatMul(out, a, p, bool(op.flags[0])))
        elif kind == "elementwise":
            for name in op.ins:
                theta(name)
            out_decl = program.arrays[op.outs[0]]  # its width: a constant row has no input of it
            width = out_decl.shape[0] if out_decl.kind == "row" and out_decl.shape else 0
            table = "\n".join(reciprocals(op.table))
            ops.append(llvm_blocks.Elementwise(tuple(op.outs), tuple(op.ins), table, width))
        elif kind == "rowsum":
            ops.append(llvm_blocks.RowSum(op.outs[0], op.ins[0]))
        elif kind == "acc_outer":
            ops.append(llvm_blocks.AccOuter(op.outs[0], op.ins[0], op.ins[1]))
        elif kind == "acc_gram":
            ops.append(llvm_blocks.AccGram(op.outs[0], op.ins[0]))
        elif kind == "acc_colsum":
            ops.append(llvm_blocks.AccColSum(op.outs[0], op.ins[0]))
        elif kind == "acc_sum":
            a = op.ins[0]
            decl = program.arrays.get(a)
            if decl is not None and decl.kind == "row" and decl.shape and decl.shape[0] != 1:
                total = f"__rowsum_{k}"  # Σ of every entry: the rows' sums, then their sum
                ops.append(llvm_blocks.RowSum(total, a))
                a = total
            ops.append(llvm_blocks.AccSum(op.outs[0], a))
        elif kind in ("per_sample", "score"):
            ops.append(llvm_blocks.RowOut(op.ins[0]))
        else:
            raise CodegenError(f"the LLVM block executor has no block operation {kind!r}")
    if program.kernel in ("value", "value_and_grad"):
        ops.append(llvm_blocks.AccColSum(XSUM, "X"))
    params = tuple(llvm_blocks.Param(name, shapes[name]) for name in used)
    return llvm_blocks.BlockProgram(program.x_width, params, tuple(ops), x="X")


def _object_file(module_file: str, kernel: str, dtype: str) -> Path:
    digest = hashlib.sha256(f"{target_description()} codegen-opt={CODEGEN_OPT}".encode()).hexdigest()[:16]
    source = Path(module_file)
    return source.with_name(f"{source.stem}.blocks-{kernel}-{dtype}.{digest}.o")


class StructuredKernel(NumpyBlockKernel):
    """One block program: the θ-level sections with numpy (float64), the block section as LLVM machine code,
    compiled (or loaded from the cache) on first use. `module_file`, `key`: the generated module's file and cache
    key (None: nothing kept on disk)."""

    def __init__(
        self, text: str, dtype: Any = np.float64, *, kernel: str = "", module_file: str | None = None, key: str = ""
    ) -> None:
        super().__init__(text, dtype)
        self.kernel = kernel or self.program.kernel
        self.module_file = module_file
        self.key = key
        self.llvm_program = translate(self.program)
        self.natives: dict[str, llvm_blocks.BlockKernel] = {}  # by the rows' dtype
        self._native_lock = threading.Lock()
        self.timings: dict[str, float] = {}

    def native(self, x_dtype: Any = None) -> llvm_blocks.BlockKernel:
        """The machine code for rows of `x_dtype` (default: the kernel's dtype; float64 rows for a float32 kernel
        are rounded as they are read, so the host makes no float32 copy of X)."""
        xd = np.dtype(x_dtype or self.dtype).name
        if xd not in self.natives:
            with self._native_lock:
                if xd not in self.natives:
                    start = time.perf_counter()
                    dt = self.dtype.name
                    name = self.kernel if xd == dt else f"{self.kernel}-rows-{xd}"
                    path = _object_file(self.module_file, name, dt) if self.module_file else None
                    symbol = f"symsm_{self.key[:32]}_blocks_{name.replace('-', '_')}_{dt}" if self.key else None
                    native = llvm_blocks.BlockKernel(self.llvm_program, dt, x_dtype=xd, symbol=symbol, object_file=path)
                    self.timings["build"] = time.perf_counter() - start
                    if path is not None:
                        kind = "machine code compiled" if native.compiled else "machine code loaded"
                        symsm_cache.record(kind, f"{self.key}/blocks-{name}", path, start)
                    self.natives[xd] = native
        return self.natives[xd]

    def run(
        self, theta: np.ndarray, X: np.ndarray, per_sample: np.ndarray | None = None, score: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """(J̃, ∇θJ̃) (each only where the program computes it), writing per-row outputs into the arrays given.
        The value and value_and_grad kernels give NaN where X has non-finite entries (the host's data check)."""
        n = X.shape[0]
        rows64 = self.dtype == np.float32 and X.dtype == np.float64 and X.flags.c_contiguous
        X = X if rows64 else np.ascontiguousarray(X, dtype=self.dtype)
        native = self.native(X.dtype)
        with blas_one_thread():  # the θ-level products are small: OpenBLAS's threads would spin beside the kernel's
            theta_env = self.prologue(np.asarray(theta, dtype=np.float64))
        out = per_sample if per_sample is not None else score
        if native.layout.out_width and out is None:
            out = np.empty((n, native.layout.out_width))
        totals = native(X, {p.name: theta_env[p.name] for p in self.llvm_program.params}, out)
        xsum = totals.pop(XSUM, None)
        if xsum is not None and not np.isfinite(xsum).all() and not np.isfinite(X.astype(self.dtype)).all():
            return float("nan"), np.full(self.program.n_params, np.nan)  # the host names the entries
        env = dict(theta_env)
        for name, a in self.program.arrays.items():
            if a.kind == "acc":
                env[name] = totals[name].reshape(a.shape) if name in totals else np.zeros(a.shape)
        grad = np.zeros(self.program.n_params)
        value = float("nan")
        with blas_one_thread():
            for op in self.program.epilogue:
                if op.kind == "value":
                    value = float(env[op.ins[0]]) / n if n else float("nan")
                else:
                    self._theta_op(op, env, grad)
        return value, grad / max(n, 1)


def generate_llvm_blocks_source(model: Any, programs: dict[str, IRProgram], *, dtype: Any, cache_key: str) -> str:
    """The generated module of the structured path on this executor (the registry's `blocks` of "llvm")."""
    from ..blocks_numpy.generate import generate_blocks_source

    return generate_blocks_source(
        model, programs, dtype=dtype, cache_key=cache_key, backend="llvm-blocks",
        package="symsm.backends.llvm.structured", cls="StructuredKernel",
        options=", kernel=name, module_file=__file__, key=CACHE_KEY", checks_finite_data=True, float64_rows=True,
    )  # fmt: skip
