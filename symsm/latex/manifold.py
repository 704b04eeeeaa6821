"""Score matching on the unit sphere and the simplex for one model, as LaTeX (`manifold_latex`; the narrative
is ``templates/manifold.tex.j2``): the map to the sphere or to ℝ^{d−1} and its Jacobian (simplex), the
projected score, the divergence theorem with the weight, the Laplace–Beltrami operator and the empirical
objective (symsm/model/manifold.py derives them). `derivation_latex` hands models with these domains here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sympy as sp

from .printer import _make_printer

if TYPE_CHECKING:
    from ..derive.derivation import Derivation

__all__ = ["manifold_latex"]

#: score components longer than this (characters of LaTeX) are not written out
_MAX_SCORE_CHARS = 400


def manifold_latex(derivation: Derivation, *, frame: dict[str, Any], header_lines: list[str]) -> str:
    """The derivation of a model with domain "sphere" or "simplex" (see the module docstring); `frame` and
    `header_lines` are the document's frame and header from `derivation_latex`."""
    from ..core.templates import render

    model = derivation.model
    geometry, parts = model.geometry, derivation.manifold
    assert geometry is not None and parts is not None  # derivation_latex sends only these models here
    printer = _make_printer(model, None)
    coord = "z" if geometry.transform != "alr" else "y"
    named = {zi: sp.Symbol(f"{coord}_{j}") for j, zi in enumerate(geometry.coords)}
    tex = lambda e: printer.doprint(sp.sympify(e).xreplace(named))  # noqa: E731
    vec = ",".join(printer.doprint(x) for x in model.data)
    ctx: dict[str, Any] = {
        "model_name": _text(model.name),
        "vec": vec,
        "coord": coord,
        "log_f": tex(model.log_f),
        "header_lines": header_lines,
        "simplex_map": [],
        "on_sphere": [],
        "on_real": [],
    }
    d = model.dim
    if geometry.transform is None:
        ctx["domain_text"] = rf"the unit sphere $S^{{{d - 1}}} \subset \mathbf{{R}}^{{{d}}}$ (rows of norm 1)"
        ctx["vec"] = coord
        ctx["log_f"] = tex(model.log_f.xreplace({x: sp.Symbol(f"z_{j}") for j, x in enumerate(model.data)}))
        ctx["coord"] = coord
    else:
        ctx["domain_text"] = rf"the simplex $\{{u \in [0, \infty)^{{{d}}} : \sum_j u_j = 1\}}$"
    if geometry.transform == "sqrt":
        ctx["simplex_map"] = [
            {
                "text": r"The square-root map $z_j = \sqrt{u_j}$ takes the simplex to the positive part of the unit "
                rf"sphere $S^{{{d - 1}}}$; its inverse $u_j = z_j^2$ has the Jacobian (surface measure to the "
                r"simplex's measure)",
                "jacobian": r"du = 2^{d-1}\sqrt{d}\, \prod_j z_j \, d\sigma(z), \qquad "
                r"\log J(z) = \sum_j \log z_j + \text{const},",
                "log_g": tex(geometry.log_f),
            }
        ]
    elif geometry.transform == "alr":
        ctx["simplex_map"] = [
            {
                "text": rf"The additive log-ratio map $y_j = \log(u_j / u_{{{d - 1}}})$, $j < {d - 1}$, takes the open "
                rf"simplex to $\mathbf{{R}}^{{{d - 1}}}$; its inverse $u_j = e^{{y_j}} / (1 + \sum_k e^{{y_k}})$ has",
                "jacobian": r"\Bigl|\det \frac{\partial u}{\partial y}\Bigr| = \prod_{j} u_j, \qquad "
                r"\log J = \sum_j \log u_j,",
                "log_g": tex(geometry.log_f),
            }
        ]
    score_lines = _score_lines(geometry.coords, parts.score, tex)
    if geometry.kind == "sphere":
        if geometry.weight is None:
            weight_text = "here $h = 1$"
            boundary = (
                r"with no boundary term on the whole sphere, a manifold without boundary."
                if geometry.transform is None
                else r"with the boundary term $h\, p\, \nabla_S g \cdot n$ on $\{z_j = 0\}$, which vanishes only "
                r"when $p \nabla_S g \to 0$ there (a boundary weight removes the condition)."
            )
        else:
            weight_text = f"here $h(z) = {tex(geometry.weight)}$"
            boundary = (
                r"with no boundary term: $h$ vanishes where the positive part of the sphere has its boundary "
                r"$\{z_j = 0\}$ (Scealy and Wood 2023); $h$ is Lipschitz, so its gradient exists almost everywhere."
                if geometry.transform is not None
                else r"with no boundary term on the whole sphere."
            )
            if parts is not None and geometry.transform == "sqrt":
                boundary += (
                    r" The objective is evaluated expanded, without its terms free of $\theta$ (infinite at zeros "
                    r"of $z$, where $h$ vanishes): $\tilde J$ is reported up to a constant."
                )
        ctx["on_sphere"] = [
            {"dim": d - 1, "m": d, "score_lines": score_lines, "weight_text": weight_text, "boundary_text": boundary}
        ]
    else:
        ctx["on_real"] = [{"m": d - 1, "score_lines": score_lines}]
    ctx["quadratic_note"] = (
        [
            r"Every component of $\nabla g$ is affine in $\theta$, so $\tilde J$ is quadratic in $\theta$ and its "
            r"minimiser has a closed form, $\hat\theta = -A^{-1} b$ "
            r"(on the sphere $A = \mathrm{mean}\, h F^{\top} P F$ "
            r"with $F$ the Jacobian of $\nabla g$ in $\theta$)."
        ]
        if derivation.is_quadratic
        else []
    )
    ctx.update(frame)
    return render("symsm.latex", "manifold.tex.j2", **ctx)


def _score_lines(coords: Any, score: Any, tex: Any) -> list[str]:
    lines = []
    for j, (_, s) in enumerate(zip(coords, score, strict=True)):
        body = tex(s)
        if len(body) > _MAX_SCORE_CHARS:
            body = r"\text{(long: see \texttt{symsm derive})}"
        lines.append(rf"\partial_{{{j}}} g &= {body} \\" if j < len(coords) - 1 else rf"\partial_{{{j}}} g &= {body}")
    return lines


def _text(name: str) -> str:
    from .printer import _escape_text

    return r"$\texttt{" + _escape_text(name) + "}$"
