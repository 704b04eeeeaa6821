"""Block programs: the kernels of the structured derivation as straight-line programs over blocks of rows.

This is the contract between the structured derivation (symsm/derive/structured.py) and the executors that
run it (the numpy reference executor, symsm/backends/blocks_numpy/; a tiled LLVM executor later). A program
has three sections:

* **prologue** — θ-only arrays, computed once per call from θ (float64; an executor may cast them to the
  kernel's dtype T for the block section). Parameters are arrays by their group names, filled from θ
  (a symmetric matrix with both triangles);
* **block** — run for every block of B rows: X is the block's (B, d) rows in dtype T; arrays are rows
  (B, n), row scalars (B,), θ arrays of the prologue, and float64 accumulators (summed over all blocks);
* **epilogue** — once per call, from the accumulators and the prologue's arrays (float64): the value and
  ∇θ in the flat θ order. An executor divides ``value`` and ``grad`` by N (accumulators hold sums).

Text form (one statement a line, blank lines ignored)::

    symsm-blocks 1
    kernel value_and_grad
    dim 4
    columns 8                       optional: the width D of X (default d; see "Auxiliary columns")
    params 20
    rows_per_block 512
    theta W 0 matrix 4 4            theta NAME OFFSET scalar | vector n | matrix r c | symmetric d
    array r1 row 4                  array NAME row n | rowscalar | acc DIMS… | theta DIMS… (θ-level)
    prologue
    <ops>
    block
    <ops>
    epilogue
    <ops>
    end

Ops (``out`` first; a flag is 0 or 1):

block section
    columns OUT X LO        OUT(B, n) = X[:, LO : LO + n] (n = OUT's width): the data x or an auxiliary input
    matmul OUT A P T        OUT(B, n) = A(B, k) @ Pᵀ if T (P is (n, k)) else A @ P (P is (k, n))
    rowsum OUT A            OUT(B,) = Σ over each row of A
    acc_outer ACC A C       ACC(n, m) += Aᵀ C (float64)
    acc_gram ACC A          ACC(n, n) += Aᵀ A (float64; symmetric: an executor may compute one triangle and
                            mirror it; no other op adds into ACC)
    acc_colsum ACC A        ACC(n,) += Σ over rows of A
    acc_sum ACC A           ACC() += Σ of every entry of A (rows or row scalars)
    per_sample A            the per-row output (B,): the integrand
    score A                 the per-row output (B, d): the score
prologue and epilogue (θ-level, numpy semantics, 1-D operands of gemm as numpy's matmul)
    gemm OUT A B TA TB      OUT = op(A) @ op(B), op = transpose where the flag is 1
    transpose OUT A         rowdot OUT M N (OUTᵢ = Σⱼ MᵢⱼNᵢⱼ)   diag OUT M   colsum OUT M (Σᵢ Mᵢⱼ)
    sum OUT A (all entries) scale_rows OUT c M (diag(c) M)     diagmat OUT c   outer OUT u v
    bcast_rows OUT c        OUT (n, m) with every row c         fill OUT c (OUT's shape, every entry c)
    vector OUT v0 v1 …      OUT = the constant vector (v0, v1, …) (floats, inf and -inf allowed: a box's bounds)
    value ACC               J̃ = ACC / N (epilogue)
    grad NAME A             ∇θ[the group NAME] += A / N (a symmetric group folds A + Aᵀ into i ≤ j)
every section
    elementwise OUT… = IN…  then a table, one instruction a line, closed by ``end``: per element of arrays
                            of one width (rows (B, n); row scalars (B,) and θ vectors (n,) broadcast along
                            rows and columns; θ scalars broadcast), in the three-address format of
                            symsm/backends/llvm/tac.py: ``dst op operand…`` with ops add sub mul div neg
                            sqrt pow copy and ``call <fn>`` (exp log sin cos tan sinh cosh tanh asin acos
                            atan asinh acosh atanh erf erfc log1p expm1; two operands: fmin fmax) and
                            ``step`` (H(u), ½ at 0; fmin, fmax and step only in coordinate weights and
                            their derivatives); a constant is ``#<float>``;
                            temporaries are any other names; each OUT is assigned once.

Guarantees an executor may rely on: every array is written by exactly one op (accumulators excepted: several
acc_* ops add into one), before any op reads it; row arrays and row scalars live for one block only; θ-level
arrays of the prologue are read-only in the block section; a block's rows are independent (only the acc_* ops
combine rows); ``rows_per_block`` is a hint chosen so that a block's row arrays hold about 8 MiB (an executor may
pick its own B, but the partial sums must be combined in an order that depends only on N).

Auxiliary columns. The randomised objectives (sliced, sliced_vr, denoising; symsm/derive/objectives.py) read
per-row inputs drawn on the host (`loss.draws`) as extra columns after the d data columns: X is then (B, D) with
D = ``columns`` > d, and the program reads x and each auxiliary input through ``columns`` ops (X itself only in
``columns`` ops and the host's finiteness check). Sliced: M directions, v_m = columns d + m·d … d + m·d + d − 1;
denoising: K noise draws ε_k, laid out the same way. Without a ``columns`` line X is the (B, d) data.

Only additions to the ops of the brief: row scalars as elementwise operands (broadcast along the row), the
θ-level ops listed, per_sample / score as ops, and acc_gram.

`build_block_programs` lowers the structured derivation and then rewrites each program with the passes of
symsm/ir/block_passes.py (θ-only products re-associated into the prologue, quadratic row sums through an existing
product, Gram accumulations, dead ops, merged tables): the same values with fewer flops a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from ..core.errors import CodegenError
from ..core.functions import BY_CLASS, FUNCTIONS
from ..derive.structured import Accumulation, RNode, StructuredDerivation, TNode

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

KERNELS = ("value_and_grad", "value", "per_sample", "score")
FORMAT = "symsm-blocks 1"
#: functions a table may call: the function table's (symsm/core/functions.py) smooth nodes with a scalar
#: implementation (min and max live in coordinate weights, which structured models do not have)
TABLE_FUNCTIONS = frozenset(f.name for f in FUNCTIONS if f.cls is not None and f.scalar is not None and f.smooth)
BLOCK_OPS = {
    "matmul": 4, "columns": 3, "rowsum": 2, "acc_outer": 3, "acc_gram": 2, "acc_colsum": 2, "acc_sum": 2,
    "per_sample": 1, "score": 1,
}  # fmt: skip
THETA_OPS = {
    "gemm": 5, "transpose": 2, "rowdot": 3, "diag": 2, "colsum": 2, "sum": 2, "scale_rows": 3, "diagmat": 2,
    "outer": 3, "bcast_rows": 2, "fill": 2, "value": 1, "grad": 2, "vector": 2,
}  # fmt: skip
ROW_BYTES_PER_BLOCK = 8 * 2**20  # a block's row arrays hold about this many bytes


@dataclass(frozen=True)
class ThetaDecl:
    """A parameter group: its name, offset in θ, kind ("scalar", "vector", "matrix", "symmetric") and shape."""

    name: str
    offset: int
    kind: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        if self.kind == "symmetric":
            return self.shape[0] * (self.shape[0] + 1) // 2
        n = 1
        for k in self.shape:
            n *= k
        return n


@dataclass(frozen=True)
class ArrayDecl:
    """An array: kind "row" (shape (n,) per row), "rowscalar", "acc" (float64) or "theta" (θ-level)."""

    kind: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Op:
    """One operation: its kind, the arrays it writes and reads, flags, and an elementwise table."""

    kind: str
    outs: tuple[str, ...]
    ins: tuple[str, ...]
    flags: tuple[int, ...] = ()
    table: tuple[str, ...] = ()


@dataclass
class BlockProgram:
    kernel: str
    dim: int
    n_params: int
    rows_per_block: int
    thetas: list[ThetaDecl]
    arrays: dict[str, ArrayDecl]
    prologue: list[Op] = field(default_factory=list)
    block: list[Op] = field(default_factory=list)
    epilogue: list[Op] = field(default_factory=list)
    columns: int = 0  # the width of X: 0 or dim for the data alone, more with auxiliary columns

    @property
    def x_width(self) -> int:
        """The width of the block's rows X (d, or d + the auxiliary columns)."""
        return self.columns or self.dim

    def text(self) -> str:
        lines = [FORMAT, f"kernel {self.kernel}", f"dim {self.dim}", f"params {self.n_params}"]
        if self.x_width != self.dim:
            lines.append(f"columns {self.x_width}")
        lines.append(f"rows_per_block {self.rows_per_block}")
        for t in self.thetas:
            lines.append(
                " ".join(
                    [
                        "theta",
                        t.name,
                        str(t.offset),
                        t.kind,
                        *(map(str, t.shape[:1] if t.kind == "symmetric" else t.shape)),
                    ]
                )
            )
        for name, a in self.arrays.items():
            lines.append(" ".join(["array", name, a.kind, *map(str, a.shape)]))
        for section, ops in (("prologue", self.prologue), ("block", self.block), ("epilogue", self.epilogue)):
            lines.append(section)
            for op in ops:
                lines.extend(_op_lines(op))
        lines.append("end")
        return "\n".join(lines) + "\n"

    def matmuls(self) -> list[Op]:
        """The block section's matrix products (matmul, acc_outer and acc_gram)."""
        return [op for op in self.block if op.kind in ("matmul", "acc_outer", "acc_gram")]


def _op_lines(op: Op) -> list[str]:
    if op.kind == "vector":  # the values are the op's table
        return [" ".join([op.kind, *op.outs, *op.table])]
    if op.kind == "elementwise":
        return [f"elementwise {' '.join(op.outs)} = {' '.join(op.ins)}", *(f"  {t}" for t in op.table), "end"]
    return [" ".join([op.kind, *op.outs, *op.ins, *map(str, op.flags)])]


def parse_program(text: str) -> BlockProgram:
    """The program of a text form (see the module docstring); a malformed text raises `CodegenError`."""
    lines = [ln for ln in (raw.rstrip() for raw in text.splitlines()) if ln.strip()]
    if not lines or lines[0].strip() != FORMAT:
        raise CodegenError(f"a block program starts with {FORMAT!r}")
    header: dict[str, str] = {}
    thetas: list[ThetaDecl] = []
    arrays: dict[str, ArrayDecl] = {}
    sections: dict[str, list[Op]] = {"prologue": [], "block": [], "epilogue": []}
    current: list[Op] | None = None
    k = 1
    try:
        while k < len(lines):
            words = lines[k].split()
            k += 1
            head = words[0]
            if head in ("kernel", "dim", "columns", "params", "rows_per_block") and current is None:
                header[head] = words[1]
            elif head == "theta" and current is None:
                name, offset, kind, *dims = words[1:]
                shape = tuple(int(n) for n in dims)
                thetas.append(ThetaDecl(name, int(offset), kind, shape * 2 if kind == "symmetric" else shape))
            elif head == "array" and current is None:
                arrays[words[1]] = ArrayDecl(words[2], tuple(int(n) for n in words[3:]))
            elif head in sections:
                current = sections[head]
            elif head == "end":
                break
            elif current is None:
                raise CodegenError(f"unexpected line {lines[k - 1]!r} before the sections")
            elif head == "elementwise":
                eq = words.index("=")
                table = []
                while lines[k].strip() != "end":
                    table.append(lines[k].strip())
                    k += 1
                k += 1
                current.append(Op("elementwise", tuple(words[1:eq]), tuple(words[eq + 1 :]), (), tuple(table)))
            elif head in BLOCK_OPS or head in THETA_OPS:
                current.append(_parse_op(head, words[1:]))
            else:
                raise CodegenError(f"unknown operation {head!r}")
        return BlockProgram(
            header["kernel"], int(header["dim"]), int(header["params"]), int(header["rows_per_block"]),
            thetas, arrays, sections["prologue"], sections["block"], sections["epilogue"],
            int(header.get("columns", 0)),
        )  # fmt: skip
    except (IndexError, KeyError, ValueError) as exc:
        raise CodegenError(f"malformed block program near line {k}: {exc}") from None


def _parse_op(kind: str, words: list[str]) -> Op:
    if kind == "matmul":
        return Op(kind, (words[0],), tuple(words[1:3]), (int(words[3]),))
    if kind == "columns":
        return Op(kind, (words[0],), (words[1],), (int(words[2]),))
    if kind == "vector":
        return Op(kind, (words[0],), (), (), tuple(repr(float(w)) for w in words[1:]))
    if kind == "gemm":
        return Op(kind, (words[0],), tuple(words[1:3]), (int(words[3]), int(words[4])))
    if kind in ("per_sample", "score", "value"):
        return Op(kind, (), (words[0],))
    if kind in ("acc_outer", "acc_gram", "acc_colsum", "acc_sum", "grad"):
        return Op(kind, (words[0],), tuple(words[1:]))
    return Op(kind, (words[0],), tuple(words[1:]))


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
    from .block_passes import optimize  # the passes import this module's types

    programs = {k: _Lowering(derivation, model, k).run() for k in KERNELS}
    return {k: optimize(p) for k, p in programs.items()} if rewrite else programs


def flops_per_row(program: BlockProgram) -> dict[str, int]:
    """Floating-point operations per row of the block section: in matrix products (2·n·k each; a Gram matrix
    n(n + 1): one triangle) and in elementwise tables, row sums and accumulations (one per entry and instruction)."""
    width = {n: (a.shape[0] if a.kind == "row" else 1) for n, a in program.arrays.items()}
    width["X"] = program.x_width
    theta = {n: a.shape for n, a in program.arrays.items() if a.kind == "theta"}
    for t in program.thetas:
        theta[t.name] = t.shape
    matmul = other = 0
    for op in program.block:
        if op.kind == "matmul":
            shape = theta[op.ins[1]]
            matmul += 2 * shape[0] * shape[1]
        elif op.kind == "acc_outer":
            matmul += 2 * width[op.ins[0]] * width[op.ins[1]]
        elif op.kind == "acc_gram":
            matmul += width[op.ins[0]] * (width[op.ins[0]] + 1)
        elif op.kind == "elementwise":
            other += len(op.table) * max(width[o] for o in op.outs)
        elif op.kind in ("rowsum", "acc_colsum", "acc_sum"):
            other += width[op.ins[0]]
        elif op.kind == "columns":
            other += width[op.outs[0]]
    return {"matmul": matmul, "other": other, "total": matmul + other}


def data_degree(program: BlockProgram) -> float:
    """An upper bound on the degree in the data of the per-row output of `program` (its per_sample or score op),
    propagated through the block section: X has degree 1, θ-level arrays 0; matrix products and row sums keep
    it, tables add (mul), keep (add, sub, neg, copy, division by a data-free operand, a constant integer power
    multiplies it) or lose track (any other function of the data: ∞). Programs without a per-row output: ∞.
    Degree ≤ 2 is what lets a host replace the rows by moment-matching points (symsm/runtime/moments.py); a program
    with auxiliary columns (randomised objectives: the host draws them per row) gets ∞."""
    inf = float("inf")
    if program.x_width != program.dim:
        return inf
    deg: dict[str, float] = {"X": 1.0}
    for op in program.block:
        if op.kind in ("matmul", "rowsum"):
            deg[op.outs[0]] = deg.get(op.ins[0], 0.0)
        elif op.kind == "elementwise":
            local = {name: deg.get(name, 0.0) for name in op.ins}
            for line in op.table:
                dst, kind, *args = line.split()
                vals = [0.0 if a.startswith("#") else local.get(a, 0.0) for a in args]
                if kind in ("add", "sub"):
                    local[dst] = max(vals)
                elif kind == "mul":
                    local[dst] = vals[0] + vals[1]
                elif kind in ("neg", "copy"):
                    local[dst] = vals[0]
                elif kind == "div":
                    local[dst] = vals[0] if vals[1] == 0 else inf
                elif kind == "pow":
                    e = args[1]
                    exact = e.startswith("#") and float(e[1:]).is_integer() and float(e[1:]) >= 0
                    local[dst] = vals[0] * float(e[1:]) if exact and vals[0] < inf else (0.0 if max(vals) == 0 else inf)
                elif kind == "call":
                    local[dst] = 0.0 if max(vals[1:]) == 0 else inf
                else:  # sqrt and anything else
                    local[dst] = 0.0 if max(vals) == 0 else inf
            for name in op.outs:
                deg[name] = local.get(name, inf)
        elif op.kind in ("per_sample", "score"):
            return deg.get(op.ins[0], 0.0)
    return inf
