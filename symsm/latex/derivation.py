"""The score-matching derivation for one model, Steps 0 to 5, as LaTeX (`derivation_latex`; the narrative is
``templates/derivation.tex.j2``), and ``log f`` alone for a notebook (`model_latex`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import sympy as sp
from sympy.tensor.indexed import Indexed, IndexedBase

from .._version import __version__
from .layout import _check_int, _inline_tuple, _Options, _Writer
from .printer import (
    LatexError,
    SymsmLatexPrinter,
    _escape_text,
    _join_indices,
    _make_printer,
    _parse_indices,
    _stem_latex,
)
from .sums import _count_candidates, _Indexing

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..model.model import Model

__all__ = ["SUPPORTED_DOMAINS", "derivation_latex", "model_latex"]

#: Domains whose boundary condition the derivation states: R^d (Hyvärinen 2005) and the non-negative orthant
#: with the model's coordinate weight h (generalized score matching, Hyvärinen 2007; Yu, Drton & Shojaie 2019).
SUPPORTED_DOMAINS = ("real", "nonnegative", "box", "sphere", "simplex")

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


class _Builder:
    """Computes every instantiated piece of the template for one model (and its derivation)."""

    def __init__(self, model: Model, printer: SymsmLatexPrinter, options: _Options, der: Derivation | None) -> None:
        self._der = der  # needed by `context`, not by `log_f_lines`
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
        self.stems = {(p[0] if (p := _parse_indices(n)) else n) for n in names}  # letters the model uses
        self.abbreviation_letter = next((c for c in _ABBREVIATION_LETTERS if c not in self.stems), r"\omega")
        # domain "nonnegative": the coordinate weight h, printed with a letter the model does not use
        self.weight: sp.Expr | None = getattr(model, "weight_expr", None)
        taken = self.stems | {self.abbreviation_letter}
        self.weight_letter = next((c for c in _WEIGHT_LETTERS if c not in taken), r"\varphi")

    # -- notation

    @property
    def der(self) -> Derivation:
        """The derivation (given to every builder that writes more than log f)."""
        assert self._der is not None, "this builder was made for log f only"
        return self._der

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
            return self.tex(self.indexed_coordinate(self.index))
        return rf"{self.vec}_{{{self.tex(self.index)}}}"

    def indexed_coordinate(self, index: sp.Symbol) -> Indexed:
        """The coordinate with index `index` as an Indexed entry (x[i]); only when the coordinates roll."""
        return IndexedBase(_parse_indices(self.model.data[0].name)[0])[index]  # type: ignore[index]

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
            return self.indexed_coordinate(self.index)
        if self.d == 1:
            return self.model.data[0]
        sym = sp.Dummy("x_general", real=True)
        self.printer._settings["symbol_names"][sym] = self.coord(None)
        return sym

    def box_tex(self) -> str:
        """The box as a set: [a, b]^d when every coordinate has the same interval, else a product of intervals."""
        assert self.model.box is not None
        lower, upper = self.model.box.arrays()
        intervals = [_interval_tex(a, b) for a, b in zip(lower, upper, strict=True)]
        if len(set(intervals)) == 1:
            return intervals[0] if self.d == 1 else rf"{intervals[0]}^{{{self.d}}}"
        if self.d <= 4:
            return r" \times ".join(intervals)
        return rf"{intervals[0]} \times \dots \times {intervals[-1]}"

    def box_weight_lines(self) -> list[str]:
        """h(t), then hᵢ = h(δᵢ(xᵢ)) and its derivative in xᵢ for the shown coordinates (each has its own bounds)."""
        from ..model.model import WEIGHT_VARIABLE

        der = self.der
        assert self.weight is not None and der.weights is not None and der.weight_derivatives is not None
        rows: list[tuple[str | None, sp.Expr | str]] = [(rf"{self.weight_letter}(t)", self._printable(self.weight))]
        t = sp.Symbol("t", real=True)
        rows[0] = (rows[0][0], self._printable(self.weight.xreplace({WEIGHT_VARIABLE: t})))
        shown = self.shown_components()
        for k in shown:
            if k == self.d - 1 and len(shown) < self.d:
                rows.append((r"\vdots", ""))
            rows.append((self.weight_name(k), self._printable(der.weights[k])))
            rows.append((self.weight_name(k, prime=True), self._printable(der.weight_derivatives[k])))
        return self.w.align(rows)

    def weighted_context(self, ctx: dict[str, Any]) -> dict[str, Any]:
        """The pieces of the weighted derivation's text: h and h′ at x_i, and the boundary term of Step 4."""
        vec, coord_i, score_i = self.vec, ctx["coord_i"], ctx["score_i"]
        xg = self.general_coordinate()
        h_i, hp_i = self.weight_name(None), self.weight_name(None, prime=True)
        inner = rf"p_{{D}}({vec})\, {h_i}\, {score_i}({vec})"
        box = self.model.domain == "box"
        lo, hi = (rf"a_{{{ctx['i']}}}", rf"b_{{{ctx['i']}}}") if box else ("0", r"\infty")
        if self.d == 1:
            lo, hi = ("a", "b") if box else (lo, hi)
            boundary = rf"\Bigl[{inner}\Bigr]_{{{vec}={lo}}}^{{{vec}={hi}}}"
        else:
            boundary = (
                rf"\int \Bigl[{inner}\Bigr]_{{{coord_i}={lo}}}^{{{coord_i}={hi}}} "
                rf"\prod_{{{self.other} \ne {ctx['i']}}} d{vec}_{{{self.other}}}"
            )
        letter = self.weight_letter
        if box:
            weight_lines = self.box_weight_lines()
            texts = {
                "domain_text": rf"the box ${self.box_tex()}$",
                "boundary_text": "the finite ends of their intervals",
                "weight_text": (
                    rf" ${letter}$ of its distance $\delta_{{{ctx['i']}}}({coord_i}) = \min({coord_i} - {lo}, {hi} - "
                    rf"{coord_i})$ to the nearer finite end of its interval $[{lo}, {hi}]$ (one-sided where an end is "
                    rf"infinite; $1$ where both are), writing ${h_i}$ for ${letter}(\delta_{{{ctx['i']}}}({coord_i}))$ "
                    rf"and ${hp_i}$ for its derivative in ${coord_i}$:"
                ),
                "interval_i": rf"[{lo}, {hi}]",
                "ends_text": (
                    rf"At an infinite end this holds when $p_{{D}}$ decays fast enough; at a finite end, where "
                    rf"$p_{{D}}$ need not vanish, it holds because the distance to it is $0$ and ${letter}(0) = 0$, "
                    rf"for model scores that stay bounded near the end (or grow more slowly than $1/{letter}$)."
                ),
            }
        else:
            weight_lines = self.w.align(
                [(h_i, self._printable(self.weight_at(xg))), (hp_i, self._printable(self.weight_at(xg, prime=True)))]
            )
            texts = {
                "domain_text": "the non-negative orthant",
                "boundary_text": rf"the boundary ${coord_i} = 0$",
                "weight_text": "",
                "interval_i": r"[0, \infty)",
                "ends_text": (
                    rf"At ${coord_i} \to \infty$ this holds when $p_{{D}}$ decays fast enough; at ${coord_i} = 0$, "
                    rf"where $p_{{D}}$ need not vanish, it holds because ${letter}(0) = 0$, for model scores that stay "
                    rf"bounded near $0$ (or grow more slowly than $1/{letter}$)."
                ),
            }
        return {
            **texts,
            "h_i": h_i,
            "hp_i": hp_i,
            "letter": self.weight_letter,
            "weight_lines": weight_lines,
            "boundary_term": boundary,
            # a capped or kinked weight (min, max): h′ is taken piecewise, and the text says so
            "kinked": [True] if self.weight is not None and self.weight.has(sp.Min, sp.Max) else [],
        }

    def partial(self, k: int | None, of: str = r"\log f") -> str:
        return rf"\frac{{\partial {of}}}{{\partial {self.coord(k)}}}"

    # -- components (score, ∂ᵢ² log f) with general term and a few of them for large d
    def components(
        self, exprs: Sequence[sp.Expr], lhs: Callable[[int | None], str], what: str, key: str
    ) -> tuple[list[list[str]], list[str]]:
        """([general-term lines] or [], component lines) for d expressions, one per coordinate."""
        general_lines: list[list[str]] = []
        rolled = [self.indexing.reroll(self.indexing.indexed(e)) for e in exprs] if self.rollable else None
        if rolled is not None:
            general = self.indexing.general(rolled, self.labels, self.index)
            if general is not None:
                self.general[key] = general
                general_lines = [self.display([(lhs(None), self._printable(general))])]
        shown = self.shown_components()
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

    def shown_components(self) -> list[int]:
        """All d coordinates, or for large d the first max_components − 1 and the last one."""
        o = self.options
        return list(range(self.d)) if self.d <= o.max_components else [*range(o.max_components - 1), self.d - 1]

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
        ctx["data_vector"] = self.data_vector(space)
        # Z integrates f over the domain: written out on [0, ∞)^d, left implicit on R^d (as it always was)
        ctx["z_domain"] = "" if self.weight is None else (rf"_{{{space}}}" if d == 1 else rf"_{{{space}^{{{d}}}}}")
        if model.domain == "box":
            box = self.box_tex()
            ctx["data_vector"] = self.data_vector(box, power=False)
            ctx["z_domain"] = rf"_{{{box}}}"
        ctx["d"] = str(d)
        ctx["param_vector"] = self.param_vector()
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
        ctx["shortened"] = self.shortened_note()
        return ctx

    def data_vector(self, space: str, power: bool = True) -> str:
        """``x ∈ space`` or ``x = (x_0, …, x_{d-1}) ∈ space^d`` as inline math (a long tuple with ``\\dots``);
        `power` False: `space` is already the whole set (a box)."""
        if self.d == 1:
            return rf"${self.vec} \in {space}$"
        coords = [self.tex(xi) for xi in self.model.data]
        shown = coords if self.d <= 4 else [coords[0], coords[1], r"\dots", coords[-1]]
        return _inline_tuple(rf"{self.vec} = ", shown, rf" \in {space}^{{{self.d}}}" if power else rf" \in {space}")

    def param_vector(self) -> str:
        """``θ = (θ_1, …, θ_P) ∈ R^P`` as inline math (a long tuple with ``\\dots``)."""
        params = [self.tex(p) for p in self.model.params]
        shown = params if len(params) <= 8 else [*params[:3], r"\dots", params[-1]]
        return _inline_tuple(r"\theta = ", shown, rf" \in \mathbf{{R}}^{{{self.model.n_params}}}")

    def shortened_note(self) -> list[str]:
        """The note under a document in which some expression had to be cut, else nothing."""
        if not self.w.shortened:
            return []
        return ["Expressions marked (shortened) are cut for the page; the generated code uses them in full."]

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
        rows: list[tuple[str | None, str]] = [(lhs, " + ".join(terms[:per_row]))]
        rows += [(None, "+ " + " + ".join(terms[k : k + per_row])) for k in range(per_row, self.d, per_row)]
        return [self.w.align(rows)]

    def boundary_lines(self) -> list[str]:
        o = self.options
        shown = self.shown_components()
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
            box = self.model.box
            lo, hi = ("0^{+}", r"\infty") if box is None else _box_ends(*(a[k] for a in box.arrays()))
            rows.append((rf"\lim_{{{self.coord(k)} \to {lo}}} p_{{D}}(x)\, {h}\, {body}", "0"))
            rows.append((rf"\lim_{{{self.coord(k)} \to {hi}}} p_{{D}}(x)\, {h}\, {body}", "0"))
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
            if self.weight is not None and self.model.domain == "box":  # hᵢ differs by coordinate: no general term
                objective = self.best(der.objective)
            elif self.weight is not None:  # h(x_i) [∂_i² log f + ½ (∂_i log f)²] + h'(x_i) ∂_i log f
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
        assert parts is not None  # the derivation is quadratic
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
    if getattr(model, "geometry", None) is not None:  # sphere and simplex: symsm/latex/manifold.py
        from .manifold import manifold_latex

        with_header = full_document if header is None else bool(header)
        return manifold_latex(
            derivation,
            frame=_document_frame(
                full_document, title if isinstance(title, str) else f"Score matching for the model {model.name}"
            ),
            header_lines=_header_lines(model) if with_header else [],
        )
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
    ctx = _Builder(model, printer, options, cast("Derivation", _Shown(derivation))).context()
    header = full_document if header is None else bool(header)
    ctx["header_lines"] = _header_lines(model) if header else []
    ctx.update(
        _document_frame(full_document, title if title is not None else f"Score matching for the model {model.name}")
    )
    from ..core.templates import render

    return render("symsm.latex", "derivation.tex.j2", **ctx)


class _Shown:
    """A derivation whose score and ∂ᵢ² log f are their display forms (`Derivation.readable`: simplified for
    reading, equal to the derivation's), and whose objective is built from them; everything else is the
    derivation's own."""

    def __init__(self, derivation: Derivation) -> None:
        self._derivation = derivation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._derivation, name)

    @property
    def score(self) -> tuple[sp.Expr, ...]:
        return self._derivation.readable.score

    @property
    def hessian_diag(self) -> tuple[sp.Expr, ...]:
        return self._derivation.readable.hessian_diag

    @property
    def objective(self) -> sp.Expr:
        """Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²] (weighted on [0, ∞)ᵈ) from the display forms of its pieces: each
        piece reads simply and the text still shows where every term comes from."""
        der = self._derivation
        if der.weights is None:
            return sp.Add(*self.hessian_diag) + sp.Rational(1, 2) * sp.Add(*[s**2 for s in self.score])
        assert der.weight_derivatives is not None
        parts = zip(der.weights, der.weight_derivatives, self.hessian_diag, self.score, strict=True)
        return sp.Add(*[h * hd + sp.Rational(1, 2) * h * s**2 + dh * s for h, dh, hd, s in parts])


def _as_derivation(derivation: Derivation | Model) -> Derivation:
    """`derivation`, or the derivation of a `Model`; anything else is a TypeError."""
    from ..derive.derivation import Derivation
    from ..model.model import Model

    if isinstance(derivation, Model):
        derivation = derivation.derive()
    if not isinstance(derivation, Derivation):
        raise TypeError(f"derivation must be a Derivation or a Model, got {type(derivation).__name__}")
    return derivation


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


def _number_tex(v: float) -> str:
    return rf"{'-' if v < 0 else ''}\infty" if math.isinf(v) else f"{v:g}"


def _interval_tex(a: float, b: float) -> str:
    """[a, b], (−∞, b], [a, ∞) or (−∞, ∞) in LaTeX."""
    return f"{'(' if math.isinf(a) else '['}{_number_tex(a)}, {_number_tex(b)}{')' if math.isinf(b) else ']'}"


def _box_ends(a: float, b: float) -> tuple[str, str]:
    """The limits of coordinate k's interval for the boundary terms: a⁺ and b⁻, or ∓∞."""
    lo = r"-\infty" if math.isinf(a) else f"{a:g}^{{+}}"
    hi = r"\infty" if math.isinf(b) else f"{b:g}^{{-}}"
    return lo, hi
