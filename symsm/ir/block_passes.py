"""Algebraic rewrites of block programs (symsm/ir/block_format.py) that cut the block section's flops.

Each pass is a function `BlockProgram -> BlockProgram` (a new program; the argument is left as it was) that
fires wherever its pattern occurs and returns the program unchanged elsewhere; `optimize` runs them in order.
They keep the format's guarantees: every array written once (new arrays get fresh names), accumulators float64,
the epilogue's grad ops as they were (a factored accumulator becomes a θ-level array of the epilogue holding
the same sum).

* `distribute_products`: (Σ cᵢAᵢ)·op(P) = Σ cᵢ(Aᵢ·op(P)) where the block has all those products but one (so
  that the passes after it see through a linear combination such as the score e0·W − X);
* `reassociate`: a product of a product with θ-only factors, (Y·op(Q))·op(P) = Y·(op(Q)·op(P)), the θ-only
  product computed once by the prologue (where it costs no more per row: width(Y) ≤ width(Y·op(Q)));
* `quadratic_rowsums`: rowsum((Y·A)⊙(Z·C)) = rowsum(Y⊙(Z·(C·Aᵀ))) where the block already computes Z·(C·Aᵀ)
  (or the same with Y and Z exchanged; rowsum((Y·A)⊙V) = rowsum(Y⊙(V·Aᵀ)); linear combinations expanded):
  d flops instead of a product;
* `gram_accumulations`: Σ_rows Aᵀ(A·op(P)) = (Σ_rows AᵀA)·op(P) (and Σ (A·op(P))ᵀA = op(P)ᵀ·Σ AᵀA) — the Gram
  matrix of A accumulated (acc_gram: symmetric, one triangle computed), the θ-level product added by the
  epilogue; linear combinations expanded, the other outer products of the accumulator grouped (where the
  program's product flops go down);
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
from collections.abc import Sequence
from dataclasses import replace

from .block_format import ArrayDecl, BlockProgram, Op, flops_per_row

__all__ = [
    "distribute_products",
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
        return program.x_width
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


# ---------------------------------------------------------------------------------------------- linear forms
Form = dict[str, float]


def _table_forms(op: Op) -> dict[str, Form | None]:
    """Each name of an elementwise table as a linear form over the table's inputs ({input: coefficient}), None
    where it is not one (a product of two inputs, a function, a constant term)."""
    forms: dict[str, Form | None] = {name: {name: 1.0} for name in op.ins}

    def value(arg: str) -> Form | float | None:
        return float(arg[1:]) if arg.startswith("#") else forms.get(arg)

    def scaled(f: Form, c: float) -> Form:
        return {k: c * v for k, v in f.items()}

    for line in op.table:
        dst, kind, *args = line.split()
        vals = [value(a) for a in args]
        out: Form | None = None
        if kind in ("add", "sub") and all(isinstance(v, dict) for v in vals):
            a, b = vals
            assert isinstance(a, dict) and isinstance(b, dict)
            out = dict(a)
            for k, v in b.items():
                out[k] = out.get(k, 0.0) + (v if kind == "add" else -v)
        elif kind in ("neg", "copy") and isinstance(vals[0], dict):
            out = scaled(vals[0], -1.0 if kind == "neg" else 1.0)
        elif kind == "mul" and len(vals) == 2:
            a, b = vals
            if isinstance(a, dict) and isinstance(b, float):
                out = scaled(a, b)
            elif isinstance(b, dict) and isinstance(a, float):
                out = scaled(b, a)
        elif kind == "div" and isinstance(vals[0], dict) and isinstance(vals[1], float) and vals[1] != 0:
            out = scaled(vals[0], 1.0 / vals[1])
        forms[dst] = {k: v for k, v in out.items() if v != 0} if out is not None else None
    return forms


def _form(p: BlockProgram, writers: dict[str, Op], name: str) -> Form:
    """The array `name` as a linear form over row arrays of its width (itself where it is no linear combination
    of such arrays)."""
    op = writers.get(name)
    if op is not None and op.kind == "elementwise":
        form = _table_forms(op).get(name)
        if form and all(_is_row(p, k) and _width(p, k) == _width(p, name) for k in form):
            return form
    return {name: 1.0}


def _is_row(p: BlockProgram, name: str) -> bool:
    return name == "X" or (name in p.arrays and p.arrays[name].kind == "row")


def _sum_table(out: str, terms: Sequence[tuple[float, Sequence[str]]]) -> Op:
    """The elementwise op out = Σ coefficient · Π names."""
    lines: list[str] = []
    ins: dict[str, None] = {}
    total = ""
    for k, (c, names) in enumerate(terms):
        ins.update(dict.fromkeys(names))
        term = names[0]
        for j, n in enumerate(names[1:]):
            lines.append(f"_p{k}_{j} mul {term} {n}")
            term = f"_p{k}_{j}"
        sign = 1.0
        if total and c < 0:
            c, sign = -c, -1.0
        if c != 1.0:
            lines.append(f"_s{k} mul {term} #{c!r}")
            term = f"_s{k}"
        if total:
            lines.append(f"_a{k} {'add' if sign > 0 else 'sub'} {total} {term}")
            term = f"_a{k}"
        total = term
    if lines and lines[-1].split()[0] == total:
        lines[-1] = " ".join([out, *lines[-1].split()[1:]])
    else:
        lines.append(f"{out} copy {total}")
    return Op("elementwise", (out,), tuple(ins), (), tuple(lines))


def _t(f: Factors) -> Factors:
    return tuple((n, not tr) for n, tr in reversed(f))


def _products(p: BlockProgram) -> dict[tuple[str, Factors], str]:
    """The block's products: (row input, factors of the θ operand) → output."""
    out: dict[tuple[str, Factors], str] = {}
    for op in p.block:
        if op.kind == "matmul" and _is_theta_matrix(p, op.ins[1]):
            out.setdefault((op.ins[0], _matmul_factors(p, op)), op.outs[0])
    return out


def _row_decl(p: BlockProgram, like: str) -> ArrayDecl:
    return ArrayDecl("row", (_width(p, like),)) if _is_row(p, like) else ArrayDecl("rowscalar")


# ---------------------------------------------------------------------------------------------- passes (linear)
def distribute_products(program: BlockProgram) -> BlockProgram:
    """R = E·op(P) with E = Σ cᵢAᵢ a linear combination (in a table) of row arrays, as Σ cᵢ(Aᵢ·op(P)) where the
    block already computes every Aᵢ·op(P) but at most one (computed instead of E·op(P): the same flops). With
    `reassociate` after it, e.g. (e0·W − X)·Wᵀ = e0·(W·Wᵀ) − X·Wᵀ, the second a product the block has."""
    p = _copy(program)
    writers = _writers(p)
    products = _products(p)
    new_block: list[Op] = []
    for op in p.block:
        form = _form(p, writers, op.ins[0]) if op.kind == "matmul" and _is_theta_matrix(p, op.ins[1]) else {}
        if len(form) < 2:
            new_block.append(op)
            continue
        f = _matmul_factors(p, op)
        missing = [a for a in form if (a, f) not in products]
        if len(missing) > 1:
            new_block.append(op)
            continue
        terms = []
        for a, c in form.items():
            if (a, f) not in products:
                prod = _fresh(p, "n", ArrayDecl("row", (_width(p, op.outs[0]),)))
                new_block.append(Op("matmul", (prod,), (a, op.ins[1]), op.flags))
                products[(a, f)] = prod
            terms.append((c, (products[(a, f)],)))
        new_block.append(_sum_table(op.outs[0], terms))
    p.block = new_block
    return schedule(p)


def quadratic_rowsums(program: BlockProgram) -> BlockProgram:
    """rowsum(E), E = u⊙v in a table with u, v linear combinations of row arrays, expanded into terms
    rowsum(U⊙V), and each term with a block product U = Y·A as rowsum(Y⊙R), R = V·Aᵀ (V a product Z·C:
    Z·(C·Aᵀ)) a product the block already computes (or the same with U and V exchanged): d flops instead of a
    product a row once nothing else reads U. Where some such term finds no product, the row sum is left alone.
    E and the products are left to `eliminate_dead`."""
    p = _copy(program)
    writers = _writers(p)
    products = _products(p)
    new_block: list[Op] = []
    for op in p.block:
        terms = _quadratic(p, op, writers, products) if op.kind == "rowsum" else None
        if terms is None:
            new_block.append(op)
            continue
        by_width: dict[int, list[tuple[float, tuple[str, ...]]]] = {}
        for c, y, r in terms:
            by_width.setdefault(_width(p, y), []).append((c, (y, r)))
        sums = []
        for width_terms in by_width.values():
            y = width_terms[0][1][0]
            q = _fresh(p, "q", _row_decl(p, y))
            new_block.append(_sum_table(q, width_terms))
            s = op.outs[0] if len(by_width) == 1 else _fresh(p, "s", ArrayDecl("rowscalar"))
            new_block.append(Op("rowsum", (s,), (q,)))
            sums.append(s)
        if len(sums) > 1:
            new_block.append(_sum_table(op.outs[0], [(1.0, (s,)) for s in sums]))
    p.block = new_block
    return schedule(p)


def _quadratic(
    p: BlockProgram, op: Op, writers: dict[str, Op], products: dict[tuple[str, Factors], str]
) -> list[tuple[float, str, str]] | None:
    e = op.ins[0]
    table_op = writers.get(e)
    if table_op is None or table_op.kind != "elementwise" or not _is_row(p, e):
        return None
    line = next((ln.split() for ln in table_op.table if ln.split()[0] == e), None)
    if line is None or line[1] != "mul" or any(a.startswith("#") for a in line[2:]):
        return None
    forms = _table_forms(table_op)
    fu, fv = forms.get(line[2]), forms.get(line[3])
    if not fu or not fv:
        return None
    w = _width(p, e)
    if not all(_is_row(p, k) and _width(p, k) == w for k in (*fu, *fv)):
        return None
    factors = {}
    for name in (*fu, *fv):
        mm = writers.get(name)
        if mm is not None and mm.kind == "matmul" and _is_theta_matrix(p, mm.ins[1]):
            factors[name] = (mm.ins[0], _matmul_factors(p, mm))
    pairs: dict[tuple[str, str], float] = {}
    for u, cu in fu.items():
        for v, cv in fv.items():
            key = (u, v) if (u, v) in pairs or (v, u) not in pairs else (v, u)
            pairs[key] = pairs.get(key, 0.0) + cu * cv
    terms: list[tuple[float, str, str]] = []
    for (u, v), c in pairs.items():
        if c == 0:
            continue
        if u not in factors and v not in factors:
            terms.append((c, u, v))
            continue
        found = None
        for a, b in ((u, v), (v, u)):
            if a not in factors:
                continue
            y, fa = factors[a]
            if b in factors:  # rowsum((Y·A)⊙(Z·C)) = rowsum(Y⊙(Z·(C·Aᵀ)))
                z, fb = factors[b]
                r = products.get((z, fb + _t(fa)))
            else:  # rowsum((Y·A)⊙V) = rowsum(Y⊙(V·Aᵀ))
                r = products.get((b, _t(fa)))
            if r is not None and _width(p, r) == _width(p, y):
                found = (c, y, r)
                break
        if found is None:
            return None
        terms.append(found)
    if not any(u in factors or v in factors for u, v in pairs):
        return None
    return terms


def gram_accumulations(program: BlockProgram) -> BlockProgram:
    """The outer products of each accumulator, their operands' linear combinations (in tables) expanded into
    terms c·Lᵀ·R; a term with R = L·op(P) a block product (or L = R·op(P)) as the Gram matrix G = Σ LᵀL
    (acc_gram: one per L, symmetric) times op(P) in the epilogue (op(P)ᵀ·G); the other terms grouped by R into
    one outer product (Σ cL)ᵀR each. The accumulator becomes a θ-level array of the epilogue: the θ-level
    products plus what the block still accumulates (a new accumulator). Kept for each accumulator where the
    program then has fewer flops a row in products, once the arrays nothing reads are gone (`eliminate_dead`)."""
    p = program
    accs = dict.fromkeys(op.outs[0] for op in program.block if op.kind == "acc_outer")
    for acc in accs:
        candidate = _gram_one(p, acc)
        if candidate is not None and _cost(candidate) < _cost(p):
            p = candidate
    return p


def _cost(p: BlockProgram) -> tuple[int, int]:
    f = flops_per_row(eliminate_dead(p))
    return f["matmul"], f["total"]


def _gram_one(program: BlockProgram, acc: str) -> BlockProgram | None:
    p = _copy(program)
    writers = _writers(p)
    ops = [op for op in p.block if op.kind == "acc_outer" and op.outs[0] == acc]
    if any(op.kind in _ACC_OPS and op.kind != "acc_outer" and op.outs[0] == acc for op in p.block):
        return None
    grams = {op.ins[0]: op.outs[0] for op in p.block if op.kind == "acc_gram"}  # L → its Gram accumulator
    terms: list[tuple[float, str, str]] = []
    for op in ops:
        fl, fr = _form(p, writers, op.ins[0]), _form(p, writers, op.ins[1])
        terms += [(cl * cr, lft, rgt) for lft, cl in fl.items() for rgt, cr in fr.items()]
    gram_terms: list[tuple[float, str, str, bool, bool]] = []  # (c, L, P, flag of P, gram first)
    rest: dict[str, list[tuple[float, str]]] = {}
    for c, lft, rgt in terms:
        hit = None
        for a, b, first in ((lft, rgt, True), (rgt, lft, False)):
            w = writers.get(b)
            if w is not None and w.kind == "matmul" and w.ins[0] == a and _is_theta_matrix(p, w.ins[1]):
                hit = (c, a, w.ins[1], bool(w.flags[0]), first)
                break
        if hit is not None:
            gram_terms.append(hit)
        else:
            rest.setdefault(rgt, []).append((c, lft))
    if not gram_terms:
        return None
    decl = p.arrays[acc]
    block_ops: list[Op] = []
    prelude: list[Op] = []
    parts: list[tuple[float, str]] = []
    if rest:
        partial = _fresh(p, "a", ArrayDecl("acc", decl.shape))
        for r, ls in rest.items():
            if len(ls) == 1 and ls[0][0] == 1.0:
                left = ls[0][1]
            else:
                left = _fresh(p, "o", _row_decl(p, ls[0][1]))
                block_ops.append(_sum_table(left, [(c, (lft,)) for c, lft in ls]))
            block_ops.append(Op("acc_outer", (partial,), (left, r)))
        parts.append((1.0, partial))
    for c, a, pm, tp, first in gram_terms:
        if a not in grams:
            grams[a] = _fresh(p, "g", ArrayDecl("acc", (_width(p, a), _width(p, a))))
            block_ops.append(Op("acc_gram", (grams[a],), (a,)))
        out = _fresh(p, "u", ArrayDecl("theta", decl.shape))
        if first:  # G·op(P)
            prelude.append(Op("gemm", (out,), (grams[a], pm), (0, int(tp))))
        else:  # op(P)ᵀ·G
            prelude.append(Op("gemm", (out,), (pm, grams[a]), (int(not tp), 0)))
        parts.append((c, out))
    p.arrays[acc] = ArrayDecl("theta", decl.shape)
    prelude.append(_sum_table(acc, [(c, (n,)) for c, n in parts]))
    k = p.block.index(ops[0])
    p.block = [op for op in p.block[:k] if op not in ops] + block_ops + [op for op in p.block[k:] if op not in ops]
    p.epilogue = prelude + p.epilogue
    return schedule(p)


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
    """An elementwise op merged into an earlier one of the same width (> 1) that reads or writes a row array it
    reads, when the ops between them write nothing it reads: one table, whose inputs are read once (an executor
    fuses a table with the product before it and a row sum after it; two tables reading one product would store
    it). The later table's temporaries are renamed apart; a row sum of its outputs moves with it."""
    p = _copy(program)
    block: list[Op] = []
    for op in p.block:
        if op.kind == "elementwise" and _table_width(p, op) > 1:
            target = None
            for k in range(len(block) - 1, -1, -1):
                prev = block[k]
                shared = {n for n in set(op.ins) & (set(prev.outs) | set(prev.ins)) if _is_row(p, n)}
                if prev.kind == "elementwise" and _table_width(p, prev) == _table_width(p, op) and shared:
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
    """The passes in order: distribute_products (where it pays), reassociate, quadratic_rowsums,
    gram_accumulations, eliminate_dead, merge_tables."""
    plain = _rest(reassociate(program))
    distributed = _rest(reassociate(distribute_products(program)))
    # distributing a product pays only where the passes after it remove what it read
    return distributed if _cost(distributed) < _cost(plain) else plain


def _rest(program: BlockProgram) -> BlockProgram:
    return merge_tables(eliminate_dead(gram_accumulations(quadratic_rowsums(program))))
