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

symsm/ir/blocks.py lowers the structured derivation into these programs; symsm/ir/block_passes.py rewrites them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import CodegenError
from ..core.functions import FUNCTIONS

__all__ = [
    "BLOCK_OPS",
    "FORMAT",
    "KERNELS",
    "ROW_BYTES_PER_BLOCK",
    "TABLE_FUNCTIONS",
    "THETA_OPS",
    "ArrayDecl",
    "BlockProgram",
    "Op",
    "ThetaDecl",
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
