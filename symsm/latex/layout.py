"""Line layout: the estimated typeset width of an expression, long equations broken across the lines of an
``align*`` (and shortened visibly), long tuples across lines of text; the layout options.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sympy as sp
from sympy.simplify.radsimp import fraction

from .printer import SymsmLatexPrinter


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
