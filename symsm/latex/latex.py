"""The score-matching derivation for one model, step by step, as LaTeX.

Teachers want the derivation of score matching for *their* model, not a generic text. This module
instantiates the steps of the standard integration-by-parts derivation (Hyvärinen 2005) for a
`Derivation`: the model (Step 0), its score written out component by component (Step 1), the Fisher
divergence (Step 2), the expansion of the square (Step 3), integration by parts with the boundary
condition for each coordinate (Step 4), and the empirical objective with ∂ᵢ² log f and the θ-gradient
written out (Step 5). For a model on the non-negative orthant (``domain="nonnegative"``) Steps 2–5 are
those of generalized score matching (Hyvärinen 2007; Yu, Drton & Shojaie 2019): the Fisher divergence
weighted by the model's h(xᵢ), integration by parts over [0, ∞) with the boundary condition at 0 and at ∞,
and the weighted objective. The narrative lives in ``templates/derivation.tex.j2``; everything instantiated
is computed here and handed to the template as strings and lists of strings.

How expressions are shown:

* Symbols print as mathematicians write them (``mu0`` → ``\\mu_{0}``, ``W_0_1`` → ``W_{01}``,
  ``nu`` → ``\\nu``) through `SymsmLatexPrinter`, a sympy `LatexPrinter` subclass; the printed LaTeX is
  never edited as a string.
* Long expressions are broken across the lines of an ``align*`` at top-level ``+``/``−`` (and inside the
  widest bracketed sum of a product), using an estimate of the typeset width of each term.
* Sums the model spells out term by term (``W_00 x0 + W_01 x1 + …``) are rolled back into ``\\sum_j``
  where the terms follow one index; the general component (``s_{θ,i}`` for every i) is found the same
  way. Every rolled-up form is expanded again and compared with the exact expression before it is
  shown, so a general term is printed only when it is right for every component.
* For large d (more than ``max_components`` coordinates) the general term and a few components are
  shown, and the text says so; expressions longer than ``max_lines`` lines are shortened visibly.

The same body renders three ways: a fragment for ``\\input`` or a notebook (``_repr_latex_``; plain
text and ``align*`` only, which MathJax also understands), a full document that compiles with pdflatex
and amsmath alone, and `write_latex` which writes the ``.tex`` (and, on request, the ``.pdf``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sympy as sp
from sympy.printing.latex import LatexPrinter, translate
from sympy.simplify.radsimp import fraction
from sympy.tensor.indexed import Indexed, IndexedBase

from .._version import __version__
from ..core.errors import SymsmError

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..model.model import Model

__all__ = [
    "LatexError",
    "LatexFiles",
    "SymsmLatexPrinter",
    "compile_pdf",
    "derivation_latex",
    "latex_symbol_name",
    "model_latex",
    "objective_latex",
    "pdflatex_available",
    "write_latex",
]

#: Domains whose boundary condition the derivation states: R^d (Hyvärinen 2005) and the non-negative orthant
#: with the model's coordinate weight h (generalized score matching, Hyvärinen 2007; Yu, Drton & Shojaie 2019).
SUPPORTED_DOMAINS = ("real", "nonnegative")

#: Letters for the coordinate weight h, in order of preference; the first one the model does not use is taken.
_WEIGHT_LETTERS = ("h", "w", "g", "q")

#: Expressions up to this many lines are shown written out even when a form with sums is shorter.
_EXPLICIT_LINES = 4

#: The score components s_{θ,i} as placeholders inside the gradient (a stem no model symbol can have).
_SCORE_STEM = "_score"
_SCORE_TEX = r"s_{{\theta,{}}}"

#: The per-sample matrix A(x) of a quadratic objective is printed up to this many parameters.
_MAX_MATRIX = 6

#: At most this many abbreviations (u_1, u_2, ...) are introduced for one display.
_MAX_ABBREVIATIONS = 8

#: Subexpressions narrower than this (in characters) are never abbreviated.
_MIN_ABBREVIATED = 8

#: Letters for abbreviations, in order of preference; the first one the model does not use is taken.
_ABBREVIATION_LETTERS = ("u", "v", "w", "q", "z", "h", "g")

#: Letters for summation indices, in order of preference; letters a model uses are skipped.
_SUM_LETTERS = ("j", "k", "l", "m", "n", "p", "q", "r", "a", "b", "c", "u", "v", "w")

_SINGLE_INDEX = re.compile(r"(?P<stem>[A-Za-z]+)(?P<index>\d+)")
_MULTI_INDEX = re.compile(r"(?P<stem>[A-Za-z]+)(?P<indices>(?:_\d+)+)")
_PLAIN = re.compile(r"[A-Za-z]+")


class LatexError(SymsmError):
    """The LaTeX of a derivation cannot be produced or compiled (e.g. pdflatex is missing or fails)."""


@dataclass(frozen=True)
class LatexFiles:
    """What `write_latex` wrote: the ``.tex`` file and, when asked for, the compiled ``.pdf``."""

    tex: Path
    pdf: Path | None = None


# ---------------------------------------------------------------------------------------------- printer


def _stem_latex(stem: str) -> str:
    """Greek names become letters (``mu`` → ``\\mu``); other multi-letter names are one italic word."""
    tex = translate(stem)
    if tex == stem and len(stem) > 1:
        return rf"\mathit{{{stem}}}"
    return tex


def _join_indices(indices: Sequence[str], separator: str) -> str:
    """``W_{01}`` while every index is one character, ``W_{1,10}`` as soon as one is longer."""
    if separator == "" and any(len(ix) > 1 for ix in indices):
        separator = ","
    return separator.join(indices)


def latex_symbol_name(name: str, index_separator: str = "") -> str | None:
    """LaTeX for a symbol name as mathematicians write it, or None when sympy's default should apply.

    ``mu0`` → ``\\mu_{0}``, ``x_3`` → ``x_{3}``, ``W_0_1`` → ``W_{01}`` (``W_{0,1}`` with
    ``index_separator=","``), ``nu`` → ``\\nu``, ``mean`` → ``\\mathit{mean}``.
    """
    if m := _MULTI_INDEX.fullmatch(name):
        indices = m["indices"].split("_")[1:]
        return f"{_stem_latex(m['stem'])}_{{{_join_indices(indices, index_separator)}}}"
    if m := _SINGLE_INDEX.fullmatch(name):
        return f"{_stem_latex(m['stem'])}_{{{m['index']}}}"
    if _PLAIN.fullmatch(name):
        return _stem_latex(name)
    return None


class SymsmLatexPrinter(LatexPrinter):
    """sympy's LaTeX printer with mathematicians' symbol names and textbook term order.

    * ``_print_Symbol``: names through `latex_symbol_name`; an explicit ``symbol_names`` entry wins.
    * ``_as_ordered_terms``: terms with a plus sign first, so ``x_{0} - \\mu_{0}`` rather than
      ``- \\mu_{0} + x_{0}``.
    * ``_print_Mul``: a fraction in front of a sum is printed as a factor (``\\frac{1}{2} \\sum_j …``)
      instead of putting the whole sum over the denominator.
    * ``_needs_mul_brackets``: a function call is never bracketed again (sympy brackets any factor
      that contains a Sum, giving ``\\left(\\tanh(\\sum …)\\right)``).
    """

    _default_settings: ClassVar[dict[str, Any]] = {**LatexPrinter._default_settings, "index_separator": ""}

    def _print_Symbol(self, expr: sp.Symbol, style: str = "plain") -> str:
        """Mathematicians' names (mu0 → \\mu_{0}, W_0_1 → W_{01}) unless symbol_names overrides."""
        explicit = self._settings["symbol_names"].get(expr)
        if explicit is not None:
            return explicit
        tex = latex_symbol_name(expr.name, self._settings["index_separator"])
        if tex is None:
            return super()._print_Symbol(expr, style=style)
        return rf"\mathbf{{{tex}}}" if style == "bold" else tex

    def _as_ordered_terms(self, expr: sp.Expr, order: str | None = None) -> list[sp.Expr]:
        """sympy's order, then the terms that carry a minus sign moved behind the others (stable)."""
        terms = super()._as_ordered_terms(expr, order=order)
        return sorted(terms, key=lambda t: bool(t.could_extract_minus_sign()))

    def _print_Mul(self, expr: sp.Expr) -> str:
        """``\\frac{1}{2} \\sum_j (…)`` rather than ``\\frac{\\sum_j (…)}{2}``."""
        coeff, rest = expr.as_coeff_Mul()
        if coeff.is_Rational and not coeff.is_Integer and any(isinstance(f, sp.Sum) for f in sp.Mul.make_args(rest)):
            sign = "- " if coeff < 0 else ""
            frac = rf"\frac{{{abs(coeff.p)}}}{{{coeff.q}}}"
            body = self._print(rest)
            if rest.is_Add:
                body = rf"\left({body}\right)"
            return f"{sign}{frac} {body}"
        return super()._print_Mul(expr)

    def _print_Sum(self, expr: sp.Sum) -> str:
        """Limits beside the sign (``\\sum\\nolimits``), so sums nested in brackets stay one line high."""
        if len(expr.limits) != 1:
            return super()._print_Sum(expr)
        var, lo, hi = (self._print(v) for v in expr.limits[0])
        body = self._print(expr.function)
        if expr.function.is_Add:
            body = rf"\left({body}\right)"
        return rf"\sum\nolimits_{{{var}={lo}}}^{{{hi}}} {body}"

    def _needs_mul_brackets(self, expr: sp.Expr, first: bool = False, last: bool = False) -> bool:
        """A function application carries its own brackets; sympy's rule for Sums does not apply."""
        if isinstance(expr, sp.Function):
            return False
        return super()._needs_mul_brackets(expr, first=first, last=last)


# ---------------------------------------------------------------------------------------------- rolling sums


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
                    self.symmetric |= stems
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
        template, va, values = None, None, []
        for m in members[1:]:
            r = self.antiunify(first, m, None)
            if r is None or r[1] is None:
                return None
            t, (a, b) = r
            if template is None:
                template, va = t, a
            elif a != va:
                return None
            values.append(b)
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
        inside, outside = [], []
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


def _parse_indices(name: str) -> tuple[str, tuple[int, ...]] | None:
    if m := _MULTI_INDEX.fullmatch(name):
        return m["stem"], tuple(int(i) for i in m["indices"].split("_")[1:])
    if m := _SINGLE_INDEX.fullmatch(name):
        return m["stem"], (int(m["index"]),)
    return None


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Options:
    max_components: int
    max_params: int
    line_width: int
    max_lines: int


class _Writer:
    """Prints expressions, estimates their typeset width and breaks them into lines of an align*."""

    def __init__(self, printer: SymsmLatexPrinter, options: _Options) -> None:
        self.printer = printer
        self.options = options
        self._width_memo: dict[sp.Basic, float] = {}
        self._tex_memo: dict[sp.Basic, str] = {}
        self._chunk_memo: dict[tuple[sp.Basic, float], list[tuple[str, float]]] = {}
        self.shortened = False  # set when an expression had to be cut

    def tex(self, expr: sp.Basic) -> str:
        if expr not in self._tex_memo:
            self._tex_memo[expr] = self.printer.doprint(expr)
        return self._tex_memo[expr]

    def width(self, e: sp.Basic) -> float:
        """An estimate of the typeset width of `e`, in characters of the body font."""
        if e in self._width_memo:
            return self._width_memo[e]
        w = self._width(e)
        self._width_memo[e] = w
        return w

    def _width(self, e: sp.Basic) -> float:
        if isinstance(e, sp.Symbol):
            tex = self.printer._print(e)
            m = re.fullmatch(r"(\\?[A-Za-z]+|\\mathit\{[A-Za-z]+\}|\\hat\{.\}|\\bar\{.\})(?:_\{(.*)\})?", tex)
            if m is None:
                return 0.6 * len(tex)
            stem = m[1]
            stem_w = 1.0 if stem.startswith("\\") and not stem.startswith(r"\mathit") else len(stem.strip("\\"))
            if stem.startswith(r"\mathit"):
                stem_w = len(stem) - 9
            return stem_w + 0.6 * len(m[2] or "")
        if isinstance(e, sp.Integer):
            return len(str(e))
        if isinstance(e, sp.Rational):
            return max(len(str(e.p)), len(str(e.q))) + 0.5
        if isinstance(e, (sp.Float, sp.NumberSymbol)) or not e.args:
            return len(self.tex(e)) * 0.6 + 0.5
        if e.is_Add:
            return sum(self.width(a) for a in e.args) + 2.0 * (len(e.args) - 1)
        if e.is_Mul:
            num, den = fraction(e, exact=True)
            if den != 1:
                return max(self.width(num), self.width(den)) + 1.5
            return sum(self.width(f) + (2 if f.is_Add else 0) for f in e.args) + 0.3 * (len(e.args) - 1)
        if e.is_Pow:
            if e.exp.is_negative:
                return self.width(1 / e) + 1.5
            if e.exp == sp.S.Half:
                return self.width(e.base) + 1.5
            bracket = 2 if (e.base.is_Add or e.base.is_Mul or e.base.is_Pow) else 0
            return self.width(e.base) + bracket + 0.6 * self.width(e.exp)
        if isinstance(e, sp.exp):
            return 1.0 + 0.6 * self.width(e.args[0])
        if isinstance(e, sp.Sum):
            bracket = 2 if e.function.is_Add else 0
            return 2.5 + self.width(e.function) + bracket
        if isinstance(e, sp.Function):
            return len(type(e).__name__) + 2 + sum(self.width(a) for a in e.args)
        return len(self.tex(e)) * 0.6

    def chunks(self, e: sp.Expr, width: float | None = None) -> list[tuple[str, float]]:
        """(LaTeX, estimated width) of `e` in pieces that each fit on a line where `e` can be broken."""
        width = self.options.line_width if width is None else width
        key = (e, width)
        if key not in self._chunk_memo:
            self._chunk_memo[key] = self._chunks(e, width)
        return self._chunk_memo[key]

    def _chunks(self, e: sp.Expr, width: float) -> list[tuple[str, float]]:
        w = self.width(e)
        if w <= width:
            return [(self.tex(e), w)]
        if e.is_Add:
            return self._add_chunks(e, width)
        if e.is_Mul:
            if e.could_extract_minus_sign():
                inner = self.chunks(-e, width - 1)
                return [("- " + inner[0][0], inner[0][1] + 1), *inner[1:]]
            num, _ = fraction(e, exact=True)
            sums = [f for f in sp.Mul.make_args(num) if f.is_Add]
            if sums:
                widest = max(sums, key=self.width)
                rest = e / widest
                rest_w = 0.0 if rest == 1 else self.width(rest) + 1
                inner = self.chunks(widest, width - 4)
                if len(inner) > 1 and rest_w < width / 2:
                    prefix = "" if rest == 1 else self.tex(rest) + " "
                    first, last = inner[0], inner[-1]
                    if len(inner) == 2:
                        return [
                            (rf"{prefix}\Bigl({first[0]}", first[1] + rest_w + 2),
                            (rf"{last[0]}\Bigr)", last[1] + 2),
                        ]
                    return [
                        (rf"{prefix}\Bigl({first[0]}", first[1] + rest_w + 2),
                        *inner[1:-1],
                        (rf"{last[0]}\Bigr)", last[1] + 2),
                    ]
        return [(self.tex(e), w)]

    def _add_chunks(self, e: sp.Add, width: float) -> list[tuple[str, float]]:
        lines: list[tuple[str, float]] = []
        current, used = "", 0.0
        for k, term in enumerate(self.printer._as_ordered_terms(e)):
            if len(lines) > self.options.max_lines:
                break  # the display is cut after max_lines anyway; printing the rest costs time only
            negative = k > 0 and term.could_extract_minus_sign()
            body = -term if negative else term
            sign = "- " if negative else ("+ " if k > 0 else "")
            w = self.width(body) + 2
            if w > width:
                if current:
                    lines.append((current, used))
                inner = self.chunks(body, width - 2)
                lines += [(sign + inner[0][0], inner[0][1] + 2), *inner[1:]]
                current, used = "", 0.0
                continue
            if current and used + w > width:
                lines.append((current, used))
                current, used = "", 0.0
            current += (" " if current else "") + sign + self.tex(body)
            used += w
        if current:
            lines.append((current, used))
        return lines

    def fits(self, e: sp.Expr) -> bool:
        """True when `e` can be shown in full within `max_lines` lines of at most the line width."""
        pieces = self.chunks(e)
        return len(pieces) <= self.options.max_lines and all(w <= self.options.line_width * 1.1 for _, w in pieces)

    def n_lines(self, e: sp.Expr) -> int:
        return len(self.chunks(e))

    def align(self, rows: Sequence[tuple[str | None, sp.Expr | str]], relation: str = "=") -> list[str]:
        """Lines of an align* environment: ``lhs &= rhs`` with each long rhs broken and shortened.

        A row with lhs None continues the previous one; lhs ``\\vdots`` is a row of vertical dots.
        """
        out: list[str] = []
        for lhs, rhs in rows:
            if lhs == r"\vdots":
                out.append(r"&\;\;\vdots")
                continue
            pieces = [rhs] if isinstance(rhs, str) else [tex for tex, _ in self.chunks(rhs)]
            if len(pieces) > self.options.max_lines:
                pieces = [*pieces[: self.options.max_lines - 1], r"\cdots \quad \text{(shortened)}"]
                self.shortened = True
            if lhs is None:  # a continuation of the previous row
                out.append(rf"&\qquad {{}}{pieces[0]}")
            else:
                out.append(f"{lhs} &{relation} {pieces[0]}")
            out += [rf"&\qquad {{}}{p}" for p in pieces[1:]]
        return [line + r" \\" for line in out[:-1]] + out[-1:]


# ---------------------------------------------------------------------------------------------- the derivation


def _escape_text(text: str) -> str:
    """User text (model name, description) made safe for LaTeX text mode."""
    special = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(special.get(c, c) for c in text)


def _inline_tuple(before: str, items: Sequence[str], after: str) -> str:
    """``$a = (b_{0}$, $b_{1}$, …, $b_{9}) \\in R^{10}$``: one piece of inline math per entry, so a long
    tuple can break across lines of the text (LaTeX does not break inline math after a comma)."""
    pieces = [f"{before}({items[0]}", *items[1:]]
    pieces[-1] += f"){after}"
    return ", ".join(f"${p}$" for p in pieces)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _make_printer(model: Model, symbol_names: Mapping[Any, str] | None) -> SymsmLatexPrinter:
    multi = [_parse_indices(s.name) for s in model.params]
    long_index = any(p is not None and len(p[1]) > 1 and max(p[1]) >= 10 for p in multi)
    names: dict[sp.Basic, str] = {}
    by_name = {s.name: s for s in (*model.data, *model.params)}
    for key, tex in (symbol_names or {}).items():
        sym = by_name.get(key) if isinstance(key, str) else key
        if sym is None or sym not in by_name.values():
            raise ValueError(f"symbol_names: {key!r} is not a data or parameter symbol of the model")
        if not isinstance(tex, str) or not tex:
            raise ValueError(f"symbol_names[{key!r}] must be a non-empty LaTeX string, got {tex!r}")
        names[sym] = tex
    return SymsmLatexPrinter({"symbol_names": names, "index_separator": "," if long_index else ""})


class _Builder:
    """Computes every instantiated piece of the template for one model (and its derivation)."""

    def __init__(self, model: Model, printer: SymsmLatexPrinter, options: _Options, der: Derivation | None) -> None:
        self.der = der  # needed by `context`, not by `log_f_lines`
        self.model = model
        self.printer = printer
        self.options = options
        self.w = _Writer(printer, options)
        model = self.model
        names = {s.name for s in (*model.data, *model.params)}
        # letters for the coordinate index, another coordinate and the parameter index, unused by the model
        free = [c for c in ("i", "j", "k", "l", "m", "n", "r") if c not in names]
        self.index = sp.Symbol(free[0] if free else "i'", integer=True)
        self.other = free[1] if len(free) > 1 else "j'"
        self.param_index = free[2] if len(free) > 2 else "k'"
        self.indexing = _Indexing(model, reserved={self.index.name, "t", "N", "d", "P"})
        self.d = model.dim
        # coordinates: x0..x3 keep their own indices; other names are counted 1..d
        parsed = [_parse_indices(x.name) for x in model.data]
        stems = {p[0] for p in parsed if p is not None}
        self.data_family = (
            all(p is not None and len(p[1]) == 1 for p in parsed)
            and len(stems) == 1
            and all(x in self.indexing.forward for x in model.data)
        )
        if self.data_family:
            self.labels = [p[1][0] for p in parsed]  # type: ignore[index]
            self.vec = _stem_latex(stems.pop())
        else:
            self.labels = list(range(1, self.d + 1))
            self.vec = "x" if "x" not in names or self.d == 1 else r"\xi"
        if self.d == 1:
            self.vec = printer.doprint(model.data[0])
        consecutive = self.labels == list(range(self.labels[0], self.labels[0] + self.d))
        self.rollable = self.data_family and consecutive
        self._index_range = (self.labels[0], self.labels[-1]) if consecutive else (1, self.d)
        self.notes: list[str] = []
        # placeholders for s_{θ,i} inside the gradient (printed through symbol_names; rolled like x_i)
        self.score_symbols = [sp.Dummy(f"s{k}") for k in range(self.d)]
        for k, s in enumerate(self.score_symbols):
            printer._settings["symbol_names"][s] = self.score_name(k)
        if self.rollable:
            self.indexing.add_family(_SCORE_STEM, dict(zip(self.score_symbols, self.labels, strict=True)))
        self.abbreviations: dict[sp.Basic, sp.Symbol] = {}
        self.general: dict[str, sp.Expr] = {}  # verified general terms (Indexed form) by name
        stems = {(p[0] if (p := _parse_indices(n)) else n) for n in names}
        self.abbreviation_letter = next((c for c in _ABBREVIATION_LETTERS if c not in stems), r"\omega")
        # domain "nonnegative": the coordinate weight h, printed with a letter the model does not use
        self.weight: sp.Expr | None = getattr(model, "weight_expr", None)
        taken = stems | {self.abbreviation_letter}
        self.weight_letter = next((c for c in _WEIGHT_LETTERS if c not in taken), r"\varphi")

    # -- notation
    def sub(self, k: int) -> str:
        return str(self.labels[k])

    def score_name(self, k: int | None) -> str:
        if self.d == 1:
            return r"s_{\theta}"
        return rf"s_{{\theta,{self.sub(k) if k is not None else self.tex(self.index)}}}"

    def coord(self, k: int | None) -> str:
        """The k-th coordinate as printed; k None: the general coordinate (x_i)."""
        if k is not None or self.d == 1:
            return self.tex(self.model.data[k or 0])
        if self.rollable:
            return self.tex(IndexedBase(_parse_indices(self.model.data[0].name)[0])[self.index])  # type: ignore[index]
        return rf"{self.vec}_{{{self.tex(self.index)}}}"

    def tex(self, expr: sp.Basic) -> str:
        return self.w.tex(self._printable(expr))

    def _printable(self, expr: sp.Basic) -> sp.Basic:
        """Indexed entries replaced by Symbols named for printing (they sort like the model's symbols)."""
        items = expr.atoms(Indexed)
        if not items:
            return expr
        mapping = {}
        names = self.printer._settings["symbol_names"]
        separator = self.printer._settings["index_separator"]
        for item in items:
            stem = item.base.label.name
            sym = sp.Symbol(f"{stem}[{','.join(map(str, item.indices))}]")
            index = _join_indices([self.printer.doprint(ix) for ix in item.indices], separator)
            names[sym] = _SCORE_TEX.format(index) if stem == _SCORE_STEM else f"{_stem_latex(stem)}_{{{index}}}"
            mapping[item] = sym
        return expr.xreplace(mapping)

    def display(self, rows: Sequence[tuple[str | None, sp.Expr | str]]) -> list[str]:
        """Lines of an align* for `rows`; long expressions get abbreviations, defined below them.

        A subexpression that occurs several times (``e^{l - |x - a|^2/2}`` in a mixture) is named
        ``u_{1}`` when that is what it takes to fit the expressions on the page, the way one would
        write it by hand.
        """
        exprs = [rhs for _, rhs in rows if isinstance(rhs, sp.Basic)]
        if all(self.w.fits(e) for e in exprs):
            return self.w.align(rows)
        shorter, definitions = self._abbreviate(exprs)
        if not definitions:
            return self.w.align(rows)
        replaced = iter(shorter)
        out = [(lhs, next(replaced) if isinstance(rhs, sp.Basic) else rhs) for lhs, rhs in rows]
        for k, (sym, definition) in enumerate(definitions):
            out.append((("\\text{where } " if k == 0 else "") + self.w.tex(sym), definition))
        return self.w.align(out)

    def _abbreviate(self, exprs: list[sp.Expr]) -> tuple[list[sp.Expr], list[tuple[sp.Symbol, sp.Expr]]]:
        """`exprs` with repeated subexpressions replaced by symbols, and the definitions of those symbols.

        Greedy: each round names the subexpression that saves the most width (occurrences − 1 times its
        width), until everything fits or nothing repeats.
        """
        current = list(exprs)
        definitions: list[tuple[sp.Symbol, sp.Expr]] = []
        while len(definitions) < _MAX_ABBREVIATIONS and not all(self.w.fits(e) for e in current):
            counts: dict[sp.Basic, int] = {}
            for e in current:
                _count_candidates(e, counts)
            scored = [
                (n, (c - 1) * self.w.width(n))
                for n, c in counts.items()
                if c >= 2 and self.w.width(n) >= _MIN_ABBREVIATED
            ]
            if not scored:
                break
            node = max(scored, key=lambda item: item[1])[0]
            sym = self._abbreviation_symbol(node)
            current = [e.xreplace({node: sym}) for e in current]
            definitions = [(d, e.xreplace({node: sym})) for d, e in definitions]
            definitions.append((sym, node))
        return current, definitions

    def _abbreviation_symbol(self, node: sp.Basic) -> sp.Symbol:
        """The same subexpression gets the same name everywhere in one derivation."""
        if node not in self.abbreviations:
            sym = sp.Dummy(f"abbrev{len(self.abbreviations) + 1}")
            self.printer._settings["symbol_names"][sym] = (
                f"{self.abbreviation_letter}_{{{len(self.abbreviations) + 1}}}"
            )
            self.abbreviations[node] = sym
        return self.abbreviations[node]

    def best(self, expr: sp.Expr) -> sp.Expr:
        """`expr`, or its form with sums rolled up when that is shorter and the explicit one is long.

        The rolled form is shown only when it expands back to exactly `expr` (checked).
        """
        lines = self.w.n_lines(expr)
        if lines <= _EXPLICIT_LINES or not self.rollable:
            return expr
        explicit = self.indexing.indexed(expr)
        rolled = self.indexing.reroll(explicit)
        if rolled == explicit or not self.indexing.same(rolled, explicit):
            return expr
        compact = self._printable(rolled)
        if self.w.n_lines(compact) >= lines:
            return expr
        return compact

    def sum_i(self) -> str:
        if self.d == 1:
            return ""
        lo, hi = self._index_range
        return rf"\sum_{{{self.tex(self.index)}={lo}}}^{{{hi}}}"

    # -- the coordinate weight (domain "nonnegative")
    def weight_name(self, k: int | None, prime: bool = False) -> str:
        """h(x_k), or h'(x_k); k None: at the general coordinate x_i."""
        return rf"{self.weight_letter}{chr(39) if prime else ''}({self.coord(k)})"

    def weight_at(self, coordinate: sp.Expr, prime: bool = False) -> sp.Expr:
        """h (or h′) at `coordinate`, an expression (a data Symbol, or the Indexed general coordinate)."""
        from ..model.model import WEIGHT_VARIABLE

        assert self.weight is not None
        expr = sp.diff(self.weight, WEIGHT_VARIABLE) if prime else self.weight
        return expr.xreplace({WEIGHT_VARIABLE: coordinate})

    def general_coordinate(self) -> sp.Expr:
        """x_i as an expression: the Indexed entry when the coordinates roll, else a symbol printed as x_i."""
        if self.rollable:
            return IndexedBase(_parse_indices(self.model.data[0].name)[0])[self.index]  # type: ignore[index]
        if self.d == 1:
            return self.model.data[0]
        sym = sp.Dummy("x_general", real=True)
        self.printer._settings["symbol_names"][sym] = self.coord(None)
        return sym

    def weighted_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """The pieces of the weighted derivation's text: h and h′ at x_i, and the boundary term of Step 4."""
        vec, coord_i, score_i = self.vec, ctx["coord_i"], ctx["score_i"]
        xg = self.general_coordinate()
        h_i, hp_i = self.weight_name(None), self.weight_name(None, prime=True)
        inner = rf"p_{{D}}({vec})\, {h_i}\, {score_i}({vec})"
        if self.d == 1:
            boundary = rf"\Bigl[{inner}\Bigr]_{{{vec}=0}}^{{{vec}=\infty}}"
        else:
            boundary = (
                rf"\int \Bigl[{inner}\Bigr]_{{{coord_i}=0}}^{{{coord_i}=\infty}} "
                rf"\prod_{{{self.other} \ne {ctx['i']}}} d{vec}_{{{self.other}}}"
            )
        return {
            "h_i": h_i,
            "hp_i": hp_i,
            "letter": self.weight_letter,
            "weight_lines": self.w.align(
                [(h_i, self._printable(self.weight_at(xg))), (hp_i, self._printable(self.weight_at(xg, prime=True)))]
            ),
            "boundary_term": boundary,
        }

    def partial(self, k: int | None, of: str = r"\log f") -> str:
        return rf"\frac{{\partial {of}}}{{\partial {self.coord(k)}}}"

    # -- components (score, ∂ᵢ² log f) with general term and a few of them for large d
    def components(
        self, exprs: Sequence[sp.Expr], lhs: Callable[[int | None], str], what: str, key: str
    ) -> tuple[list[list[str]], list[str]]:
        """([general-term lines] or [], component lines) for d expressions, one per coordinate."""
        o = self.options
        general_lines: list[list[str]] = []
        rolled = [self.indexing.reroll(self.indexing.indexed(e)) for e in exprs] if self.rollable else None
        if rolled is not None:
            general = self.indexing.general(rolled, self.labels, self.index)
            if general is not None:
                self.general[key] = general
                general_lines = [self.display([(lhs(None), self._printable(general))])]
        shown = list(range(self.d)) if self.d <= o.max_components else [*range(o.max_components - 1), self.d - 1]
        rows: list[tuple[str | None, sp.Expr | str]] = []
        for k in shown:
            if k == self.d - 1 and len(shown) < self.d:
                rows.append((r"\vdots", ""))
            rows.append((lhs(k), self.best(exprs[k])))
        notes = []
        if len(shown) < self.d:
            notes.append(
                f"With d = {self.d} coordinates, {len(shown)} of the {self.d} components of {what} are shown"
                + (" after the general term" if general_lines else "")
                + "; the others follow the same pattern, and the generated code uses all of them."
            )
        self.notes += notes
        return general_lines, self.display(rows)

    # -- the pieces of each step
    def context(self) -> dict[str, Any]:
        der, model = self.der, self.model
        d, vec = self.d, self.vec
        x = model.data
        ctx: dict[str, Any] = {}
        ctx["model_name"] = rf"$\texttt{{{_escape_text(model.name)}}}$"
        ctx["description"] = [_escape_text(model.description)] if model.description else []
        # Step 0
        space = r"\mathbf{R}" if self.weight is None else r"[0, \infty)"
        if d == 1:
            ctx["data_vector"] = rf"${vec} \in {space}$"
        else:
            coords = [self.tex(xi) for xi in x]
            shown = coords if d <= 4 else [coords[0], coords[1], r"\dots", coords[-1]]
            ctx["data_vector"] = _inline_tuple(rf"{vec} = ", shown, rf" \in {space}^{{{d}}}")
        # Z integrates f over the domain: written out on [0, ∞)^d, left implicit on R^d (as it always was)
        ctx["z_domain"] = "" if self.weight is None else (rf"_{{{space}}}" if d == 1 else rf"_{{{space}^{{{d}}}}}")
        ctx["d"] = str(d)
        params = [self.tex(p) for p in model.params]
        shown_p = params if len(params) <= 8 else [*params[:3], r"\dots", params[-1]]
        ctx["param_vector"] = _inline_tuple(r"\theta = ", shown_p, rf" \in \mathbf{{R}}^{{{model.n_params}}}")
        ctx["param_groups"] = self.group_descriptions()
        positive = [self.tex(p) for p in model.params if p in model.positive]
        ctx["constraints"] = [rf"${', '.join(positive)} > 0$"] if positive else []
        ctx["vec"] = vec
        ctx["sum_i"] = self.sum_i()
        ctx["coord_i"] = self.coord(None)
        ctx["index_range"] = self.index_range_text()
        ctx["score_i"] = self.score_name(None)
        ctx["i"] = self.tex(self.index)
        ctx["k"] = self.param_index
        if d == 1:
            ctx["coordinate_note"] = []
            ctx["components_intro"] = "For this model,"
            ctx["cross_terms_text"] = r"The cross term still contains the unknown score of $p_{D}$."
            ctx["held_fixed"] = ""
            ctx["for_each_coordinate"] = ""
        else:
            which = "" if self.data_family else f" of ${vec} = ({', '.join(self.tex(xi) for xi in x)})$"
            ctx["coordinate_note"] = [
                rf"Below, ${ctx['coord_i']}$ denotes a coordinate{which}, for ${self.index_range_text()}$."
            ]
            ctx["components_intro"] = "For this model, component by component,"
            ctx["cross_terms_text"] = (
                f"The cross terms, one for each of the $d = {d}$ coordinates, "
                "still contain the unknown score of $p_{D}$."
            )
            ctx["held_fixed"] = " (the other coordinates held fixed)"
            ctx["for_each_coordinate"] = ", for each coordinate,"
        ctx["boundary_term"] = (
            rf"\Bigl[p_{{D}}({vec})\, s_{{\theta}}({vec})\Bigr]_{{{vec}=-\infty}}^{{{vec}=\infty}}"
            if d == 1
            else rf"\int \Bigl[p_{{D}}({vec})\, {ctx['score_i']}({vec})\Bigr]_{{{ctx['coord_i']}=-\infty}}"
            rf"^{{{ctx['coord_i']}=\infty}} \prod_{{{self.other} \ne {ctx['i']}}} d{vec}_{{{self.other}}}"
        )
        # the domain: R^d (plain score matching) or [0, ∞)^d with the weight h (one-element lists switch the text)
        ctx["plain_domain"] = [True] if self.weight is None else []
        ctx["weighted"] = [self.weighted_context(ctx)] if self.weight is not None else []
        ctx["fisher_intro"] = (
            f"For this model the squared norm has $d = {d}$ terms:"
            if self.weight is None
            else f"For this model the weighted sum has $d = {d}$ terms:"
        )
        ctx["log_f_lines"] = self.log_f_lines()
        theta_only = [t for t in sp.Add.make_args(model.log_f) if not (t.free_symbols & set(x))]
        ctx["dropped_terms"] = [self.tex(sp.Add(*theta_only))] if theta_only else []
        # Step 1
        score_general, score_lines = self.components(
            der.score, lambda k: rf"{self.score_name(k)}({vec})", "the score", "score"
        )
        ctx["score_general"], ctx["score_lines"] = score_general, score_lines
        ctx["score_notes"] = self._take_notes()
        # Step 2 / 3: the squared norm for this model
        ctx["fisher_terms"] = self.fisher_terms()
        # Step 4
        ctx["boundary_lines"] = self.boundary_lines()
        hess_general, hess_lines = self.components(
            der.hessian_diag,
            lambda k: rf"\frac{{\partial {self.score_name(k)}}}{{\partial {self.coord(k)}}}",
            rf"$\partial^{{2}} \log f / \partial {self.coord(None)}^{{2}}$",
            "hessian",
        )
        ctx["hessian_general"], ctx["hessian_lines"] = hess_general, hess_lines
        ctx["hessian_notes"] = self._take_notes()
        # Step 5
        ctx["objective_lines"] = self.objective_lines()
        ctx["objective_notes"] = self._take_notes()
        grad_lines, grad_notes = self.gradient_lines()
        ctx["gradient_lines"] = grad_lines
        ctx["gradient_notes"] = grad_notes + self._take_notes()
        ctx["quadratic"] = self.quadratic_block()
        ctx["shortened"] = (
            ["Expressions marked (shortened) are cut for the page; the generated code uses them in full."]
            if self.w.shortened
            else []
        )
        return ctx

    def _take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def index_range_text(self) -> str:
        lo, hi = self._index_range
        i = self.tex(self.index)
        if self.d == 1:
            return rf"{i} = {lo}"
        if self.d == 2:
            return rf"{i} = {lo}, {hi}"
        return rf"{i} = {lo}, \dots, {hi}"

    def group_descriptions(self) -> list[str]:
        out = []
        for g in self.model.groups:
            if len(g.shape) != 2 or 1 in g.shape:
                continue
            symmetric = g.template == g.template.T and g.shape[0] == g.shape[1]
            kind = "symmetric " if symmetric else ""
            entries = "entries of the upper triangle" if symmetric else "distinct entries"
            out.append(
                rf"the {kind}${g.shape[0]} \times {g.shape[1]}$ matrix $\texttt{{{_escape_text(g.name)}}}$ "
                f"contributes its {g.size} {entries}, row by row"
            )
        return out

    def log_f_lines(self) -> list[str]:
        log_f = self.model.log_f
        rows: list[tuple[str, sp.Expr | str]] = []
        lhs = rf"\log f({self.vec};\theta)"
        if self.rollable and self.d >= 3:  # with two coordinates the sums save nothing
            rolled = self.indexing.reroll(self.indexing.indexed(log_f))
            if rolled != self.indexing.indexed(log_f) and self.indexing.same(rolled, self.indexing.indexed(log_f)):
                rows.append((lhs, self._printable(rolled)))
                if self.w.fits(log_f):
                    rows.append(("", log_f))
                return self.display(rows)
        return self.display([(lhs, log_f)])

    def fisher_terms(self) -> list[list[str]]:
        """The d squared differences of Step 2, written out for small d."""
        if self.d > self.options.max_components or self.d == 1:
            return []
        vec = self.vec
        log_p = rf"\log p_{{D}}({vec})"
        terms = [rf"\Bigl({self.partial(k, of=log_p)} - {self.score_name(k)}({vec})\Bigr)^{{2}}" for k in range(self.d)]
        lhs = rf"\bigl\|\nabla_{{{vec}}} \log p_{{D}}({vec}) - s_{{\theta}}({vec})\bigr\|^{{2}}"
        if self.weight is not None:  # Σ_i h(x_i) (∂_i log p_D − s_i)²
            terms = [rf"{self.weight_name(k)} {t}" for k, t in enumerate(terms)]
            diff_i = rf"\Bigl({self.partial(None, of=log_p)} - {self.score_name(None)}({vec})\Bigr)^{{2}}"
            lhs = rf"{self.sum_i()} {self.weight_name(None)} {diff_i}"
        per_row = 2 if self.weight is None else 1  # the weighted terms and their Σ are wider
        rows = [(lhs, " + ".join(terms[:per_row]))]
        rows += [(None, "+ " + " + ".join(terms[k : k + per_row])) for k in range(per_row, self.d, per_row)]
        return [self.w.align(rows)]

    def boundary_lines(self) -> list[str]:
        o = self.options
        shown = list(range(self.d)) if self.d <= o.max_components else [*range(o.max_components - 1), self.d - 1]
        rows: list[tuple[str, sp.Expr | str]] = []
        for k in shown:
            if k == self.d - 1 and len(shown) < self.d:
                rows.append((r"\vdots", ""))
            s = self.der.score[k]
            if self.w.width(s) <= o.line_width - (20 if self.weight is None else 40):
                body = self.tex(s)
                if s.is_Add or s.could_extract_minus_sign():
                    body = rf"\Bigl({body}\Bigr)"
            else:
                body = rf"{self.score_name(k)}({self.vec})"
            if self.weight is None:
                rows.append((rf"\lim_{{|{self.coord(k)}| \to \infty}} p_{{D}}(x)\, {body}", "0"))
                continue
            h = self.weight_name(k)
            rows.append((rf"\lim_{{{self.coord(k)} \to 0^{{+}}}} p_{{D}}(x)\, {h}\, {body}", "0"))
            rows.append((rf"\lim_{{{self.coord(k)} \to \infty}} p_{{D}}(x)\, {h}\, {body}", "0"))
        return self.w.align(rows)

    def objective_lines(self) -> list[list[str]]:
        der = self.der
        lhs = rf"\ell({self.vec};\theta)"
        objective = self.best(der.objective)
        if self.w.n_lines(objective) > _EXPLICIT_LINES and len(self.general) == 2:
            # Σ_i [∂_i² log f + ½ (∂_i log f)²] from the general terms (each checked for every i)
            lo, hi = self._index_range
            hessian, score = self.general["hessian"], self.general["score"]
            term = hessian + score**2 / 2
            if self.weight is not None:  # h(x_i) [∂_i² log f + ½ (∂_i log f)²] + h'(x_i) ∂_i log f
                xg = self.general_coordinate()
                term = self.weight_at(xg) * term + self.weight_at(xg, prime=True) * score
            objective = self._printable(sp.Sum(term, (self.index, lo, hi)))
        if self.w.n_lines(objective) <= self.options.max_lines:
            return [self.display([(lhs, objective)])]
        self.notes.append(
            r"Written out in full, $\ell$ is too long for the page; its pieces are the components of "
            "the second derivatives and of the score above."
        )
        return []

    def gradient_parts(self) -> list[tuple[sp.Symbol, sp.Expr, sp.Expr]]:
        """(θ_k, ∂ℓ/∂θ_k with the score components as s_{θ,i}, the same written out) for the shown θ_k.

        ∂ℓ/∂θ_k = Σ_i [∂θ_k ∂_i² log f + s_{θ,i} ∂θ_k s_{θ,i}], the chain rule applied to ℓ; with the weights of
        a model on [0, ∞)ᵈ, Σ_i [h_i ∂θ_k ∂_i² log f + (h_i s_{θ,i} + h_i′) ∂θ_k s_{θ,i}].
        """
        der, model = self.der, self.model
        d = self.d
        weights = der.weights or (sp.Integer(1),) * d
        slopes = der.weight_derivatives or (sp.Integer(0),) * d
        out = []
        for k in self._chosen_params():
            p = model.params[k]
            pieces = zip(der.hessian_diag, der.score, self.score_symbols, weights, slopes, strict=True)
            chain = sp.Add(*[w * sp.diff(h, p) + (w * S + dw) * sp.diff(s, p) for h, s, S, w, dw in pieces])
            out.append((p, chain, chain.xreplace(dict(zip(self.score_symbols, der.score, strict=True)))))
        return out

    def gradient_lines(self) -> tuple[list[str], list[str]]:
        rows: list[tuple[str, sp.Expr | str]] = []
        parts = self.gradient_parts()
        for p, chain, full in parts:
            lhs = rf"\frac{{\partial \ell}}{{\partial {self.tex(p)}}}"
            rows.append((lhs, self.best(chain)))
            if full != chain and self.w.n_lines(full) <= _EXPLICIT_LINES:
                rows.append(("", full))
        notes = []
        if len(parts) < self.model.n_params:
            notes.append(
                f"The gradient is shown for {len(parts)} of the $P = {self.model.n_params}$ parameters; the others "
                "are analogous, and the generated kernels compute all of them in the same pass over the data."
            )
        return self.display(rows), notes

    def _chosen_params(self) -> list[int]:
        n_params, limit = self.model.n_params, self.options.max_params
        if n_params <= limit:
            return list(range(n_params))
        firsts, offset = [], 0
        for g in self.model.groups:
            firsts.append(offset)
            offset += g.size
        chosen = firsts[:limit]
        for k in range(n_params):
            if len(chosen) >= limit:
                break
            if k not in chosen:
                chosen.append(k)
        return sorted(chosen)

    def quadratic_block(self) -> list[dict[str, Any]]:
        der, model = self.der, self.model
        if not der.is_quadratic:
            return []
        parts = der.quadratic_parts
        n_params = model.n_params
        block: dict[str, Any] = {"matrices": []}
        if n_params <= _MAX_MATRIX:
            A = sp.ImmutableMatrix(n_params, n_params, lambda k, l: parts.a_term(k, l))  # Σ_i h_i a_ik a_il
            b = sp.ImmutableMatrix(parts.b_terms)
            rows = [
                ("A(x)", self.tex(A)),
                ("b(x)", self.tex(b)),
            ]
            block["matrices"] = [self.w.align(rows)]
        return [block]


# ---------------------------------------------------------------------------------------------- public API


def derivation_latex(
    derivation: Derivation,
    full_document: bool = False,
    *,
    max_components: int = 4,
    max_params: int = 5,
    line_width: int = 56,
    max_lines: int = 12,
    symbol_names: Mapping[Any, str] | None = None,
    title: str | None = None,
    header: bool | None = None,
) -> str:
    """The score-matching derivation for `derivation.model`, step by step, as LaTeX.

    Parameters
    ----------
    derivation
        A `symsm.derive.Derivation` (``model.derive()``).
    full_document
        False: a fragment (plain text and ``align*``) for ``\\input`` or a notebook.
        True: a complete document that compiles with pdflatex and amsmath only.
    max_components
        With more coordinates than this, the general term and ``max_components`` components are shown.
    max_params
        With more parameters than this, the gradient is shown for the first parameter of each group
        (and the next ones up to ``max_params``).
    line_width
        Target width of a displayed line, in characters of the body font.
    max_lines
        Longer expressions are cut (visibly, with a note) after this many lines.
    symbol_names
        LaTeX for particular symbols, by Symbol or name (``{"lam": r"\\lambda"}``).
    title
        Title of the full document (default: the model's name).
    header
        Begin with the "generated by symsm — do not edit" comment lines (default: ``full_document``).
    """
    from ..derive.derivation import Derivation

    if not isinstance(derivation, Derivation):
        raise TypeError(f"derivation must be a symsm Derivation (model.derive()), got {type(derivation).__name__}")
    model = derivation.model
    domain = getattr(model, "domain", "real")
    if domain not in SUPPORTED_DOMAINS:
        raise LatexError(f"the LaTeX derivation supports the domains {SUPPORTED_DOMAINS}, not {domain!r}")
    options = _Options(
        max_components=_check_int(max_components, "max_components", 1),
        max_params=_check_int(max_params, "max_params", 1),
        line_width=_check_int(line_width, "line_width", 20),
        max_lines=_check_int(max_lines, "max_lines", 2),
    )
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    printer = _make_printer(model, symbol_names)
    ctx = _Builder(model, printer, options, derivation).context()
    header = full_document if header is None else bool(header)
    ctx["header_lines"] = _header_lines(model) if header else []
    ctx.update(
        _document_frame(full_document, title if title is not None else f"Score matching for the model {model.name}")
    )
    from ..core.templates import render

    return render("symsm.latex", "derivation.tex.j2", **ctx)


def _document_frame(full_document: bool, title: str) -> dict[str, Any]:
    """The template pieces around a derivation: a standalone article (preamble with `title`, \\end{document},
    sub-headings) or, for inclusion in another document, nothing around it and run-in headings."""
    if not full_document:
        return {"preamble_lines": [], "postamble_lines": [], "heading_open": "", "heading_close": "."}
    return {
        "preamble_lines": [
            r"\documentclass[11pt]{article}",
            r"\usepackage{amsmath}",
            r"\allowdisplaybreaks",
            r"\setlength{\textwidth}{6.5in}",
            r"\setlength{\oddsidemargin}{0in}",
            r"\setlength{\evensidemargin}{0in}",
            r"\setlength{\textheight}{9in}",
            r"\setlength{\topmargin}{-0.5in}",
            r"\setlength{\parindent}{0pt}",
            r"\setlength{\parskip}{0.6ex}",
            rf"\title{{{_escape_text(title)}}}",
            rf"\author{{generated by symsm {__version__}}}",
            r"\date{}",
            r"\begin{document}",
            r"\maketitle",
        ],
        "postamble_lines": [r"\end{document}"],
        "heading_open": r"\subsection*{",
        "heading_close": "}",
    }


def _header_lines(model: Model) -> list[str]:
    return [
        f"% generated by symsm {__version__} — do not edit",
        f"% model: {model.name}",
        f"% model-hash: {model.hash}",
    ]


def model_latex(model: Model, **options: Any) -> str:
    """``log f`` of `model` typeset for a notebook (``Model._repr_latex_``).

    As in Step 0 of the derivation: sums that the formula spells out are also shown rolled up, long
    lines are broken. Options: ``line_width``, ``max_lines``, ``symbol_names`` (see `derivation_latex`).
    """
    unknown = set(options) - {"line_width", "max_lines", "symbol_names"}
    if unknown:
        raise TypeError(f"model_latex got unexpected options: {', '.join(sorted(unknown))}")
    o = _Options(
        max_components=4,
        max_params=4,
        line_width=_check_int(options.get("line_width", 56), "line_width", 20),
        max_lines=_check_int(options.get("max_lines", 12), "max_lines", 2),
    )
    printer = _make_printer(model, options.get("symbol_names"))
    lines = _Builder(model, printer, o, None).log_f_lines()
    return "$$\\begin{aligned}\n" + "\n".join(lines) + "\n\\end{aligned}$$"


def pdflatex_available() -> bool:
    """True when a ``pdflatex`` executable is on PATH."""
    return shutil.which("pdflatex") is not None


def compile_pdf(tex_path: str | os.PathLike[str], *, timeout: float = 120.0, keep_log: bool = False) -> Path:
    """Compile `tex_path` with pdflatex (no shell escape) and put the ``.pdf`` next to it.

    pdflatex runs in a temporary directory, so its ``.aux`` and ``.log`` files do not litter the
    output folder (``keep_log=True`` keeps the ``.log`` next to the ``.pdf``, e.g. to look for overfull
    lines); on failure the error lines of the log are in the `LatexError`.
    """
    tex_path = Path(tex_path)
    if not tex_path.is_file():
        raise LatexError(f"tex_path: no such file {str(tex_path)!r}")
    exe = shutil.which("pdflatex")
    if exe is None:
        raise LatexError(
            "pdflatex was not found on PATH; install it (Debian/Ubuntu: "
            "apt-get install -y --no-install-recommends texlive-latex-base) or write the .tex only"
        )
    with tempfile.TemporaryDirectory(prefix="symsm-latex-") as work:
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", f"-output-directory={work}"]
        try:
            proc = subprocess.run(
                [*cmd, str(tex_path.resolve())],
                cwd=work,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LatexError(f"pdflatex did not finish within {timeout} s on {tex_path}") from None
        produced = Path(work) / (tex_path.stem + ".pdf")
        if proc.returncode != 0 or not produced.is_file():
            log = Path(work) / (tex_path.stem + ".log")
            text = log.read_text(errors="replace") if log.is_file() else proc.stdout
            errors = [ln for ln in text.splitlines() if ln.startswith("!") or ln.startswith("l.")]
            detail = "\n".join(errors[:10]) or text[-2000:]
            raise LatexError(f"pdflatex failed on {tex_path} (exit {proc.returncode}):\n{detail}")
        target = tex_path.with_suffix(".pdf")
        shutil.move(str(produced), target)
        if keep_log:
            shutil.move(str(Path(work) / (tex_path.stem + ".log")), tex_path.with_suffix(".log"))
    return target


def write_latex(
    derivation: Derivation | Model,
    path: str | os.PathLike[str],
    pdf: bool = False,
    *,
    keep_log: bool = False,
    **options: Any,
) -> LatexFiles:
    """Write the full LaTeX document of the derivation to `path` (and compile it to PDF if `pdf`).

    `derivation` may also be a `Model`, which is derived first. Options are those of
    `derivation_latex`. The file is written to a temporary name and renamed, so a reader never sees
    half a file.
    """
    from ..derive.derivation import Derivation
    from ..model.model import Model

    if isinstance(derivation, Model):
        derivation = derivation.derive()
    if not isinstance(derivation, Derivation):
        raise TypeError(f"derivation must be a Derivation or a Model, got {type(derivation).__name__}")
    path = Path(path)
    if path.suffix != ".tex":
        raise ValueError(f"path must end in .tex, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"path: the directory {str(path.parent)!r} does not exist")
    text = derivation_latex(derivation, full_document=True, **options)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return LatexFiles(tex=path, pdf=compile_pdf(path, keep_log=keep_log) if pdf else None)


def objective_latex(
    derivation: Derivation | Model,
    objective: Any = "sliced",
    full_document: bool = False,
    *,
    max_components: int = 4,
    line_width: int = 56,
    max_lines: int = 12,
    symbol_names: Mapping[Any, str] | None = None,
    title: str | None = None,
    header: bool | None = None,
    **objective_options: Any,
) -> str:
    """The derivation step of a sliced or denoising objective (symsm/derive/objectives.py) for one model, as LaTeX.

    `derivation_latex` derives the exact objective; this states what a randomised variant replaces and why it
    is still right: Hutchinson's identity E[vᵀHv] = tr H and g(t) = log f(x + tv) with g′(0) = vᵀs_θ and
    g″(0) = vᵀ(∇ₓ² log f)v for "sliced" and "sliced_vr" (g′(0) and, for small d, g″(0) written out for the
    model); x̃ = x + σε, the denoising identity, the model's score at x̃ and the O(σ²) bias for "denoising".
    `objective` is a name with its options (``n_directions=``, ``directions=``, ``noise_scale=``) or a
    `symsm.derive.objectives.Objective`; the other options are those of `derivation_latex`.
    """
    from ..derive.derivation import Derivation
    from ..derive.objectives import Denoising, Sliced, SlicedVR, make_objective
    from ..model.model import Model

    if isinstance(derivation, Model):
        derivation = derivation.derive()
    if not isinstance(derivation, Derivation):
        raise TypeError(f"derivation must be a Derivation or a Model, got {type(derivation).__name__}")
    spec = make_objective(objective, **objective_options)
    if not isinstance(spec, (Sliced, Denoising)):
        raise ValueError(
            f"objective_latex renders the sliced, sliced_vr and denoising objectives, not {spec.name!r}; "
            "the exact objective's derivation is derivation_latex(...)"
        )
    model = derivation.model
    spec.check_model(model)  # the variants integrate by parts over R^d only
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")
    options = _Options(
        max_components=_check_int(max_components, "max_components", 1),
        max_params=5,
        line_width=_check_int(line_width, "line_width", 20),
        max_lines=_check_int(max_lines, "max_lines", 2),
    )
    b = _Builder(model, _make_printer(model, symbol_names), options, derivation)
    names = b.printer._settings["symbol_names"]
    d, vec, x, score = b.d, b.vec, model.data, list(derivation.score)
    stems = {(p[0] if (p := _parse_indices(s.name)) else s.name) for s in (*x, *model.params)}
    i_tex = b.tex(b.index)

    def letter(candidates: Sequence[str], fallback: str) -> str:
        """The first candidate the model (and the abbreviations) do not use."""
        return next((c for c in candidates if c.lstrip("\\") not in stems and c != b.abbreviation_letter), fallback)

    ctx: dict[str, Any] = {
        "model_name": rf"$\texttt{{{_escape_text(model.name)}}}$",
        "vec": vec,
        "d": str(d),
        "sum_i": b.sum_i(),
        "coord_i": b.coord(None),
        "score_i": b.score_name(None),
        "log_f_lines": b.log_f_lines(),
    }
    coords = [b.tex(xi) for xi in x]
    shown = coords if d <= 4 else [coords[0], coords[1], r"\dots", coords[-1]]
    space = r"\mathbf{R}"
    ctx["data_vector"] = (
        rf"${vec} \in {space}$" if d == 1 else _inline_tuple(rf"{vec} = ", shown, rf" \in {space}^{{{d}}}")
    )
    params = [b.tex(p) for p in model.params]
    shown_p = params if len(params) <= 8 else [*params[:3], r"\dots", params[-1]]
    ctx["param_vector"] = _inline_tuple(r"\theta = ", shown_p, rf" \in \mathbf{{R}}^{{{model.n_params}}}")
    _, ctx["score_lines"] = b.components(score, lambda k: rf"{b.score_name(k)}({vec})", "the score", "score")
    ctx["score_notes"] = b._take_notes()
    ctx["sliced"], ctx["denoising"] = [], []
    if isinstance(spec, Sliced):
        v_letter = letter(("v", "u", "w", "r", "z"), r"\varpi")
        v = [sp.Dummy(f"direction{k}", real=True) for k in range(d)]  # printed v_0, v_1, ...
        for k, sym in enumerate(v):
            names[sym] = v_letter if d == 1 else rf"{v_letter}_{{{b.sub(k)}}}"
        v_i = v_letter if d == 1 else rf"{v_letter}_{{{i_tex}}}"
        v_j = v_letter if d == 1 else rf"{v_letter}_{{{b.other}}}"
        if d == 1:
            coord_j = b.coord(None)
        elif b.rollable:
            coord_j = b.tex(IndexedBase(_parse_indices(x[0].name)[0])[sp.Symbol(b.other, integer=True)])  # type: ignore[index]
        else:
            coord_j = rf"{vec}_{{{b.other}}}"
        first = sp.Add(*[vk * sk for vk, sk in zip(v, score, strict=True)])
        sliced: dict[str, Any] = {
            "title": "Sliced score matching" + (" with variance reduction" if isinstance(spec, SlicedVR) else ""),
            "v": v_letter,
            "v_i": v_i,
            "v_j": v_j,
            "coord_j": coord_j,
            "sum_ij": "" if d == 1 else rf"{b.sum_i()} \sum_{{{b.other}={b._index_range[0]}}}^{{{b._index_range[1]}}}",
            "M": str(spec.n_directions),
            "distribution": (
                r"with independent entries $\pm 1$ of probability $\frac{1}{2}$ each (Rademacher)"
                if spec.directions == "rademacher"
                else r"with independent standard normal entries"
            ),
            "first_lines": b.display([(r"g'(0)", first)]),
            "second_lines": [],
            "plain": [] if isinstance(spec, SlicedVR) else [True],
            "variance_reduced": [True] if isinstance(spec, SlicedVR) else [],
        }
        sliced["notes"] = b._take_notes()
        if d <= options.max_components:  # g″(0) = Σᵢ vᵢ² ∂ᵢ² log f + 2 Σ_{i<j} vᵢ vⱼ ∂ᵢ∂ⱼ log f, for a small model
            hd = derivation.hessian_diag
            second = sp.Add(
                *[v[k] ** 2 * hd[k] for k in range(d)],
                *[2 * v[k] * v[m] * sp.diff(score[k], x[m]) for k in range(d) for m in range(k + 1, d)],
            )
            if b.w.n_lines(second) <= options.max_lines:
                sliced["second_lines"] = [b.display([(r"g''(0)", second)])]
        if not sliced["second_lines"]:
            sliced["notes"].append(
                rf"Written out, $g''(0)$ has up to $d^{{2}} = {d * d}$ terms of second derivatives and is not shown; "
                "the generated code evaluates it as described next."
            )
        ctx["sliced"] = [sliced]
    else:
        eps_letter = letter((r"\varepsilon", r"\eta", r"\zeta"), r"\varrho")
        tilde = [sp.Dummy(f"xtilde{k}", real=True) for k in range(d)]
        for k, sym in enumerate(tilde):  # the noisy coordinates print as the model's own, with a tilde
            tex = b.tex(x[k])
            m = re.fullmatch(r"(\\?[A-Za-z]+)(_\{.*\})?", tex)
            names[sym] = rf"\tilde{{{m[1]}}}{m[2] or ''}" if m else rf"\tilde{{{tex}}}"
        noisy = [s.xreplace(dict(zip(x, tilde, strict=True))) for s in score]
        _, noisy_lines = b.components(
            noisy, lambda k: rf"{b.score_name(k)}(\tilde{{{vec}}})", r"the score at $\tilde{" + vec + "}$", "noisy"
        )
        ctx["denoising"] = [
            {
                "eps": eps_letter,
                "eps_i": eps_letter if d == 1 else rf"{eps_letter}_{{{i_tex}}}",
                "sigma": _number(spec.noise_scale),
                "K": str(spec.n_directions),
                "noisy_lines": noisy_lines,
                "notes": b._take_notes(),
            }
        ]
    ctx["quadratic"] = (
        [
            r"Every component of the score is affine in $\theta$ (an exponential family), and so is every term "
            + ("$g'(0)$, $g''(0)$" if isinstance(spec, Sliced) else rf"$s_{{\theta}}(\tilde{{{vec}}})$")
            + r" built from it: this objective, too, is exactly quadratic in $\theta$, and its minimiser has a "
            "closed form (\\texttt{symsm.fit} uses it)."
        ]
        if derivation.is_quadratic
        else []
    )
    ctx["shortened"] = (
        ["Expressions marked (shortened) are cut for the page; the generated code uses them in full."]
        if b.w.shortened
        else []
    )
    header = full_document if header is None else bool(header)
    ctx["header_lines"] = [*_header_lines(model), f"% objective: {spec.name} {spec.options()}"] if header else []
    default = f"{spec.name.replace('_', ' ')} score matching for the model {model.name}"
    ctx.update(_document_frame(full_document, title if title is not None else default))
    from ..core.templates import render

    return render("symsm.latex", "objective_variant.tex.j2", **ctx)


def _number(value: float) -> str:
    """A float as LaTeX: 0.3, or 2.5 \\cdot 10^{-5} where Python would write 2.5e-05."""
    mantissa, _, exponent = f"{value:g}".partition("e")
    return mantissa if not exponent else rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
