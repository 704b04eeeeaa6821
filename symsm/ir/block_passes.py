"""Algebraic rewrites of block programs (symsm/ir/blocks.py) that cut the block section's flops.

Each pass is a function `BlockProgram -> BlockProgram` (a new program; the argument is left as it was) that
fires wherever its pattern occurs and returns the program unchanged elsewhere; `optimize` runs them in order.
They keep the format's guarantees: every array written once (new arrays get fresh names), accumulators float64,
the epilogue's grad ops as they were (a factored accumulator becomes a θ-level array of the epilogue holding
the same sum).

* `reassociate`: a product of a product with θ-only factors, (Y·op(Q))·op(P) = Y·(op(Q)·op(P)), the θ-only
  product computed once by the prologue (where it costs no more per row: width(Y) ≤ width(Y·op(Q)));
* `quadratic_rowsums`: rowsum((Y·A)⊙(Z·C)) = rowsum(Y⊙(Z·(C·Aᵀ))) where the block already computes Z·(C·Aᵀ)
  (or the same with Y and Z exchanged): d flops instead of a product;
* `gram_accumulations`: Σ_rows Aᵀ(A·op(P)) = (Σ_rows AᵀA)·op(P) (and Σ (A·op(P))ᵀA = op(P)ᵀ·Σ AᵀA) — the Gram
  matrix of A accumulated (acc_gram: symmetric, one triangle computed), the θ-level product added by the
  epilogue (where width(A) ≤ width(A·op(P)));
* `merge_tables`: an elementwise table merged into an earlier one of the same width that reads the same arrays
  (so that an executor runs one table on a product's tiles, not two, and does not store the product);
* `eliminate_dead`: ops (and outputs and table lines of elementwise ops) whose arrays nothing reads, then the
  prologue's unread arrays; `schedule` orders the block section so that every op follows the ops it reads
  (stable: the order is kept where it already is one).

θ-level products are compared by their factors (`theta_factors`: a prologue gemm of θ matrices expanded into a
tuple of (name, transposed)), so a product the prologue already has is reused, not computed again.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .blocks import ArrayDecl, BlockProgram, Op

__all__ = [
    "eliminate_dead",
    "gram_accumulations",
    "merge_tables",
    "optimize",
    "quadratic_rowsums",
    "reassociate",
    "schedule",
    "theta_factors",
]

Factors = tuple[tuple[str, bool], ...]
_ACC_OPS = ("acc_outer", "acc_gram", "acc_colsum", "acc_sum")
_OUTPUT_OPS = ("per_sample", "score")


def _copy(program: BlockProgram) -> BlockProgram:
    return replace(
        program,
        thetas=list(program.thetas),
        arrays=dict(program.arrays),
        prologue=list(program.prologue),
        block=list(program.block),
        epilogue=list(program.epilogue),
    )


def _fresh(program: BlockProgram, prefix: str, decl: ArrayDecl) -> str:
    """A new array name: `prefix` and a number no array of the program has."""
    used = [int(m.group(1)) for n in program.arrays if (m := re.fullmatch(r"[A-Za-z_]+(\d+)", n))]
    name = f"{prefix}{max(used, default=-1) + 1}"
    program.arrays[name] = decl
    return name


def _theta_shape(program: BlockProgram, name: str) -> tuple[int, ...] | None:
    for t in program.thetas:
        if t.name == name:
            return t.shape
    a = program.arrays.get(name)
    return a.shape if a is not None and a.kind == "theta" else None


def _width(program: BlockProgram, name: str) -> int:
    if name == "X":
        return program.dim
    a = program.arrays[name]
    return a.shape[0] if a.kind == "row" else 1


def theta_factors(program: BlockProgram, name: str, transposed: bool = False) -> Factors:
    """The θ matrix `name` (transposed if asked) as a product of factors (name, transposed): a prologue gemm of
    two θ matrices is expanded, anything else is one factor."""
    for op in program.prologue:
        if op.kind == "gemm" and op.outs[0] == name:
            a, b = op.ins
            if len(_theta_shape(program, a) or ()) == 2 and len(_theta_shape(program, b) or ()) == 2:
                f = theta_factors(program, a, bool(op.flags[0])) + theta_factors(program, b, bool(op.flags[1]))
                return tuple((n, not t) for n, t in reversed(f)) if transposed else f
    return ((name, transposed),)


def _theta_product(program: BlockProgram, a: str, ta: bool, b: str, tb: bool) -> str:
    """A prologue array holding op(a)·op(b) (θ matrices): one the prologue has already, else a new gemm."""
    want = theta_factors(program, a, ta) + theta_factors(program, b, tb)
    for op in program.prologue:
        if op.kind == "gemm" and theta_factors(program, op.outs[0]) == want:
            return op.outs[0]
    sa, sb = _theta_shape(program, a), _theta_shape(program, b)
    assert sa is not None and sb is not None
    shape = (sa[1] if ta else sa[0], sb[0] if tb else sb[1])
    out = _fresh(program, "m", ArrayDecl("theta", shape))
    program.prologue.append(Op("gemm", (out,), (a, b), (int(ta), int(tb))))
    return out


def _writers(program: BlockProgram) -> dict[str, Op]:
    return {name: op for op in program.block for name in op.outs if op.kind not in _ACC_OPS}


def _matmul_factors(program: BlockProgram, op: Op) -> Factors:
    """The factors of a block matmul's θ operand, op(P)."""
    return theta_factors(program, op.ins[1], bool(op.flags[0]))


def _is_theta_matrix(program: BlockProgram, name: str) -> bool:
    return len(_theta_shape(program, name) or ()) == 2


# ---------------------------------------------------------------------------------------------- passes
def reassociate(program: BlockProgram) -> BlockProgram:
    """OUT = (Y·op(Q))·op(P) as Y·M, M = op(Q)·op(P) from the prologue, where width(Y) ≤ width(Y·op(Q)) (the row
    product costs no more); repeated until no product of a product is left that qualifies."""
    p = _copy(program)
    changed = True
    while changed:
        changed = False
        writers = _writers(p)
        for k, op in enumerate(p.block):
            if op.kind != "matmul" or not _is_theta_matrix(p, op.ins[1]):
                continue
            inner = writers.get(op.ins[0])
            if inner is None or inner.kind != "matmul" or not _is_theta_matrix(p, inner.ins[1]):
                continue
            y = inner.ins[0]
            if _width(p, y) > _width(p, op.ins[0]):
                continue
            m = _theta_product(p, inner.ins[1], bool(inner.flags[0]), op.ins[1], bool(op.flags[0]))
            p.block[k] = Op("matmul", op.outs, (y, m), (0,))
            changed = True
    return p


def quadratic_rowsums(program: BlockProgram) -> BlockProgram:
    """rowsum(E), E = a⊙c in a table, a = Y·A and c = Z·C block products: rowsum(Y⊙R) where the block already
    computes R = Z·(C·Aᵀ) (or rowsum(Z⊙R), R = Y·(A·Cᵀ)). E and the products are left to `eliminate_dead`."""
    p = _copy(program)
    writers = _writers(p)
    products: dict[tuple[str, Factors], str] = {}  # (row input, factors of the θ operand) → output
    for op in p.block:
        if op.kind == "matmul" and _is_theta_matrix(p, op.ins[1]):
            products.setdefault((op.ins[0], _matmul_factors(p, op)), op.outs[0])
    new_block: list[Op] = []
    for op in p.block:
        found = _quadratic(p, op, writers, products) if op.kind == "rowsum" else None
        if found is None:
            new_block.append(op)
            continue
        y, r = found
        row = y == "X" or p.arrays[y].kind == "row"
        q = _fresh(p, "q", ArrayDecl("row", (_width(p, y),)) if row else ArrayDecl("rowscalar"))
        new_block.append(Op("elementwise", (q,), (y, r), (), (f"{q} mul {y} {r}",)))
        new_block.append(Op("rowsum", op.outs, (q,)))
    p.block = new_block
    return schedule(p)


def _quadratic(
    p: BlockProgram, op: Op, writers: dict[str, Op], products: dict[tuple[str, Factors], str]
) -> tuple[str, str] | None:
    e = op.ins[0]
    table_op = writers.get(e)
    if table_op is None or table_op.kind != "elementwise":
        return None
    line = next((ln.split() for ln in table_op.table if ln.split()[0] == e), None)
    if line is None or line[1] != "mul" or not all(x in table_op.ins for x in line[2:]):
        return None
    a_op, c_op = writers.get(line[2]), writers.get(line[3])
    if a_op is None or c_op is None or a_op.kind != "matmul" or c_op.kind != "matmul":
        return None
    if not (_is_theta_matrix(p, a_op.ins[1]) and _is_theta_matrix(p, c_op.ins[1])):
        return None
    fa, fc = _matmul_factors(p, a_op), _matmul_factors(p, c_op)

    def t(f: Factors) -> Factors:
        return tuple((n, not tr) for n, tr in reversed(f))

    y, z = a_op.ins[0], c_op.ins[0]
    if (r := products.get((z, fc + t(fa)))) is not None and _width(p, r) == _width(p, y):
        return y, r
    if (r := products.get((y, fa + t(fc)))) is not None and _width(p, r) == _width(p, z):
        return z, r
    return None


def gram_accumulations(program: BlockProgram) -> BlockProgram:
    """acc_outer ACC A C with C = A·op(P) a block product (or acc_outer ACC C A): the Gram matrix G = Σ AᵀA
    accumulated instead (one per A), and ACC a θ-level array of the epilogue: G·op(P) (op(P)ᵀ·G), plus what the
    block still accumulates into it. Where width(A) ≤ width(C) (no more flops a row)."""
    p = _copy(program)
    writers = _writers(p)
    grams: dict[str, str] = {}  # A → its Gram accumulator
    terms: dict[str, list[tuple[str, str, bool, bool]]] = {}  # ACC → [(gram, P, flag of P, gram first)]
    new_block: list[Op] = []
    for op in p.block:
        hit = None
        if op.kind == "acc_outer":
            for a, c, first in ((op.ins[0], op.ins[1], True), (op.ins[1], op.ins[0], False)):
                w = writers.get(c)
                if (
                    w is not None
                    and w.kind == "matmul"
                    and w.ins[0] == a
                    and _is_theta_matrix(p, w.ins[1])
                    and _width(p, a) <= _width(p, c)
                ):
                    hit = (a, w, first)
                    break
        if hit is None:
            new_block.append(op)
            continue
        a, w, first = hit
        if a not in grams:
            grams[a] = _fresh(p, "g", ArrayDecl("acc", (_width(p, a), _width(p, a))))
            new_block.append(Op("acc_gram", (grams[a],), (a,)))
        terms.setdefault(op.outs[0], []).append((grams[a], w.ins[1], bool(w.flags[0]), first))
    if not terms:
        return program
    p.block = new_block
    prelude: list[Op] = []
    for acc, items in terms.items():
        decl = p.arrays[acc]
        parts = []
        for gram, pm, tp, first in items:
            out = _fresh(p, "u", ArrayDecl("theta", decl.shape))
            # G·op(P), or op(P)ᵀ·G = P·G (P transposed in C) / Pᵀ·G
            if first:
                prelude.append(Op("gemm", (out,), (gram, pm), (0, int(tp))))
            else:
                prelude.append(Op("gemm", (out,), (pm, gram), (int(not tp), 0)))
            parts.append(out)
        if any(op.kind in _ACC_OPS and op.outs[0] == acc for op in p.block):
            rest = _fresh(p, "a", ArrayDecl("acc", decl.shape))
            p.block = [
                Op(op.kind, (rest,), op.ins) if op.kind in _ACC_OPS and op.outs[0] == acc else op for op in p.block
            ]
            parts.insert(0, rest)
        p.arrays[acc] = ArrayDecl("theta", decl.shape)
        if len(parts) == 1:
            last = prelude.pop()
            prelude.append(Op(last.kind, (acc,), last.ins, last.flags))
            del p.arrays[last.outs[0]]
        else:
            table, total = [], parts[0]
            for k, part in enumerate(parts[1:]):
                dst = acc if k == len(parts) - 2 else f"v{k}"
                table.append(f"{dst} add {total} {part}")
                total = dst
            prelude.append(Op("elementwise", (acc,), tuple(parts), (), tuple(table)))
    p.epilogue = prelude + p.epilogue
    return p


def _table_reads(op: Op) -> set[str]:
    return set(op.ins)


def eliminate_dead(program: BlockProgram) -> BlockProgram:
    """Block ops whose outputs nothing reads removed (accumulations and per-row outputs kept), unread outputs of
    elementwise tables and the lines only they need dropped; then prologue ops nothing reads, and the
    declarations of arrays no op writes."""
    p = _copy(program)
    changed = True
    while changed:
        changed = False
        read = {n for op in p.block + p.epilogue for n in op.ins}
        block: list[Op] = []
        for op in p.block:
            if op.kind in _ACC_OPS or op.kind in _OUTPUT_OPS:
                block.append(op)
                continue
            live = tuple(o for o in op.outs if o in read)
            if not live:
                changed = True
                continue
            if op.kind == "elementwise" and live != op.outs:
                op = _prune_table(op, live)
                changed = True
            block.append(op)
        p.block = block
    read = {n for op in p.block + p.epilogue for n in op.ins}
    prologue: list[Op] = []
    for op in reversed(p.prologue):
        if any(o in read for o in op.outs):
            prologue.append(op)
            read.update(op.ins)
    p.prologue = prologue[::-1]
    written = {n for op in p.prologue + p.block + p.epilogue for n in op.outs}
    p.arrays = {n: a for n, a in p.arrays.items() if n in written}
    return p


def _prune_table(op: Op, outs: tuple[str, ...]) -> Op:
    need = set(outs)
    lines: list[str] = []
    for line in reversed(op.table):
        dst, _kind, *args = line.split()
        if dst in need:
            lines.append(line)
            need.update(a for a in args if not a.startswith("#"))
    ins = tuple(n for n in op.ins if n in need)
    return Op("elementwise", outs, ins, (), tuple(lines[::-1]))


def schedule(program: BlockProgram) -> BlockProgram:
    """The block section in an order where every op follows the ops whose arrays it reads (the first op of the
    current order that can run, each time: an order that is one already is kept)."""
    p = _copy(program)
    written = {n for op in p.block if op.kind not in _ACC_OPS for n in op.outs}
    ready = {"X"}
    pending = list(p.block)
    out: list[Op] = []
    while pending:
        for k, op in enumerate(pending):
            if all(n in ready or n not in written for n in op.ins):
                out.append(pending.pop(k))
                if op.kind not in _ACC_OPS:
                    ready.update(op.outs)
                break
        else:
            raise ValueError("block program with a cycle")
    p.block = out
    return p


def _table_width(program: BlockProgram, op: Op) -> int:
    return max(_width(program, o) for o in op.outs)


def merge_tables(program: BlockProgram) -> BlockProgram:
    """An elementwise op merged into an earlier one of the same width (> 1) when the ops between them write
    nothing it reads: one table, whose inputs are read once (an executor fuses a table with the product before it
    and a row sum after it; two tables reading one product would store it). The later table's temporaries are
    renamed apart; a row sum of its outputs moves with it."""
    p = _copy(program)
    block: list[Op] = []
    for op in p.block:
        if op.kind == "elementwise" and _table_width(p, op) > 1:
            target = None
            for k in range(len(block) - 1, -1, -1):
                prev = block[k]
                if (
                    prev.kind == "elementwise"
                    and _table_width(p, prev) == _table_width(p, op)
                    and set(op.ins) & (set(prev.outs) | set(prev.ins))
                ):
                    target = k
                    break
                if set(prev.outs) & set(op.ins) or prev.kind in _OUTPUT_OPS:
                    break
            if target is not None:
                block[target] = _merge(block[target], op)
                continue
        block.append(op)
    p.block = block
    return schedule(p)


def _merge(first: Op, second: Op) -> Op:
    local = {ln.split()[0] for ln in second.table} - set(second.outs)
    taken = {ln.split()[0] for ln in first.table}
    rename = {}
    for name in sorted(local):
        new, k = f"m_{name}", 0
        while new in taken or new in local:
            new, k = f"m{k}_{name}", k + 1
        rename[name] = new
    lines = [" ".join(rename.get(w, w) for w in ln.split()) for ln in second.table]
    ins = tuple(dict.fromkeys(first.ins + tuple(n for n in second.ins if n not in first.outs)))
    return Op("elementwise", first.outs + second.outs, ins, (), first.table + tuple(lines))


def optimize(program: BlockProgram) -> BlockProgram:
    """The passes in order: reassociate, quadratic_rowsums, gram_accumulations, eliminate_dead, merge_tables."""
    return merge_tables(eliminate_dead(gram_accumulations(quadratic_rowsums(reassociate(program)))))
