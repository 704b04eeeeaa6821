"""Rolling sums: terms a model spells out (``W_00 x0 + W_01 x1 + …``) written as ``\\sum_j``, and the general
component found, each checked by expanding it again; also the counts of repeated subexpressions for abbreviations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import sympy as sp
from sympy.tensor.indexed import Indexed, IndexedBase

from .printer import _parse_indices

if TYPE_CHECKING:
    from ..model.model import Model

#: Letters for summation indices, in order of preference; letters a model uses are skipped.
_SUM_LETTERS = ("j", "k", "l", "m", "n", "p", "q", "r", "a", "b", "c", "u", "v", "w")


class _Indexing:
    """The model's indexed Symbols (x0, mu_1, W_0_1) as sympy `Indexed` objects, and back.

    Rolling ``W_00 x0 + W_01 x1 + W_02 x2`` into ``Σ_j W_0j x_j`` needs indices that can be
    substituted; `Indexed` gives them, and `unroll` maps an expression back to the model's Symbols so
    that every rolled-up form can be checked against the exact expression.
    """

    def __init__(self, model: Model, reserved: set[str]) -> None:
        families: dict[str, list[tuple[sp.Symbol, tuple[int, ...]]]] = {}
        plain: set[str] = set()
        for sym in (*model.data, *model.params):
            parsed = _parse_indices(sym.name)
            if parsed is None:
                plain.add(sym.name)
            else:
                families.setdefault(parsed[0], []).append((sym, parsed[1]))
        self.forward: dict[sp.Symbol, Indexed] = {}
        self.backward: dict[tuple[str, tuple[int, ...]], sp.Symbol] = {}
        for stem, members in families.items():
            arities = {len(ix) for _, ix in members}
            if stem in plain or len(arities) != 1 or len({ix for _, ix in members}) != len(members):
                continue
            base = IndexedBase(stem)
            for sym, ix in members:
                self.forward[sym] = base[ix]
                self.backward[(stem, ix)] = sym
        self.symmetric: set[str] = set()
        for g in model.groups:
            if len(g.shape) == 2 and g.shape[0] == g.shape[1] and g.template == g.template.T:
                stems = {(p := _parse_indices(s.name)) and p[0] for s in g.symbols}
                if len(stems) == 1 and None not in stems:
                    self.symmetric |= {str(stem) for stem in stems}
        self.var = sp.Dummy("v", integer=True)
        names = {s.name for s in (*model.data, *model.params)} | set(families) | reserved
        self.letters = [c for c in _SUM_LETTERS if c not in names]
        self._shape_memo: dict[sp.Basic, str] = {}
        self._unroll_memo: dict[sp.Basic, sp.Expr | None] = {}

    def add_family(self, stem: str, members: Mapping[sp.Symbol, int]) -> None:
        """Treat `members` as the entries stem[k] of one more indexed family (e.g. placeholders)."""
        base = IndexedBase(stem)
        for sym, k in members.items():
            self.forward[sym] = base[k]
            self.backward[(stem, (k,))] = sym

    # -- conversion
    def indexed(self, expr: sp.Expr) -> sp.Expr:
        return expr.xreplace(self.forward)

    def unroll(self, expr: sp.Expr) -> sp.Expr | None:
        """Sums expanded and Indexed entries mapped back to the model's Symbols (None if impossible)."""
        if expr in self._unroll_memo:
            return self._unroll_memo[expr]
        result = self._unroll(expr)
        self._unroll_memo[expr] = result
        return result

    def _unroll(self, expr: sp.Expr) -> sp.Expr | None:
        expr = _expand_sums(expr)
        mapping: dict[sp.Basic, sp.Basic] = {}
        for item in expr.atoms(Indexed):
            stem = item.base.label.name
            if not all(ix.is_Integer for ix in item.indices):
                return None
            ix = tuple(int(i) for i in item.indices)
            sym = self.backward.get((stem, ix))
            if sym is None and stem in self.symmetric and len(ix) == 2:
                sym = self.backward.get((stem, ix[::-1]))
            if sym is None:
                return None
            mapping[item] = sym
        return expr.xreplace(mapping)

    def same(self, a: sp.Expr, b: sp.Expr) -> bool:
        """True when `a` and `b` are the same expression once sums are expanded (exact, no floats)."""
        ua, ub = self.unroll(a), self.unroll(b)
        if ua is None or ub is None:
            return False
        if ua == ub:
            return True
        if sp.count_ops(ua) + sp.count_ops(ub) > 600:
            return False
        return sp.expand(ua - ub) == 0

    # -- structure
    def shape(self, e: sp.Basic) -> str:
        """A key equal for expressions that differ only in integer indices (order-free for + and ×)."""
        if e in self._shape_memo:
            return self._shape_memo[e]
        if isinstance(e, Indexed):
            marks = ["#" if ix.is_Integer else str(ix) for ix in e.indices]
            if e.base.label.name in self.symmetric:
                marks.sort()
            key = f"I[{e.base.label.name}:{','.join(marks)}]"
        elif not e.args:
            key = f"{type(e).__name__}:{e}"
        else:
            inner = [self.shape(a) for a in e.args]
            if e.is_Add or e.is_Mul:
                inner.sort()
            key = f"{type(e).__name__}({';'.join(inner)})"
        self._shape_memo[e] = key
        return key

    def antiunify(self, a: sp.Basic, b: sp.Basic, pair: tuple | None) -> tuple[sp.Basic, tuple | None] | None:
        """A template T with T(va) = a, T(vb) = b where one index runs va → vb; None if there is none.

        `pair` is the (va, vb) fixed so far. Only integer indices of Indexed entries may differ; every
        other part of the two expressions must agree.
        """
        if a == b:
            return a, pair
        if isinstance(a, Indexed) and isinstance(b, Indexed):
            if a.base != b.base or len(a.indices) != len(b.indices):
                return None
            options = [b.indices]
            if a.base.label.name in self.symmetric and len(b.indices) == 2:
                options.append(b.indices[::-1])
            for ib in options:
                result = self._antiunify_indices(a.indices, ib, pair)
                if result is not None:
                    return Indexed(a.base, *result[0]), result[1]
            return None
        if type(a) is not type(b) or not a.args or len(a.args) != len(b.args):
            return None
        out: list[sp.Basic] = []
        if a.is_Add or a.is_Mul:
            remaining = list(b.args)
            for x in a.args:
                sx = self.shape(x)
                for k, y in enumerate(remaining):
                    if self.shape(y) != sx:
                        continue
                    r = self.antiunify(x, y, pair)
                    if r is not None:
                        out.append(r[0])
                        pair = r[1]
                        del remaining[k]
                        break
                else:
                    return None
        else:
            for x, y in zip(a.args, b.args, strict=True):
                r = self.antiunify(x, y, pair)
                if r is None:
                    return None
                out.append(r[0])
                pair = r[1]
        return a.func(*out), pair

    def _antiunify_indices(self, ia: Sequence, ib: Sequence, pair: tuple | None) -> tuple[list, tuple | None] | None:
        out = []
        for x, y in zip(ia, ib, strict=True):
            if x == y:
                out.append(x)
            elif x.is_Integer and y.is_Integer:
                if pair is None:
                    pair = (x, y)
                elif pair != (x, y):
                    return None
                out.append(self.var)
            else:
                return None
        return out, pair

    def fresh(self, template: sp.Basic) -> sp.Symbol | None:
        used = {s.name for s in template.atoms(sp.Symbol)}
        for letter in self.letters:
            if letter not in used:
                return sp.Symbol(letter, integer=True)
        return None

    # -- rolling
    def reroll(self, expr: sp.Expr) -> sp.Expr:
        """`expr` (in Indexed form) with every run of terms that follows one index written as a Sum."""
        if not expr.args or isinstance(expr, Indexed):
            return expr
        args = [self.reroll(a) for a in expr.args]
        if any(x is not y for x, y in zip(args, expr.args, strict=True)):
            expr = expr.func(*args)
        if expr.is_Add:
            expr = self._roll_add(expr)
        return expr

    def _roll_add(self, expr: sp.Add) -> sp.Expr:
        groups: dict[tuple[str, str], list[tuple[sp.Expr, sp.Expr]]] = {}
        for term in expr.args:
            coeff, rest = term.as_coeff_Mul()
            groups.setdefault((str(coeff), self.shape(rest)), []).append((coeff, rest))
        out: list[sp.Expr] = []
        for members in groups.values():
            rolled = self._roll([rest for _, rest in members]) if len(members) >= 2 else None
            if rolled is None:
                out += [c * r for c, r in members]
            else:
                out.append(members[0][0] * rolled)
        return sp.Add(*out)

    def _roll(self, members: list[sp.Expr]) -> sp.Expr | None:
        first = members[0]
        template: sp.Expr | None = None
        va: sp.Expr | None = None
        values: list[sp.Expr] = []
        for m in members[1:]:
            r = self.antiunify(first, m, None)
            if r is None or r[1] is None:
                return None
            t, (a, b) = r[0], r[1]
            if template is None:
                template, va = t, a
            elif a != va:
                return None
            values.append(b)
        if template is None:
            return None
        values = [va, *values]
        ints = sorted(int(v) for v in values)
        if ints != list(range(ints[0], ints[0] + len(ints))):
            return None
        if not all(self.same(template.xreplace({self.var: v}), m) for m, v in zip(members, values, strict=True)):
            return None
        letter = self.fresh(template)
        if letter is None:
            return None
        # factors that do not depend on the index stand in front of the sum
        inside: list[sp.Expr] = []
        outside: list[sp.Expr] = []
        for factor in sp.Mul.make_args(template):
            (inside if factor.has(self.var) else outside).append(factor)
        body = sp.Mul(*inside).xreplace({self.var: letter})
        return sp.Mul(*outside) * sp.Sum(body, (letter, ints[0], ints[-1]))

    def general(self, components: Sequence[sp.Expr], labels: Sequence[int], index: sp.Symbol) -> sp.Expr | None:
        """One expression in `index` that gives every component (Indexed forms) — verified for each."""
        if len(components) < 2:
            return None
        r = self.antiunify(components[0], components[1], None)
        if r is None or (r[1] is not None and tuple(int(v) for v in r[1]) != (labels[0], labels[1])):
            return None
        template = r[0]
        if not all(self.same(template.xreplace({self.var: lab}), c) for c, lab in zip(components, labels, strict=True)):
            return None
        return template.xreplace({self.var: index})


def _count_candidates(e: sp.Basic, counts: dict[sp.Basic, int]) -> None:
    """Occurrences of the subexpressions of `e` that may be abbreviated.

    An exponent is not a candidate on its own (``e^{u}`` reads worse than naming the whole power), nor
    are atoms, indexed entries and the limits of sums.
    """
    if not e.args or isinstance(e, (Indexed, sp.Tuple)):
        return
    if e.free_symbols:
        counts[e] = counts.get(e, 0) + 1
    children = e.args
    if isinstance(e, sp.exp):
        children = e.args[0].args if e.args[0].is_Add or e.args[0].is_Mul else ()
    elif e.is_Pow:
        children = (e.base,)
    for child in children:
        _count_candidates(child, counts)


def _expand_sums(e: sp.Basic) -> sp.Basic:
    """Every Sum with integer limits written out term by term (plain substitution; `doit` is far slower)."""
    if not e.args or not e.has(sp.Sum):
        return e
    if isinstance(e, sp.Sum) and len(e.limits) == 1:
        var, lo, hi = e.limits[0]
        if lo.is_Integer and hi.is_Integer:
            body = _expand_sums(e.function)
            return sp.Add(*[body.xreplace({var: sp.Integer(k)}) for k in range(int(lo), int(hi) + 1)])
    args = [_expand_sums(a) for a in e.args]
    if e.is_Mul and sum(isinstance(a, sp.Sum) for a in e.args) == 1:
        # c * Σ_k t_k → Σ_k c t_k, the way the terms stood before they were rolled up
        k = next(n for n, a in enumerate(e.args) if isinstance(a, sp.Sum))
        rest = sp.Mul(*args[:k], *args[k + 1 :])
        return sp.Add(*[rest * t for t in sp.Add.make_args(args[k])])
    return e.func(*args)
