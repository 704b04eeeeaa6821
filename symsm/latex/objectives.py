"""The derivation step of the sliced, sliced_vr and denoising objectives for one model, as LaTeX
(`objective_latex`; the narrative is ``templates/objective_variant.tex.j2``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sympy as sp

from .derivation import _as_derivation, _Builder, _document_frame, _header_lines
from .layout import _check_int, _Options
from .printer import _escape_text, _make_printer

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..model.model import Model

__all__ = ["objective_latex"]


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
    from ..derive.objectives import Denoising, Sliced, SlicedVR, make_objective

    derivation = _as_derivation(derivation)
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
    i_tex = b.tex(b.index)

    def letter(candidates: Sequence[str], fallback: str) -> str:
        """The first candidate the model (and the abbreviations) do not use."""
        return next((c for c in candidates if c.lstrip("\\") not in b.stems and c != b.abbreviation_letter), fallback)

    ctx: dict[str, Any] = {
        "model_name": rf"$\texttt{{{_escape_text(model.name)}}}$",
        "vec": vec,
        "d": str(d),
        "sum_i": b.sum_i(),
        "coord_i": b.coord(None),
        "score_i": b.score_name(None),
        "log_f_lines": b.log_f_lines(),
    }
    ctx["data_vector"] = b.data_vector(r"\mathbf{R}")
    ctx["param_vector"] = b.param_vector()
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
            coord_j = b.tex(b.indexed_coordinate(sp.Symbol(b.other, integer=True)))
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
    ctx["shortened"] = b.shortened_note()
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
