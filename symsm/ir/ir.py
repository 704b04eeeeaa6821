"""Kernel IR: the per-call / per-sample / after-reduction structure of a score-matching kernel.

The passes, each small and testable alone:

1. `hoist_invariants` — replace maximal θ-only subexpressions by symbols computed once per call.
2. sympy `cse` — common subexpressions of the per-sample expressions.
3. `Tape` — flatten into SSA assignments, one operation each (hash-consed, so equal operations are
   computed once).
4. `Tape.reverse` — reverse accumulation over the tape: the θ-gradient of the per-sample integrand
   costs a small multiple of the integrand itself, whatever P is (no P separate `diff` calls).
5. `_split_invariant` — loop-invariant code motion: assignments that do not depend on the data move
   to the per-call prologue; per-sample adjoints that do not depend on the data are multiplied by N
   after the loop instead of being summed.
6. Dead-code elimination and `_inline_single_use` (readable output: temporaries used once are
   folded back into their single user, within a section).

Sums over samples of adjoints of θ-only temporaries are chained back to θ once per call, after the
reduction (the epilogue), since ∂T/∂θ does not depend on the sample.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import sympy as sp

from ..core.errors import CodegenError
from ..core.functions import BY_CLASS, derivative, derivatives

__all__ = ["Assign", "KernelIR", "build_forward_ir", "build_value_and_grad_ir", "data_columns", "hoist_invariants"]


@dataclass(frozen=True)
class Assign:
    target: sp.Symbol
    expr: sp.Expr


@dataclass
class KernelIR:
    """A kernel as straight-line sections around one loop over samples.

    prologue  : θ-only assignments, once per call (may read θ symbols)
    body      : per-sample assignments (may read θ, prologue and data symbols)
    sums      : per-sample expressions summed over samples, in order (accumulators)
    outputs   : per-sample expressions written out per sample (per_sample, score kernels)
    epilogue  : after the reduction; reads prologue symbols, `sum_symbols` and `n_symbol`
    results   : final expressions (after the epilogue), e.g. [Σ value, Σ ∂θ_1, ...]
    """

    theta: tuple[sp.Symbol, ...]
    data: tuple[sp.Symbol, ...]
    prologue: list[Assign] = field(default_factory=list)
    body: list[Assign] = field(default_factory=list)
    sums: list[sp.Expr] = field(default_factory=list)
    outputs: list[sp.Expr] = field(default_factory=list)
    epilogue: list[Assign] = field(default_factory=list)
    results: list[sp.Expr] = field(default_factory=list)
    sum_symbols: tuple[sp.Symbol, ...] = ()
    n_symbol: sp.Symbol = field(default_factory=lambda: sp.Dummy("n_samples"))
    # Set only by `split_products`: sums of products u·v of per-sample atoms, accumulated separately
    # (a backend can tile them like a matrix product); product_symbols name their totals.
    products: list[tuple[sp.Expr, sp.Expr]] = field(default_factory=list)
    product_symbols: tuple[sp.Symbol, ...] = ()

    def operation_count(self) -> dict[str, int]:
        """Rough operation counts per section (for headers and the roofline's flop bound)."""
        return {
            "prologue": sum(_count_ops(a.expr) for a in self.prologue),
            "per_sample": sum(_count_ops(a.expr) for a in self.body)
            + sum(_count_ops(e) + 1 for e in self.sums)
            + len(self.outputs),
            "epilogue": sum(_count_ops(a.expr) for a in self.epilogue),
        }


# ---------------------------------------------------------------------- pass 1: hoisting


def hoist_invariants(
    exprs: Sequence[sp.Expr], variant: set[sp.Symbol], names: Iterable[sp.Symbol]
) -> tuple[list[Assign], list[sp.Expr]]:
    """Replace maximal subexpressions free of the `variant` (data) symbols by new symbols.

    Within an Add or Mul whose operands are mixed, the invariant operands are grouped into one hoisted
    term (a + x + b → T + x with T = a + b). Returns the hoisted assignments and the rewritten exprs.
    """
    names = iter(names)
    table: dict[sp.Expr, sp.Symbol] = {}
    hoisted: list[Assign] = []
    memo: dict[sp.Basic, sp.Basic] = {}

    def depends(e: sp.Basic) -> bool:
        return bool(e.free_symbols & variant)

    def name_for(e: sp.Expr) -> sp.Basic:
        if e.is_Atom:
            return e
        if e not in table:
            sym = next(names)
            table[e] = sym
            hoisted.append(Assign(sym, e))
        return table[e]

    def visit(e: sp.Basic) -> sp.Basic:
        if e in memo:
            return memo[e]
        if e.is_Atom or not depends(e):
            out = e
        elif isinstance(e, sp.Add):
            # Σ_j c_j·v + ... with θ-only c_j and the same data-dependent v → (Σ_j c_j)·v: one product per
            # distinct v per sample instead of one per term (e.g. Σ_i −W_ki²·g_k → g_k·(−Σ_i W_ki²)).
            inv = [a for a in e.args if not depends(a)]
            by_factor: dict[sp.Expr, list[sp.Expr]] = {}
            for term in (a for a in e.args if depends(a)):
                factors = sp.Mul.make_args(term)
                coeff = [f for f in factors if not depends(f)]
                rest = sp.Mul(*[f for f in factors if depends(f)])
                by_factor.setdefault(rest, []).append(sp.Mul(*coeff))
            var = []
            for rest, coeffs in by_factor.items():
                total = sp.Add(*coeffs)
                if not total.is_Atom:
                    total = name_for(total)
                var.append(total * visit(rest))
            if len(inv) > 1 or (inv and not inv[0].is_Atom):
                inv = [name_for(sp.Add(*inv))]
            out = sp.Add(*inv, *var)
        elif isinstance(e, sp.Mul):
            inv = [a for a in e.args if not depends(a)]
            var = [visit(a) for a in e.args if depends(a)]
            if len(inv) > 1 or (inv and not inv[0].is_Atom):
                inv = [name_for(sp.Mul(*inv))]
            out = sp.Mul(*inv, *var)
        else:
            out = e.func(*[a if a.is_Atom or depends(a) else name_for(a) for a in (visit(a) for a in e.args)])
        memo[e] = out
        return out

    new = []
    for e in exprs:
        e2 = visit(e)
        new.append(e2 if depends(e2) else name_for(e2))
    return hoisted, new


# ---------------------------------------------------------------------- pass 3: the tape


class Tape:
    """SSA assignments with one operation each, hash-consed.

    An operation is a function call, a power, an Add of atoms with numeric coefficients, or a Mul of
    atoms with a numeric coefficient and atoms in the denominator (so a/b stays one division).
    """

    def __init__(self, prefix: str, start: int = 0) -> None:
        self.ops: list[Assign] = []
        self.defs: dict[sp.Symbol, sp.Expr] = {}
        self._table: dict[sp.Expr, sp.Symbol] = {}
        self._names = (sp.Dummy(f"{prefix}{k}") for k in itertools.count(start))

    def emit(self, expr: sp.Expr) -> sp.Expr:
        """Append the operations of `expr`; return the atom (symbol or number) holding its value."""
        if expr.is_Atom:
            return expr
        if isinstance(expr, sp.Add):
            args = []
            for term in expr.args:
                coeff, rest = term.as_coeff_Mul()
                if coeff != 1 and coeff.is_Number:
                    args.append(coeff * self.emit(rest))
                else:
                    args.append(self.emit(term))
            op = sp.Add(*args)
        elif isinstance(expr, sp.Mul):
            args = []
            for factor in expr.args:
                base, exp = factor.as_base_exp()
                if exp.is_Integer and exp < 0 and not base.is_Number:
                    b = self.emit(base)
                    args.append(sp.Pow(b, exp) if exp == -1 else sp.Pow(self.emit(b ** (-exp)), -1))
                elif factor.is_Number:
                    args.append(factor)
                else:
                    args.append(self.emit(factor))
            op = sp.Mul(*args)
        elif isinstance(expr, sp.Pow):
            if expr.exp.is_Integer and expr.exp < 0:
                op = sp.Pow(self.emit(expr.base ** (-expr.exp)), -1)
            else:
                op = sp.Pow(self.emit(expr.base), expr.exp if expr.exp.is_Number else self.emit(expr.exp))
        elif isinstance(expr, (sp.Function, sp.Min, sp.Max)):
            op = expr.func(*[self.emit(a) for a in expr.args])
        else:
            raise CodegenError(f"cannot generate code for {type(expr).__name__}: {expr}")
        return self._intern(op)

    def _intern(self, op: sp.Expr) -> sp.Expr:
        if op.is_Atom:
            return op
        if op not in self._table:
            sym = next(self._names)
            self._table[op] = sym
            self.defs[sym] = op
            self.ops.append(Assign(sym, op))
        return self._table[op]

    def reverse(
        self, output: sp.Expr, wrt: Sequence[sp.Symbol], through: Sequence[Assign] = ()
    ) -> dict[sp.Symbol, sp.Expr]:
        """Emit the adjoint computation of `output` (an atom on this tape); return adjoint atoms of `wrt`.

        `through` are assignments made before this tape (the θ-only prologue) whose adjoints are chained
        on to their own inputs here, per sample, instead of being returned.
        """
        contributions: dict[sp.Symbol, list[sp.Expr]] = {}
        if isinstance(output, sp.Symbol):
            contributions[output] = [sp.Integer(1)]
        passable = set(wrt) | set(self.defs) | {a.target for a in through}
        for assign in [*reversed(list(self.ops)), *reversed(through)]:
            parts = contributions.pop(assign.target, None)
            if not parts:
                continue
            bar = self.emit(sp.Add(*parts))
            for arg, local in _local_derivatives(assign.target, assign.expr):
                if arg in passable:
                    contributions.setdefault(arg, []).append(self.emit(bar * local))
        return {w: self.emit(sp.Add(*contributions.get(w, [sp.Integer(0)]))) for w in wrt}


def _local_derivatives(target: sp.Symbol, op: sp.Expr) -> list[tuple[sp.Symbol, sp.Expr]]:
    """∂op/∂a for every symbol a the operation reads, in terms of its own result `target` where cheap."""
    out = []
    for arg in sorted(op.free_symbols, key=str):
        if isinstance(op, sp.Pow) and not op.exp.is_Integer and op.exp.is_Number and arg == op.base:
            local = op.exp * target / arg  # d a**r = r a**r / a: no second root or power
        elif (isinstance(op, sp.Function) and len(op.args) == 1) or isinstance(op, sp.Heaviside):
            inner = op.args[0]  # (Heaviside's second argument is its value at 0, a number)
            local = _function_derivative(op, target) * (1 if inner == arg else sp.diff(inner, arg))
        elif isinstance(op, (sp.Min, sp.Max)) and len(op.args) == 2 and all(a.is_Atom for a in op.args):
            first, second = op.args
            rules = derivatives(BY_CLASS[op.func], first, second, target)  # the table's rule: H(0) = ½ at a tie
            local = sum((r for a, r in zip(op.args, rules, strict=True) if a == arg), sp.Integer(0))
        else:
            local = sp.diff(op, arg)
        out.append((arg, local))
    return out


def _function_derivative(op: sp.Function, target: sp.Symbol) -> sp.Expr:
    """d op/d its argument by the function table's rule (in terms of `target` = op's value where cheap); a
    function outside the table (the model's checks keep them out of kernels) gets sympy's own, as before."""
    function = BY_CLASS.get(op.func)
    return derivative(function, op.args[0], target) if function else sp.diff(op, op.args[0])


# ---------------------------------------------------------------------- building kernels


def _cse(exprs: Sequence[sp.Expr]) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
    names = sp.numbered_symbols("cse_", cls=sp.Dummy)
    replacements, reduced = sp.cse(list(exprs), symbols=names, order="none")
    return replacements, reduced


def data_columns(irs: dict[str, KernelIR]) -> tuple[sp.Symbol, ...]:
    """The data tuple every kernel of one generated module reads: X's columns in order — the model's coordinates,
    then any auxiliary per-row inputs of the objective (the same for all kernels of a module)."""
    columns = {ir.data for ir in irs.values()}
    if len(columns) != 1:
        raise ValueError("the kernels of one module must read the same data columns")
    return columns.pop()


def _prepare(exprs: Sequence[sp.Expr], data: set[sp.Symbol]) -> tuple[Tape, Tape, list[sp.Expr]]:
    """Passes 1–3: hoist θ-only parts, CSE, and put both sides on tapes. Returns (prologue, body, atoms)."""
    hoisted, rewritten = hoist_invariants(exprs, data, sp.numbered_symbols("hoist_", cls=sp.Dummy))
    prologue = Tape("c")
    mapping: dict[sp.Symbol, sp.Expr] = {}
    for a in hoisted:
        mapping[a.target] = prologue.emit(a.expr.xreplace(mapping))
    replacements, reduced = _cse([e.xreplace(mapping) for e in rewritten])
    body = Tape("t")
    for sym, e in replacements:
        mapping[sym] = body.emit(e.xreplace(mapping))
    atoms = [body.emit(e.xreplace(mapping)) for e in reduced]
    return prologue, body, atoms


def build_forward_ir(
    exprs: Sequence[sp.Expr], theta: Sequence[sp.Symbol], data: Sequence[sp.Symbol], *, mode: str
) -> KernelIR:
    """IR for forward-only kernels: mode "sum" (Σ over samples) or "per_sample" (written out per row)."""
    prologue, body, atoms = _prepare(exprs, set(data))
    ir = KernelIR(tuple(theta), tuple(data))
    if mode == "sum":
        ir.sums = list(atoms)
        ir.sum_symbols = tuple(sp.Dummy(f"sum_{k}") for k in range(len(atoms)))
        ir.results = list(ir.sum_symbols)
    elif mode == "per_sample":
        ir.outputs = list(atoms)
    else:
        raise ValueError(f"mode must be 'sum' or 'per_sample', got {mode!r}")
    return _finish(ir, prologue, body)


def build_value_and_grad_ir(integrand: sp.Expr, theta: Sequence[sp.Symbol], data: Sequence[sp.Symbol]) -> KernelIR:
    """IR that sums the integrand and its θ-gradient over samples in one pass."""
    prologue, body, (value,) = _prepare([integrand], set(data))
    # Per-sample adjoints are needed for every θ-level symbol the body reads: θ itself and hoisted temps.
    # A hoisted temp whose local derivatives are plain numbers (−W, 2μ, a − b) is chained on to its inputs
    # per sample at no cost (the adjoint just changes sign or scale); any other gets an accumulator of its
    # own — shared with every equal per-sample sum — and is chained back to θ once, after the loop
    # (W² contributes 2W·Σ_t adj instead of a multiply per sample).
    chained = [a for a in prologue.ops if _linear_with_number_coefficients(a)]
    chained_targets = {a.target for a in chained}
    boundary = [*theta, *(a.target for a in prologue.ops if a.target not in chained_targets)]
    adjoints = body.reverse(value, boundary, through=chained)
    ir = KernelIR(tuple(theta), tuple(data))
    ir.sums = [value, *(adjoints[b] for b in boundary)]
    ir.sum_symbols = tuple(sp.Dummy(f"sum_{k}") for k in range(len(ir.sums)))
    ir = _finish(ir, prologue, body, finish_prologue=False)
    # Epilogue: chain the summed boundary adjoints back to θ through the θ-only prologue, as taped (before
    # any inlining, so every accumulated temporary is still an assignment of its own).
    seeds = dict(zip(boundary, ir.results[1:], strict=True))
    epi = Tape("e")
    contributions: dict[sp.Symbol, list[sp.Expr]] = {b: [s] for b, s in seeds.items() if s != 0}
    # Chained temps received their per-sample adjoints in the loop; here they only pass on what the
    # accumulated temps downstream of them send back.
    upstream = set(theta) | {a.target for a in prologue.ops}
    for assign in reversed(prologue.ops):
        parts = contributions.pop(assign.target, None)
        if not parts:
            continue
        bar = epi.emit(sp.Add(*parts))
        for arg, local in _local_derivatives(assign.target, assign.expr):
            if arg in upstream:
                contributions.setdefault(arg, []).append(epi.emit(bar * local))
    grads = [epi.emit(sp.Add(*contributions.get(p, [sp.Integer(0)]))) for p in theta]
    ir.epilogue = _inline_single_use(epi.ops, keep=set(grads))
    ir.results = [ir.results[0], *grads]
    _finish_prologue(ir)
    return ir


def _linear_with_number_coefficients(assign: Assign) -> bool:
    return all(local.is_Number for _, local in _local_derivatives(assign.target, assign.expr))


def _finish(ir: KernelIR, prologue: Tape, body: Tape, *, finish_prologue: bool = True) -> KernelIR:
    """Passes 5–6: loop-invariant motion, invariant sums → N·x, dead-code elimination, inlining."""
    hoisted_names = (sp.Dummy(f"h{k}") for k in itertools.count())
    moved, kept = _split_invariant(body.ops, set(ir.data), hoisted_names)
    ir.prologue = prologue.ops + moved
    invariant = {a.target for a in ir.prologue} | set(ir.theta)
    results: list[sp.Expr] = []
    sums: list[sp.Expr] = []
    sum_symbols: list[sp.Symbol] = []
    first_of: dict[sp.Expr, sp.Symbol] = {}
    for e, s in zip(ir.sums, ir.sum_symbols, strict=True):
        if e.free_symbols <= invariant:
            results.append(ir.n_symbol * e if e != 0 else sp.Integer(0))
        elif e in first_of:
            results.append(first_of[e])
        else:
            first_of[e] = s
            sums.append(e)
            sum_symbols.append(s)
            results.append(s)
    if ir.sums:
        ir.sums, ir.sum_symbols, ir.results = sums, tuple(sum_symbols), results
    read_after_loop = _reads([], ir.sums, ir.outputs)
    inlined = _inline_single_use(_live(kept, [*ir.sums, *ir.outputs]), keep=read_after_loop)
    # Inlining can bring invariant factors together again (a·t used once in b·(a·t)): split them out.
    moved_again, ir.body = _split_invariant(inlined, set(ir.data), hoisted_names)
    ir.prologue += moved_again
    if finish_prologue:
        _finish_prologue(ir)
    return ir


def _finish_prologue(ir: KernelIR) -> None:
    """Dead-code elimination and inlining in the prologue, keeping every symbol read after it."""
    reads = _reads([*ir.body, *ir.epilogue], ir.sums, ir.outputs, ir.results)
    ir.prologue = _inline_single_use(_live(ir.prologue, reads), keep=reads)


def _split_invariant(
    ops: Sequence[Assign], data: set[sp.Symbol], names: Iterator[sp.Symbol]
) -> tuple[list[Assign], list[Assign]]:
    """Loop-invariant code motion. Operations that do not read the data (directly or through other
    operations) move out; a product or sum mixing several invariant operands with variant ones has the
    invariant part computed once (2·W·t → c·t with c = 2·W hoisted)."""
    variant = set(data)
    moved, kept = [], []
    for a in ops:
        if not a.expr.free_symbols & variant:
            moved.append(a)
            continue
        variant.add(a.target)
        expr = a.expr
        if isinstance(expr, (sp.Add, sp.Mul)):
            inv = [x for x in expr.args if not x.free_symbols & variant]
            if len(inv) > 1 and any(not x.is_Number for x in inv):
                sym = next(names)
                moved.append(Assign(sym, expr.func(*inv)))
                expr = expr.func(sym, *[x for x in expr.args if x.free_symbols & variant])
        kept.append(Assign(a.target, expr))
    return moved, kept


def _live(ops: Sequence[Assign], roots: Iterable[sp.Expr]) -> list[Assign]:
    needed: set[sp.Symbol] = set()
    for r in roots:
        needed |= r.free_symbols
    out = []
    for a in reversed(ops):
        if a.target in needed:
            out.append(a)
            needed |= a.expr.free_symbols
    return out[::-1]


def _reads(body: Sequence[Assign], *expr_lists: Sequence[sp.Expr]) -> set[sp.Symbol]:
    out: set[sp.Symbol] = set()
    for a in body:
        out |= a.expr.free_symbols
    for lst in expr_lists:
        for e in lst:
            out |= e.free_symbols
    return out


def _inline_single_use(ops: Sequence[Assign], keep: set[sp.Symbol], max_ops: int = 6) -> list[Assign]:
    """Fold temporaries used exactly once (and not in `keep`) into their user, up to `max_ops` per line."""
    uses: Counter[sp.Symbol] = Counter()
    for a in ops:
        uses.update(a.expr.free_symbols)
    pending: dict[sp.Symbol, sp.Expr] = {}
    out: list[Assign] = []
    for a in ops:
        expr = a.expr
        mine = [s for s in expr.free_symbols if s in pending]
        if mine:
            # A power's base is printed twice for small exponents (b*b): keep compound bases in a temporary.
            bases = {n.base for n in sp.preorder_traversal(expr) if isinstance(n, sp.Pow)}
            for s in mine:
                if s in bases:
                    out.append(Assign(s, pending.pop(s)))
            expr = expr.xreplace({s: pending.pop(s) for s in mine if s in pending})
        if uses[a.target] == 1 and a.target not in keep and _count_ops(expr) <= max_ops:
            pending[a.target] = expr
        else:
            out.append(Assign(a.target, expr))
    return out


def _count_ops(e: sp.Expr) -> int:
    return int(sp.count_ops(e, visual=False)) if not e.is_Atom else 0


# ---------------------------------------------------------------------- pass 7 (optional): products


def split_products(ir: KernelIR, *, min_products: int = 4) -> KernelIR:
    """Rewrite sums of the form Σ_m c_m·u_m·v_m (+ Σ c·u + c₀) into shared sums of products.

    u, v are per-sample atoms (body temporaries or data), c θ-only. Each distinct product u·v is summed once,
    however many sums use it (the θ-gradient of a Gaussian or ICA model is made of such outer products), and
    the original sums become θ-only combinations of those totals, formed after the loop. A backend can then
    accumulate the products tile by tile in registers, like a matrix product, instead of touching one memory
    accumulator per sum per sample. Sums that are not of this form are left alone. Returns a new KernelIR
    (the input is not modified); with fewer than `min_products` products nothing is rewritten.
    """
    defs = {a.target: a.expr for a in ir.body}
    variant = set(ir.data) | set(defs)
    uses: Counter[sp.Symbol] = Counter()
    for a in ir.body:
        uses.update(a.expr.free_symbols)
    for e in [*ir.sums, *ir.outputs]:
        uses.update(e.free_symbols)

    def expand(e: sp.Expr, depth: int = 0) -> sp.Expr:
        """Look through temporaries used only here that are sums or products (not through functions)."""
        if e in defs and uses[e] == 1 and isinstance(defs[e], (sp.Add, sp.Mul)) and depth < 4:
            return expand(defs[e], depth + 1)
        if isinstance(e, (sp.Add, sp.Mul)) and depth < 4:
            return e.func(*[expand(a, depth + 1) for a in e.args])
        return e

    def terms(e: sp.Expr) -> list[tuple[sp.Expr, list[sp.Expr]]] | None:
        e = sp.expand_mul(expand(e)) if e in defs else e
        out = []
        for term in sp.Add.make_args(e):
            coeff, factors = [], []
            for f in sp.Mul.make_args(term):
                base, exp = f.as_base_exp()
                if not (f.free_symbols & variant):
                    coeff.append(f)
                elif base in variant and exp.is_Integer and 1 <= exp <= 2:
                    factors += [base] * int(exp)
                else:
                    return None
            if len(factors) > 2:
                return None
            out.append((sp.Mul(*coeff), factors))
        return out

    decomposed = [terms(e) for e in ir.sums]
    keys: dict[tuple[sp.Expr, ...], int] = {}
    for parts in decomposed:
        for _, factors in parts or []:
            if len(factors) == 2:
                keys.setdefault(tuple(sorted(factors, key=sp.default_sort_key)), len(keys))
    if len(keys) < min_products:
        return ir
    product_symbols = tuple(sp.Dummy(f"prod_{k}") for k in range(len(keys)))
    new_sums: list[sp.Expr] = []
    new_symbols: list[sp.Symbol] = []
    linear: dict[sp.Expr, sp.Symbol] = {}
    replace: dict[sp.Symbol, sp.Expr] = {}
    for e, s, parts in zip(ir.sums, ir.sum_symbols, decomposed, strict=True):
        if parts is None:
            new_sums.append(e)
            new_symbols.append(s)
            continue
        combination = []
        for coeff, factors in parts:
            if len(factors) == 2:
                combination.append(coeff * product_symbols[keys[tuple(sorted(factors, key=sp.default_sort_key))]])
            elif len(factors) == 1:
                atom = factors[0]
                if atom not in linear:
                    linear[atom] = sp.Dummy(f"lin_{len(linear)}")
                    new_sums.append(atom)
                    new_symbols.append(linear[atom])
                combination.append(coeff * linear[atom])
            else:
                combination.append(coeff * ir.n_symbol)
        replace[s] = sp.Add(*combination)
    out = KernelIR(ir.theta, ir.data, prologue=list(ir.prologue), outputs=list(ir.outputs), n_symbol=ir.n_symbol)
    out.sums, out.sum_symbols = new_sums, tuple(new_symbols)
    out.products = [pair for pair, _ in sorted(keys.items(), key=lambda kv: kv[1])]
    out.product_symbols = product_symbols
    out.epilogue = [Assign(a.target, a.expr.xreplace(replace)) for a in ir.epilogue]
    out.results = [r.xreplace(replace) for r in ir.results]
    roots = [*out.sums, *out.outputs, *(u for pair in out.products for u in pair)]
    out.body = _live(ir.body, roots)
    return out
