"""The Stein identity and the kernel Stein discrepancy (KSD) for one model's score, as LaTeX.

The companion of `derivation_latex` for model criticism (``symsm.ksd_test``): the model's score written out,
the Stein operator and why its expectation under the model vanishes (integration by parts on ℝᵈ, the
normaliser cancelling in s = ∇ log f), the KSD as a supremum over the unit ball of the kernel's RKHS and its
closed form through the Stein kernel u_θ, the kernel and its derivatives, u_θ with this model's score, and
the U-statistic with its wild bootstrap. The narrative lives in ``templates/stein.tex.j2``; every
instantiated piece is computed here, with symsm's LaTeX printer (the symbol names of the derivation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sympy as sp

from .._version import __version__
from .printer import SymsmLatexPrinter

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..model.model import Model

__all__ = ["stein_latex"]

KERNELS = ("imq", "gaussian")
_INDEXED = re.compile(r"(?P<stem>[A-Za-z]+)_?(?P<index>\d+)")
MAX_PRODUCT_CHARS = 600  # a product of scores printed longer than this is not shown
_SECOND_POINT = ("y", "z", "w", "v")  # the letter of the second point, the first the model does not use


def _escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_"}
    special |= {"{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(c, c) for c in text)


def _number(value: float) -> str:
    mantissa, _, exponent = f"{value:g}".partition("e")
    return mantissa if not exponent else rf"{mantissa} \cdot 10^{{{int(exponent)}}}"


def stein_latex(
    model: Model | Derivation,
    full_document: bool = False,
    *,
    kernel: str = "imq",
    c: float = 1.0,
    beta: float = -0.5,
    bandwidth: float | None = None,
    max_components: int = 4,
    symbol_names: Mapping[Any, str] | None = None,
    title: str | None = None,
) -> str:
    """The Stein identity and the KSD goodness-of-fit test for the model's score, as LaTeX.

    model : a `Model` on ℝᵈ (or its `Derivation`). kernel, c, beta : the kernel of `symsm.ksd_test`
    ("imq": (c² + ‖x−y‖²/h²)^β; "gaussian": exp(−‖x−y‖²/(2h²))); bandwidth : h as a number, or None to keep
    the symbol h. max_components : the score is written out component by component up to this d (the
    general formulas are shown for any d). full_document : a fragment for a notebook (``_repr_latex_``-safe:
    text and display math only) or a complete document for pdflatex with amsmath. symbol_names : LaTeX for
    particular symbols, by Symbol or name.
    """
    from ..derive.derivation import Derivation
    from ..model.model import Model

    if isinstance(model, Derivation):
        derivation = model
    elif isinstance(model, Model):
        derivation = model.derive()
    else:
        raise TypeError(f"model must be a symsm Model or Derivation, got {type(model).__name__}")
    mdl = derivation.model
    if mdl.domain != "real":
        raise NotImplementedError(
            f"stein_latex: model {mdl.name!r} has domain {mdl.domain!r}; the Stein identity is written for ℝᵈ only "
            "(a bounded domain needs a weighted Stein operator)"
        )
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "imq" and not (isinstance(c, (int, float)) and c > 0):
        raise ValueError(f"c must be a positive number, got {c!r}")
    if kernel == "imq" and not (isinstance(beta, (int, float)) and -1 < beta < 0):
        raise ValueError(f"beta must be in (−1, 0), got {beta!r}")
    if bandwidth is not None and not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive number or None, got {bandwidth!r}")
    if isinstance(max_components, bool) or not isinstance(max_components, int) or max_components < 1:
        raise ValueError(f"max_components must be an integer ≥ 1, got {max_components!r}")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a string, got {type(title).__name__}")

    names: dict[sp.Basic, str] = {}
    by_name = {s.name: s for s in (*mdl.data, *mdl.params)}
    for key, given in (symbol_names or {}).items():
        sym = by_name.get(key) if isinstance(key, str) else key
        if sym is None or sym not in by_name.values():
            raise ValueError(f"symbol_names: {key!r} is not a data or parameter symbol of the model")
        if not isinstance(given, str) or not given:
            raise ValueError(f"symbol_names[{key!r}] must be a non-empty LaTeX string, got {given!r}")
        names[sym] = given
    printer = SymsmLatexPrinter({"symbol_names": names})

    d = mdl.dim
    x = list(mdl.data)
    parsed = [_INDEXED.fullmatch(s.name) for s in x]
    stems = {m["stem"] for m in parsed if m is not None}
    used = {(m["stem"] if (m := _INDEXED.fullmatch(s.name)) else s.name) for s in (*mdl.data, *mdl.params)}
    family = all(m is not None for m in parsed) and len(stems) == 1
    vec = next(iter(stems)) if family else "x"
    if d == 1:
        vec = printer.doprint(x[0])
    other = next((v for v in _SECOND_POINT if v not in used and v != vec), r"\eta")
    # the second point y: fresh symbols printed y_0, y_1, ... (the model's own indices when it has them)
    y = [sp.Dummy(f"second{k}", real=True) for k in range(d)]
    for k, sym in enumerate(y):
        index = parsed[k]["index"] if family and parsed[k] is not None else str(k + 1)  # type: ignore[index]
        names[sym] = other if d == 1 else rf"{other}_{{{index}}}"
    at_y = dict(zip(x, y, strict=True))

    score = [sp.sympify(s) for s in derivation.score]
    score_y = [s.xreplace(at_y) for s in score]

    def tex(expr: sp.Basic) -> str:
        return printer.doprint(expr)

    def subscript(k: int) -> str:
        return parsed[k]["index"] if family and parsed[k] is not None else str(k + 1)  # type: ignore[index]

    def score_name(k: int) -> str:
        return r"s_{\theta}" if d == 1 else rf"s_{{\theta,{subscript(k)}}}"

    shown = range(d) if d <= max_components else range(min(2, d))
    score_lines = [rf"{score_name(k)}({vec}) &= {tex(score[k])}" for k in shown]
    score_lines = [line + r" \\" for line in score_lines[:-1]] + score_lines[-1:]
    score_note = (
        []
        if d <= max_components
        else [f"(the first two of the $d = {d}$ components are shown; the others follow the same pattern)"]
    )

    h_tex = "h" if bandwidth is None else _number(float(bandwidth))
    # the two scalar products of the Stein kernel, for this model: shown in their shortest printed form
    dot_ss = sp.Add(*[a * b for a, b in zip(score, score_y, strict=True)])
    dot_cross = sp.Add(*[(sy - sx) * (xi - yi) for sx, sy, xi, yi in zip(score, score_y, x, y, strict=True)])
    products = []
    if d <= max_components:
        for lhs, expr in (
            (rf"s_{{\theta}}({vec})^{{\top}} s_{{\theta}}({other})", dot_ss),
            (rf"\bigl(s_{{\theta}}({other}) - s_{{\theta}}({vec})\bigr)^{{\top}}({vec} - {other})", dot_cross),
        ):
            forms = [tex(expr)]
            if sp.count_ops(expr) < 150:
                forms += [tex(sp.factor(expr)), tex(sp.cancel(expr))]
            best = min(forms, key=len)
            if len(best) <= MAX_PRODUCT_CHARS:
                products.append(rf"{lhs} &= {best}")
        products = [line + r" \\" for line in products[:-1]] + products[-1:]

    # the kernel, its derivatives and u_θ as sympy expressions in placeholders, printed with symsm's printer
    q, hh, r2 = sp.Symbol("q", positive=True), sp.Symbol("h", positive=True), sp.Symbol("r2", nonnegative=True)
    ss, cr, kk, tr = (sp.Symbol(n) for n in ("ss", "cr", "kk", "tr"))
    names[hh] = h_tex
    names[r2] = rf"\|{vec} - {other}\|^{{2}}"
    names[ss] = rf"s_{{\theta}}({vec})^{{\top}} s_{{\theta}}({other})"
    names[cr] = rf"\bigl(s_{{\theta}}({other}) - s_{{\theta}}({vec})\bigr)^{{\top}}({vec} - {other})"
    names[kk] = rf"k({vec}, {other})"
    names[tr] = rf"\operatorname{{tr}} \nabla_{{{vec}}} \nabla_{{{other}}} k"
    names[q] = "q"
    dd = sp.Integer(d)
    if kernel == "imq":
        b, c2 = sp.nsimplify(beta), sp.nsimplify(c) ** 2
        grad = 2 * b * q ** (b - 1) / hh**2  # ∇ₓk = grad · (x − y)
        trace = -2 * b / hh**2 * (2 * (b - 1) * q ** (b - 2) * r2 / hh**2 + dd * q ** (b - 1))
        u = q**b * ss + grad * cr + trace
        kern_tex = {"k": rf"q^{{{tex(b)}}}", "q": tex(c2 + r2 / hh**2), "c": _number(float(c)), "beta": tex(b)}
    else:
        grad = -kk / hh**2
        trace = kk * (dd / hh**2 - r2 / hh**4)
        u = kk * (ss - cr / hh**2 + dd / hh**2 - r2 / hh**4)
        kern_tex = {"k": tex(sp.exp(-r2 / (2 * hh**2)))}
    kernel_ctx = {
        **kern_tex,
        "grad": rf"{tex(grad)}\, ({vec} - {other})",
        "trace": tex(trace),
        "u": tex(sp.collect(sp.expand(u), [ss, cr], evaluate=True)) if kernel == "imq" else tex(u),
    }

    ctx: dict[str, Any] = {
        "model_name": rf"$\texttt{{{_escape(mdl.name)}}}$",
        "vec": vec,
        "other": other,
        "d": str(d),
        "space": r"\mathbf{R}" if d == 1 else rf"\mathbf{{R}}^{{{d}}}",
        "log_f_lines": _model_lines(mdl, symbol_names),
        "score_lines": score_lines,
        "score_notes": score_note,
        "products": products,
        "kernel_name": "inverse multiquadric (IMQ)" if kernel == "imq" else "Gaussian",
        "h": "" if bandwidth is None else rf" = {h_tex}",
        "imq": [kernel_ctx] if kernel == "imq" else [],
        "gaussian": [kernel_ctx] if kernel == "gaussian" else [],
    }
    if full_document:
        default = f"The kernel Stein discrepancy for the model {mdl.name}"
        ctx["preamble_lines"] = [
            f"% generated by symsm {__version__} — do not edit",
            f"% model: {mdl.name}",
            f"% model-hash: {mdl.hash}",
            r"\documentclass[11pt]{article}",
            r"\usepackage{amsmath}",
            r"\allowdisplaybreaks",
            r"\setlength{\parindent}{0pt}",
            r"\setlength{\parskip}{0.6ex}",
            rf"\title{{{_escape(title if title is not None else default)}}}",
            rf"\author{{generated by symsm {__version__}}}",
            r"\date{}",
            r"\begin{document}",
            r"\maketitle",
        ]
        ctx["postamble_lines"] = [r"\end{document}"]
        ctx["heading_open"], ctx["heading_close"] = r"\subsection*{", "}"
    else:
        ctx["preamble_lines"], ctx["postamble_lines"] = [], []
        ctx["heading_open"], ctx["heading_close"] = "", "."
    from ..core.templates import render

    return render("symsm.latex", "stein.tex.j2", **ctx)


def _model_lines(model: Model, symbol_names: Mapping[Any, str] | None) -> list[str]:
    """log f as the derivation's Step 0 shows it (`model_latex`: sums rolled up, long lines broken)."""
    from . import model_latex

    text = model_latex(model, symbol_names=symbol_names)
    body = text.removeprefix("$$\\begin{aligned}\n").removesuffix("\n\\end{aligned}$$")
    return body.split("\n")
