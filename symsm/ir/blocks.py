"""Lowering: the structured derivation (symsm/derive/structured.py) as block programs, one per kernel.

The programs' format — sections, ops, text form and the guarantees an executor may rely on — is
symsm/ir/block_format.py; its names are re-exported here.

`build_block_programs` lowers the structured derivation and then rewrites each program with the passes of
symsm/ir/block_passes.py (θ-only products re-associated into the prologue, quadratic row sums through an existing
product, Gram accumulations, dead ops, merged tables): the same values with fewer flops a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sympy as sp

from ..core.errors import CodegenError
from ..core.functions import BY_CLASS
from ..derive.structured import Accumulation, RNode, StructuredDerivation, TNode
from .block_format import (
    KERNELS,
    ROW_BYTES_PER_BLOCK,
    TABLE_FUNCTIONS,
    ArrayDecl,
    BlockProgram,
    Op,
    ThetaDecl,
    data_degree,
    flops_per_row,
    parse_program,
)
from .block_passes import optimize

__all__ = [
    "KERNELS",
    "ArrayDecl",
    "BlockProgram",
    "Op",
    "ThetaDecl",
    "build_block_programs",
    "data_degree",
    "flops_per_row",
    "parse_program",
]


# ---------------------------------------------------------------------------------------------- tables
_FLOAT = "#{!r}"


class _Tac:
    """Prints sympy expressions as three-address instructions (one table per elementwise op)."""

    def __init__(self, prefix: str) -> None:
        self.lines: list[str] = []
        self.prefix = prefix
        self.count = 0
        self.memo: dict[sp.Expr, str] = {}

    def new(self, op: str, *args: str) -> str:
        dst = f"{self.prefix}{self.count}"
        self.count += 1
        self.lines.append(" ".join([dst, op, *args]))
        return dst

    def assign(self, target: str, expr: sp.Expr) -> None:
        operand = self.operand(expr)
        if self.lines and self.lines[-1].split()[0] == operand and operand.startswith(self.prefix):
            last = self.lines[-1].split()
            self.lines[-1] = " ".join([target, *last[1:]])
            self.memo = {k: (target if v == operand else v) for k, v in self.memo.items()}
        else:
            self.lines.append(f"{target} copy {operand}")

    def operand(self, e: sp.Expr) -> str:
        if e.is_Number or e.is_NumberSymbol:
            return _FLOAT.format(float(e))
        if isinstance(e, sp.Symbol):
            return e.name
        if e in self.memo:
            return self.memo[e]
        result = self._emit(e)
        self.memo[e] = result
        return result

    def _emit(self, e: sp.Expr) -> str:
        if isinstance(e, sp.Add):
            terms = sorted(e.args, key=sp.default_sort_key)
            acc = self.operand(terms[0])
            for t in terms[1:]:
                coeff, _rest = t.as_coeff_Mul()
                if coeff.is_negative:
                    acc = self.new("sub", acc, self.operand(-t))
                else:
                    acc = self.new("add", acc, self.operand(t))
            return acc
        if isinstance(e, sp.Mul):
            num, den = [], []
            for f in sorted(e.args, key=sp.default_sort_key):
                base, ex = f.as_base_exp()
                if ex.is_Number and ex.is_negative and not f.is_Number:
                    den.append(base if ex == -1 else sp.Pow(base, -ex))
                else:
                    num.append(f)
            acc = self.operand(num[0]) if num else _FLOAT.format(1.0)
            for f in num[1:]:
                acc = self.new("mul", acc, self.operand(f))
            for f in den:
                acc = self.new("div", acc, self.operand(f))
            return acc
        if isinstance(e, sp.Pow):
            base, ex = e.args
            if ex == sp.S.Half:
                return self.new("sqrt", self.operand(base))
            if ex == -sp.S.Half:
                return self.new("div", _FLOAT.format(1.0), self.new("sqrt", self.operand(base)))
            if ex.is_Integer and 0 < abs(int(ex)) <= 16:
                n = abs(int(ex))
                b = self.operand(base)
                acc = self._power(b, n)
                return acc if ex > 0 else self.new("div", _FLOAT.format(1.0), acc)
            return self.new("pow", self.operand(base), self.operand(ex))
        if isinstance(e, (sp.Min, sp.Max)):  # coordinate weights only (min(t², 1), a box's distance)
            name = "fmin" if isinstance(e, sp.Min) else "fmax"
            args = sorted(e.args, key=sp.default_sort_key)
            acc = self.operand(args[0])
            for a in args[1:]:
                acc = self.new("call", name, acc, self.operand(a))
            return acc
        if isinstance(e, sp.Heaviside):  # H(u), H(0) = ½: the derivatives of min and max
            if e.args[1:] not in ((), (sp.S.Half,)):
                raise CodegenError(f"Heaviside with H(0) = {e.args[1]} is not supported (symsm uses H(0) = 1/2)")
            return self.new("step", self.operand(e.args[0]))
        if isinstance(e, sp.Function):
            name = _function_name(e)
            if name not in TABLE_FUNCTIONS or len(e.args) != 1:
                raise CodegenError(f"no table function for {e}")
            return self.new("call", name, self.operand(e.args[0]))
        raise CodegenError(f"cannot print {e} ({type(e).__name__}) in a table")

    def _power(self, b: str, n: int) -> str:
        if n == 1:
            return b
        half = self._power(b, n // 2)
        sq = self.new("mul", half, half)
        return self.new("mul", sq, b) if n % 2 else sq


def _function_name(e: sp.Function) -> str:
    record = BY_CLASS.get(type(e))
    if record is None:
        raise CodegenError(f"no table function for {e}")
    return record.name


def _table(outs: list[tuple[str, sp.Expr]], prefix: str = "v") -> tuple[list[str], list[str]]:
    """(table lines, input names) computing each (out name, expr), with common subexpressions once."""
    exprs = [e for _, e in outs]
    symbols = sp.numbered_symbols("_c")
    replacements, reduced = sp.cse(exprs, symbols=symbols, order="none")
    tac = _Tac(prefix)
    inputs: set[str] = set()
    local: set[str] = set()
    for sym, e in replacements:
        inputs.update(s.name for s in e.free_symbols)
        tac.assign(sym.name, e)
        local.add(sym.name)
    for (name, _), e in zip(outs, reduced, strict=True):
        inputs.update(s.name for s in e.free_symbols)
        tac.assign(name, e)
    return tac.lines, sorted(inputs - local)


# ---------------------------------------------------------------------------------------------- lowering
class _Lowering:
    def __init__(self, g: StructuredDerivation, model: Any, kernel: str) -> None:
        self.g = g
        self.model = model
        self.kernel = kernel
        self.arrays: dict[str, ArrayDecl] = {}
        self.prologue: list[Op] = []
        self.block: list[Op] = []
        self.epilogue: list[Op] = []
        self.memo: dict[tuple[sp.Expr, int], str] = {}
        self.functions: dict[tuple[sp.Expr, int], str] = {}  # function calls of the row kept in arrays
        self.hoisted: dict[sp.Expr, sp.Symbol] = {}  # θ-only parts of row expressions, computed by the prologue
        self.count = 0
        self.acc: dict[int, str] = {}

    def fresh(self, prefix: str, decl: ArrayDecl) -> str:
        name = f"{prefix}{self.count}"
        self.count += 1
        self.arrays[name] = decl
        return name

    def row_decl(self, width: int) -> ArrayDecl:
        return ArrayDecl("row", (width,)) if width else ArrayDecl("rowscalar")

    # -- the pieces a kernel needs
    def outputs(self) -> tuple[list[tuple[str, sp.Expr, int]], list[Accumulation]]:
        g = self.g
        if self.kernel == "score":
            return [("score", g.score, g.dim)], []
        if self.kernel == "per_sample":
            return [("per_sample", g.integrand, 0)], []
        outs = [("value", g.integrand, 0)]
        return outs, (g.accumulations if self.kernel == "value_and_grad" else [])

    def run(self) -> BlockProgram:
        g = self.g
        outs, accs = self.outputs()
        accs = _merge_sums(accs)
        exprs = [(e, w) for _, e, w in outs] + [(a.a, a.a_width) for a in accs]
        exprs += [(a.c, a.c_width) for a in accs if a.c is not None]
        rnodes = self.needed_rows([e for e, _ in exprs])
        tnodes = self.needed_theta([e for e, _ in exprs], rnodes, accs)
        for t in tnodes:
            if t.kind != "param":
                self.arrays[t.name] = ArrayDecl("theta", t.shape)
                self.prologue.append(self.theta_op(t))
        for r in rnodes:
            if r.kind != "X":
                self.arrays[r.name] = self.row_decl(r.width)
            if r.kind == "columns":  # the data and the auxiliary inputs, from X's columns
                self.block.append(Op("columns", (r.name,), ("X",), (r.offset,)))
        # block: row nodes level by level, each level's inputs in one elementwise op per width
        level: dict[int, int] = {}
        data = ("X", "columns")
        for r in rnodes:
            deps = self.row_deps(r.input) if r.input is not None else []
            level[r.index] = 1 + max((level[d.index] for d in deps), default=-1) if r.kind not in data else 0
        for lv in sorted({level[r.index] for r in rnodes if r.kind not in data}):
            batch = [r for r in rnodes if r.kind not in data and level[r.index] == lv]
            inputs = [(r.input, r.input_width) for r in batch if r.input is not None]
            for r, a in zip(batch, self.materialize(inputs), strict=True):
                if r.kind == "matmul":
                    assert r.P is not None
                    self.block.append(Op("matmul", (r.name,), (a, r.P.name), (int(r.transpose),)))
                else:
                    self.block.append(Op("rowsum", (r.name,), (a,)))
        names = self.materialize(exprs)
        for (kind, _, _), name in zip(outs, names, strict=False):
            if kind == "value":
                acc = self.fresh("a", ArrayDecl("acc", ()))
                self.block.append(Op("acc_sum", (acc,), (name,)))
                self.epilogue.append(Op("value", (), (acc,)))
            else:
                self.block.append(Op(kind, (), (name,)))
        rest = iter(names[len(outs) :])
        a_names = [next(rest) for _ in accs]
        c_names = [next(rest) if a.c is not None else None for a in accs]
        for item, an, cn in zip(accs, a_names, c_names, strict=True):
            target = self.accumulator(item.target)
            if item.kind == "outer":
                assert cn is not None
                self.block.append(Op("acc_outer", (target,), (an, cn)))
            elif item.kind == "colsum":
                self.block.append(Op("acc_colsum", (target,), (an,)))
            else:
                self.block.append(Op("acc_sum", (target,), (an,)))
        if accs:
            self.theta_reverse(tnodes)
        widths = sum(
            a.shape[0] if a.kind == "row" else 1 for a in self.arrays.values() if a.kind in ("row", "rowscalar")
        )
        widths += 2 * max(g.dim, g.columns)
        rows = max(16, min(4096, ROW_BYTES_PER_BLOCK // (8 * widths)))
        rows = 1 << (rows.bit_length() - 1)
        return BlockProgram(
            self.kernel, g.dim, self.model.n_params, rows, _theta_decls(self.model), self.arrays,
            self.prologue, self.block, self.epilogue, g.columns if g.columns != g.dim else 0,
        )  # fmt: skip

    def row_deps(self, expr: sp.Expr | None) -> list[RNode]:
        if expr is None:
            return []
        return [n for s in expr.free_symbols if isinstance(n := self.g.by_symbol.get(s), RNode)]

    def theta_deps(self, expr: sp.Expr | None) -> list[TNode]:
        if expr is None:
            return []
        return [n for s in expr.free_symbols if isinstance(n := self.g.by_symbol.get(s), TNode)]

    def needed_rows(self, exprs: Iterable[sp.Expr]) -> list[RNode]:
        seen: dict[int, RNode] = {}
        stack = [n for e in exprs for n in self.row_deps(e)]
        while stack:
            r = stack.pop()
            if r.index in seen:
                continue
            seen[r.index] = r
            stack.extend(self.row_deps(r.input))
        return [seen[k] for k in sorted(seen)]

    def needed_theta(self, exprs: list[sp.Expr], rnodes: list[RNode], accs: list[Accumulation]) -> list[TNode]:
        seen: dict[int, TNode] = {}
        stack = [t for e in exprs for t in self.theta_deps(e)]
        for r in rnodes:
            stack.extend(self.theta_deps(r.input))
            if r.P is not None:
                stack.append(r.P)
        stack.extend(a.target for a in accs)
        while stack:
            t = stack.pop()
            if t.index in seen:
                continue
            seen[t.index] = t
            stack.extend(t.args)
        return [seen[k] for k in sorted(seen)]

    def accumulator(self, target: TNode) -> str:
        if target.index not in self.acc:
            self.acc[target.index] = self.fresh("a", ArrayDecl("acc", target.shape))
        return self.acc[target.index]

    def materialize(self, items: list[tuple[sp.Expr, int]]) -> list[str]:
        """Array names holding each (expression, width); the missing ones computed by one elementwise op per
        width (common subexpressions shared)."""
        names: list[str] = []
        pending: dict[int, list[tuple[str, sp.Expr]]] = {}
        for expr, width in items:
            key = (expr, width)
            node = self.g.by_symbol.get(expr) if isinstance(expr, sp.Symbol) else None
            if isinstance(node, RNode) and node.width == width:
                names.append(node.name)
            elif key in self.memo:
                names.append(self.memo[key])
            else:
                name = self.fresh("e", self.row_decl(width))
                self.memo[key] = name
                pending.setdefault(width, []).append((name, expr))
                names.append(name)
        for width in sorted(pending):
            outs = [(name, self.hoist(expr)) for name, expr in pending[width]]
            outs = self.reuse_functions(outs, width)
            table, ins = _table(outs)
            self.block.append(Op("elementwise", tuple(n for n, _ in outs), tuple(ins), (), tuple(table)))
        return names

    def hoist(self, expr: sp.Expr) -> sp.Expr:
        """`expr` with its θ-only parts (4·rowdot(W, W), 1/ν, …) read from prologue arrays, computed once per call
        instead of once per row."""

        def theta_only(e: sp.Expr) -> bool:
            return all(isinstance(self.g.by_symbol.get(sym), TNode) for sym in e.free_symbols)

        def visit(e: sp.Expr) -> sp.Expr:
            if e.is_Atom:
                return e
            if theta_only(e):
                return self.prologue_array(e)
            if isinstance(e, (sp.Add, sp.Mul)):
                fixed = [a for a in e.args if theta_only(a)]
                rest = [visit(a) for a in e.args if not theta_only(a)]
                if len(fixed) > 1 or (fixed and not fixed[0].is_Atom):
                    fixed = [self.prologue_array(e.func(*fixed))]
                return e.func(*fixed, *rest)
            return e.func(*[visit(a) for a in e.args])

        return visit(expr)

    def prologue_array(self, expr: sp.Expr) -> sp.Symbol:
        """A θ-level array computed by the prologue holding `expr` (a θ-only expression), shared by every table."""
        if expr in self.hoisted:
            return self.hoisted[expr]
        shapes = {self.g.by_symbol[sym].shape for sym in expr.free_symbols}  # type: ignore[union-attr]
        shape = max(shapes, key=len, default=())
        name = self.fresh("h", ArrayDecl("theta", shape))
        table, ins = _table([(name, expr)])
        self.prologue.append(Op("elementwise", (name,), tuple(ins), (), tuple(table)))
        symbol = sp.Symbol(name, real=True)
        self.hoisted[expr] = symbol
        return symbol

    def reuse_functions(self, outs: list[tuple[str, sp.Expr]], width: int) -> list[tuple[str, sp.Expr]]:
        """Function calls of the row (tanh(Y + b), ...) computed once per block: a call an earlier table kept in an
        array is read from it; a new one is kept as an extra output of this table for the tables after it."""
        known = {f: sp.Symbol(name, real=True) for (f, w), name in self.functions.items() if w == width}
        outs = [(name, expr.xreplace(known)) for name, expr in outs]
        extra = []
        for _, expr in outs:
            for f in sp.preorder_traversal(expr):
                if isinstance(f, sp.Function) and self.g.is_row(f) and (f, width) not in self.functions:
                    name = self.fresh("f", self.row_decl(width))
                    self.functions[(f, width)] = name
                    extra.append((name, f))
        return outs + extra

    # -- θ level
    def theta_op(self, t: TNode) -> Op:
        a = tuple(x.name for x in t.args)
        if t.kind == "gemm":
            return Op("gemm", (t.name,), a, tuple(int(f) for f in t.flags))
        if t.kind == "ewise":
            assert t.expr is not None
            table, ins = _table([(t.name, t.expr)])
            return Op("elementwise", (t.name,), tuple(ins), (), tuple(table))
        if t.kind == "const":  # a constant vector: its values (sympy floats, ±∞ allowed)
            assert t.expr is not None
            return Op("vector", (t.name,), (), (), tuple(repr(float(v)) for v in t.expr.args))
        return Op(t.kind, (t.name,), a)

    def theta_array(self, shape: tuple[int, ...]) -> str:
        return self.fresh("u", ArrayDecl("theta", shape))

    def emit(self, kind: str, shape: tuple[int, ...], *ins: str, flags: tuple[int, ...] = ()) -> str:
        out = self.theta_array(shape)
        self.epilogue.append(Op(kind, (out,), ins, flags))
        return out

    def ewise(self, shape: tuple[int, ...], expr: sp.Expr) -> str:
        out = self.theta_array(shape)
        table, ins = _table([(out, expr)])
        self.epilogue.append(Op("elementwise", (out,), tuple(ins), (), tuple(table)))
        return out

    def theta_reverse(self, tnodes: list[TNode]) -> None:
        """The epilogue: adjoints of the θ-level graph from the accumulators, into ∇θ."""
        contrib: dict[int, list[str]] = {k: [v] for k, v in self.acc.items()}
        shape_of = {t.name: t.shape for t in tnodes}

        def add(t: TNode, name: str) -> None:
            contrib.setdefault(t.index, []).append(name)

        for t in reversed(tnodes):
            names = contrib.pop(t.index, None)
            if not names:
                continue
            bar = (
                names[0] if len(names) == 1 else self.ewise(t.shape, sp.Add(*[sp.Symbol(n, real=True) for n in names]))
            )
            shape_of[bar] = t.shape
            if t.kind == "param":
                self.epilogue.append(Op("grad", (t.name,), (bar,)))
            elif t.kind == "gemm":
                self.gemm_adjoint(t, bar, add)
            elif t.kind == "transpose":
                add(t.args[0], self.emit("transpose", t.args[0].shape, bar))
            elif t.kind == "rowdot":
                m, n = t.args
                add(m, self.emit("scale_rows", m.shape, bar, n.name))
                add(n, self.emit("scale_rows", n.shape, bar, m.name))
            elif t.kind == "diag":
                add(t.args[0], self.emit("diagmat", t.args[0].shape, bar))
            elif t.kind == "colsum":
                add(t.args[0], self.emit("bcast_rows", t.args[0].shape, bar))
            elif t.kind == "sum":
                add(t.args[0], self.emit("fill", t.args[0].shape, bar))
            elif t.kind == "scale_rows":
                c, m = t.args
                add(c, self.emit("rowdot", c.shape, bar, m.name))
                add(m, self.emit("scale_rows", m.shape, c.name, bar))
            elif t.kind == "diagmat":
                add(t.args[0], self.emit("diag", t.args[0].shape, bar))
            elif t.kind == "ewise":
                assert t.expr is not None
                b = sp.Symbol(bar, real=True)
                for arg in t.args:
                    partial = self.ewise(t.shape, b * t.expr.diff(arg.symbol))
                    if arg.shape != t.shape:
                        partial = self.emit("sum", (), partial)
                    add(arg, partial)
            else:
                raise CodegenError(f"no adjoint for the θ-level operation {t.kind!r}")

    def gemm_adjoint(self, t: TNode, bar: str, add: Any) -> None:
        A, B = t.args
        ta, tb = (int(f) for f in t.flags)
        if len(A.shape) == 2 and len(B.shape) == 2:
            if ta:
                add(A, self.emit("gemm", A.shape, B.name, bar, flags=(tb, 1)))
            else:
                add(A, self.emit("gemm", A.shape, bar, B.name, flags=(0, 1 - tb)))
            if tb:
                add(B, self.emit("gemm", B.shape, bar, A.name, flags=(1, ta)))
            else:
                add(B, self.emit("gemm", B.shape, A.name, bar, flags=(1 - ta, 0)))
        elif len(A.shape) == 2:  # C = op(A) b
            add(A, self.emit("outer", A.shape, B.name, bar) if ta else self.emit("outer", A.shape, bar, B.name))
            add(B, self.emit("gemm", B.shape, A.name, bar, flags=(1 - ta, 0)))
        elif len(B.shape) == 2:  # C = a op(B) = op(B)ᵀ a
            add(A, self.emit("gemm", A.shape, B.name, bar, flags=(tb, 0)))
            add(B, self.emit("outer", B.shape, bar, A.name) if tb else self.emit("outer", B.shape, A.name, bar))
        else:  # a · b
            b = sp.Symbol(bar, real=True)
            add(A, self.ewise(A.shape, b * B.symbol))
            add(B, self.ewise(B.shape, b * A.symbol))


def _merge_sums(accs: list[Accumulation]) -> list[Accumulation]:
    """Column sums (and sums) into the same accumulator from arrays of the same width, as one: Σ(a + b)."""
    out: list[Accumulation] = []
    index: dict[tuple[str, int, int], int] = {}
    for a in accs:
        key = (a.kind, a.target.index, a.a_width)
        if a.kind == "outer":
            out.append(a)
        elif key in index:
            k = index[key]
            out[k] = Accumulation(a.kind, a.target, out[k].a + a.a, a.a_width)
        else:
            index[key] = len(out)
            out.append(a)
    return out


def _theta_decls(model: Any) -> list[ThetaDecl]:
    out = []
    offset = 0
    for leaf in model.param_leaves:
        if not leaf.shape:
            kind = "scalar"
        elif len(leaf.shape) == 1:
            kind = "vector"
        else:
            kind = "symmetric" if leaf.symmetric else "matrix"
        decl = ThetaDecl(leaf.name, offset, kind, leaf.shape)
        out.append(decl)
        offset += decl.size
    return out


def build_block_programs(derivation: StructuredDerivation, model: Any, rewrite: bool = True) -> dict[str, BlockProgram]:
    """The block programs of the kernels value_and_grad, value, per_sample and score; `rewrite`: with the
    algebraic rewrites of symsm/ir/block_passes.py (fewer flops a row, the same values)."""

    programs = {k: _Lowering(derivation, model, k).run() for k in KERNELS}
    return {k: optimize(p) for k, p in programs.items()} if rewrite else programs
