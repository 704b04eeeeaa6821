"""Runs a block program (symsm/ir/block_format.py) with numpy: the reference executor of the structured path.

The prologue runs once per call in float64; the block section runs on blocks of ``rows_per_block`` rows of X
in the kernel's dtype, with float64 accumulators; the epilogue turns the accumulators into J̃ and ∇θJ̃.
Blocks are grouped into at most `MAX_CHUNKS` chunks whose boundaries depend only on N; a chunk sums its
blocks in order into its own accumulators, chunks run on symsm.core.threads.run_blocks, and the chunks'
partial sums are combined in chunk order — so results do not depend on the number of threads. Memory is a
block's row arrays plus one set of accumulators per chunk (never N × P).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from ...core.errors import CodegenError
from ...core.threads import run_blocks
from ...ir.block_format import BlockProgram, Op, parse_program

__all__ = ["MAX_CHUNKS", "BlockKernel"]

MAX_CHUNKS = 64

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "tan": np.tan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "erf": special.erf, "erfc": special.erfc,
    "log1p": np.log1p, "expm1": np.expm1, "fmin": np.fmin, "fmax": np.fmax,
}  # fmt: skip
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power}


class _Table:
    """An elementwise table compiled to a list of numpy steps."""

    def __init__(self, op: Op) -> None:
        self.outs = op.outs
        self.ins = op.ins
        self.steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = []
        for line in op.table:
            dst, kind, *args = line.split()
            if kind == "call":
                fn = _FUNCTIONS.get(args[0])
                if fn is None:
                    raise CodegenError(f"unknown table function {args[0]!r}")
                self.steps.append((dst, fn, tuple(_operand(a) for a in args[1:])))
            elif kind in _BINARY:
                self.steps.append((dst, _BINARY[kind], tuple(_operand(a) for a in args)))
            elif kind == "neg":
                self.steps.append((dst, np.negative, (_operand(args[0]),)))
            elif kind == "step":  # H(u): ½ at 0, as the LLVM kernels
                self.steps.append((dst, _step, (_operand(args[0]),)))
            elif kind == "sqrt":
                self.steps.append((dst, np.sqrt, (_operand(args[0]),)))
            elif kind == "copy":
                self.steps.append((dst, _identity, (_operand(args[0]),)))
            else:
                raise CodegenError(f"unknown table operation {kind!r}")

    def run(self, env: dict[str, Any]) -> dict[str, Any]:
        local = {name: env[name] for name in self.ins}
        for dst, fn, args in self.steps:
            local[dst] = fn(*[local[a] if isinstance(a, str) else a for a in args])
        return {name: local[name] for name in self.outs}


def _step(u: Any) -> Any:
    return np.heaviside(u, 0.5)


def _identity(value: Any) -> Any:
    return value


def _operand(text: str) -> Any:
    return float(text[1:]) if text.startswith("#") else text


class BlockKernel:
    """One block program, ready to run on (θ, X) (see the module docstring)."""

    def __init__(self, text: str, dtype: Any = np.float64) -> None:
        self.text = text
        self.program: BlockProgram = parse_program(text)
        self.dtype = np.dtype(dtype)
        self.tables = {id(op): _Table(op) for ops in self._sections() for op in ops if op.kind == "elementwise"}

    def _sections(self) -> tuple[list[Op], list[Op], list[Op]]:
        p = self.program
        return p.prologue, p.block, p.epilogue

    # ------------------------------------------------------------------ θ level
    def prologue(self, theta: np.ndarray) -> dict[str, Any]:
        env: dict[str, Any] = {}
        for t in self.program.thetas:
            flat = theta[t.offset : t.offset + t.size].astype(np.float64)
            if t.kind == "scalar":
                env[t.name] = np.float64(flat[0])
            elif t.kind == "symmetric":
                d = t.shape[0]
                m = np.zeros((d, d))
                iu = np.triu_indices(d)
                m[iu] = flat
                m.T[iu] = flat
                env[t.name] = m
            else:
                env[t.name] = flat.reshape(t.shape)
        for op in self.program.prologue:
            self._theta_op(op, env)
        return env

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.program.arrays[name].shape

    def _theta_op(self, op: Op, env: dict[str, Any], grad: np.ndarray | None = None) -> None:
        k = op.kind
        a = [env[n] for n in op.ins] if k not in ("grad",) else None
        if k == "elementwise":
            for name, value in self.tables[id(op)].run(env).items():
                env[name] = np.array(np.broadcast_to(value, self._shape(name)), dtype=np.float64)
            return
        if k == "value":
            return
        if k == "grad":
            assert grad is not None
            self._grad(op, env, grad)
            return
        assert a is not None
        out = op.outs[0]
        if k == "gemm":
            x, y = a
            x = x.T if op.flags[0] and x.ndim == 2 else x
            y = y.T if op.flags[1] and y.ndim == 2 else y
            env[out] = np.asarray(x @ y, dtype=np.float64)
        elif k == "transpose":
            env[out] = a[0].T.copy()
        elif k == "rowdot":
            env[out] = np.einsum("ij,ij->i", a[0], a[1])
        elif k == "diag":
            env[out] = np.diagonal(a[0]).copy()
        elif k == "colsum":
            env[out] = a[0].sum(axis=0)
        elif k == "sum":
            env[out] = np.float64(np.sum(a[0]))
        elif k == "scale_rows":
            env[out] = np.asarray(a[0])[:, None] * a[1] if np.ndim(a[0]) else a[0] * a[1]
        elif k == "diagmat":
            env[out] = np.diag(a[0])
        elif k == "outer":
            env[out] = np.outer(a[0], a[1])
        elif k == "vector":
            env[out] = np.array([float(v) for v in op.table])
        elif k in ("bcast_rows", "fill"):
            env[out] = np.array(np.broadcast_to(a[0], self._shape(out)), dtype=np.float64)
        else:
            raise CodegenError(f"unknown θ-level operation {k!r}")

    def _grad(self, op: Op, env: dict[str, Any], grad: np.ndarray) -> None:
        decl = next(t for t in self.program.thetas if t.name == op.outs[0])
        value = np.asarray(env[op.ins[0]], dtype=np.float64)
        if decl.kind == "symmetric":
            folded = value + value.T
            np.fill_diagonal(folded, np.diagonal(value))
            flat = folded[np.triu_indices(decl.shape[0])]
        else:
            flat = value.ravel()
        grad[decl.offset : decl.offset + decl.size] += flat

    # ------------------------------------------------------------------ blocks
    def run(
        self, theta: np.ndarray, X: np.ndarray, per_sample: np.ndarray | None = None, score: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """(J̃, ∇θJ̃) (each only where the program computes it), writing per-row outputs into the arrays given."""
        n = X.shape[0]
        theta_env = self.prologue(np.asarray(theta, dtype=np.float64))
        block_env = {
            k: (v.astype(self.dtype) if isinstance(v, np.ndarray) else self.dtype.type(v)) for k, v in theta_env.items()
        }
        rows = self.program.rows_per_block
        n_blocks = -(-n // rows)
        n_chunks = min(n_blocks, MAX_CHUNKS)
        accs = {name: a.shape for name, a in self.program.arrays.items() if a.kind == "acc"}
        partials: list[dict[str, np.ndarray]] = [{} for _ in range(n_chunks)]

        def chunks(lo: int, hi: int) -> None:
            for c in range(lo, hi):
                acc = {name: np.zeros(shape) for name, shape in accs.items()}
                for b in range(c * n_blocks // n_chunks, (c + 1) * n_blocks // n_chunks):
                    r0, r1 = b * rows, min(n, (b + 1) * rows)
                    self._block(block_env, X[r0:r1], acc, r0, per_sample, score)
                partials[c] = acc

        run_blocks(chunks, n_chunks)
        env = dict(theta_env)
        for name in accs:
            total = partials[0][name].copy()
            for part in partials[1:]:
                total += part[name]
            env[name] = total
        grad = np.zeros(self.program.n_params)
        value = float("nan")
        for op in self.program.epilogue:
            if op.kind == "value":
                value = float(env[op.ins[0]]) / n
            else:
                self._theta_op(op, env, grad)
        return value, grad / n

    def _block(
        self,
        theta_env: dict[str, Any],
        X: np.ndarray,
        acc: dict[str, np.ndarray],
        r0: int,
        per_sample: np.ndarray | None,
        score: np.ndarray | None,
        per_row: bool = False,
    ) -> None:
        """One block; `per_row`: each accumulator of `acc` holds every row's own contribution, shape (B, …)."""
        b = X.shape[0]
        env = dict(theta_env)
        env["X"] = X
        arrays = self.program.arrays
        for op in self.program.block:
            k = op.kind
            if k == "elementwise":
                ins = {}
                wide = any(arrays[o].kind == "row" for o in op.outs)
                for name in op.ins:
                    v = env[name]
                    decl = arrays.get(name)
                    if wide and decl is not None and decl.kind == "rowscalar":
                        v = v[:, None]
                    ins[name] = v
                for name, value in self.tables[id(op)].run(ins).items():
                    decl = arrays[name]
                    shape = (b, decl.shape[0]) if decl.kind == "row" else (b,)
                    env[name] = np.array(np.broadcast_to(value, shape), dtype=self.dtype)
            elif k == "columns":
                lo = op.flags[0]
                env[op.outs[0]] = env[op.ins[0]][:, lo : lo + arrays[op.outs[0]].shape[0]]
            elif k == "matmul":
                a, p = env[op.ins[0]], env[op.ins[1]]
                env[op.outs[0]] = a @ (p.T if op.flags[0] else p)
            elif k == "rowsum":
                env[op.outs[0]] = env[op.ins[0]].sum(axis=1)
            elif k == "acc_outer":
                a, c = env[op.ins[0]].astype(np.float64), env[op.ins[1]].astype(np.float64)
                acc[op.outs[0]] += np.einsum("bi,bj->bij", a, c) if per_row else a.T @ c
            elif k == "acc_gram":
                a = env[op.ins[0]].astype(np.float64)
                acc[op.outs[0]] += np.einsum("bi,bj->bij", a, a) if per_row else a.T @ a
            elif k == "acc_colsum":
                a = env[op.ins[0]].astype(np.float64)
                acc[op.outs[0]] += a if per_row else a.sum(axis=0)
            elif k == "acc_sum":
                a = np.asarray(env[op.ins[0]], dtype=np.float64)
                acc[op.outs[0]] += (a.sum(axis=1) if a.ndim == 2 else a) if per_row else np.sum(a)
            elif k == "per_sample":
                if per_sample is not None:
                    per_sample[r0 : r0 + b] = env[op.ins[0]]
            elif k == "score":
                if score is not None:
                    score[r0 : r0 + b] = env[op.ins[0]]
            else:
                raise CodegenError(f"unknown block operation {k!r}")

    # ------------------------------------------------------------------ per-row gradients (fitting)
    def accumulators(self) -> list[tuple[str, tuple[int, ...]]]:
        """The accumulators (name, shape) in the order of `accumulator_rows`' columns."""
        return [(name, a.shape) for name, a in self.program.arrays.items() if a.kind == "acc"]

    def accumulator_rows(self, theta_env: dict[str, Any], X: np.ndarray) -> np.ndarray:
        """Every row's own contribution to the accumulators, (B, Q) in float64 (columns: `accumulators`, each
        flattened): the rows the block section would sum. `theta_env`: the prologue's arrays in the kernel's dtype."""
        b = X.shape[0]
        accs = self.accumulators()
        acc = {name: np.zeros((b, *shape)) for name, shape in accs}
        self._block(theta_env, X, acc, 0, None, None, per_row=True)
        return np.concatenate([acc[name].reshape(b, -1) for name, _ in accs], axis=1)

    def epilogue_grad(self, theta_env: dict[str, Any], totals: np.ndarray) -> np.ndarray:
        """N·∇θJ̃ from the accumulators' sums `totals` (flat, in the order of `accumulators`), as `run` forms it."""
        env = dict(theta_env)
        start = 0
        for name, shape in self.accumulators():
            size = int(np.prod(shape, dtype=np.int64))
            env[name] = totals[start : start + size].reshape(shape)
            start += size
        grad = np.zeros(self.program.n_params)
        for op in self.program.epilogue:
            if op.kind != "value":
                self._theta_op(op, env, grad)
        return grad
