"""The sympy LaTeX printer: symbol names as mathematicians write them (``mu0`` → ``\\mu_{0}``, ``W_0_1`` →
``W_{01}``) with their indices, textbook term order; also text-mode escaping and `LatexError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import sympy as sp
from sympy.printing.latex import LatexPrinter, translate

from ..core.errors import SymsmError

if TYPE_CHECKING:
    from ..model.model import Model

__all__ = ["LatexError", "SymsmLatexPrinter", "latex_symbol_name"]

_SINGLE_INDEX = re.compile(r"(?P<stem>[A-Za-z]+)(?P<index>\d+)")
_MULTI_INDEX = re.compile(r"(?P<stem>[A-Za-z]+)(?P<indices>(?:_\d+)+)")
_PLAIN = re.compile(r"[A-Za-z]+")


class LatexError(SymsmError):
    """The LaTeX of a derivation cannot be produced or compiled (e.g. pdflatex is missing or fails)."""


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


def _parse_indices(name: str) -> tuple[str, tuple[int, ...]] | None:
    if m := _MULTI_INDEX.fullmatch(name):
        return m["stem"], tuple(int(i) for i in m["indices"].split("_")[1:])
    if m := _SINGLE_INDEX.fullmatch(name):
        return m["stem"], (int(m["index"]),)
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

    def _print_Heaviside(self, expr: sp.Expr, exp: str | None = None) -> str:
        """The step in the derivative of a capped weight (min, max) as an indicator, 𝟏[u > 0]: sympy's θ(u)
        would read as the parameter vector θ."""
        tex = rf"\mathbf{{1}}\left[{self._print(expr.args[0])} > 0\right]"
        return tex if exp is None else rf"{tex}^{{{exp}}}"

    def _needs_mul_brackets(self, expr: sp.Expr, first: bool = False, last: bool = False) -> bool:
        """A function application carries its own brackets; sympy's rule for Sums does not apply."""
        if isinstance(expr, sp.Function):
            return False
        return super()._needs_mul_brackets(expr, first=first, last=last)


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
