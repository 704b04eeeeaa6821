"""The derivation as text: what `print(der)`, `str(der)` and `symsm derive` show (one function, one text).

Expressions are shown in their display forms (symsm/derive/display.py: simplified for reading, equal to the
derivation's). `pretty=True` draws them two-dimensionally (sympy's unicode pretty printer); a formula that
spans several lines is aligned so that its label sits on the formula's baseline (the fraction bar of a
fraction) and every other line starts in the formula's column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sympy as sp

if TYPE_CHECKING:
    from .derivation import Derivation

__all__ = ["GRADIENT_PRINT_NODES", "derivation_text", "labelled", "show_gradient"]

GRADIENT_PRINT_NODES = 1000  # objectives larger than this get their symbolic θ-gradient only on request


def _order(expr: Any) -> str | None:
    # sympy's default ordering of a sum costs terms × symbols in time and memory: fine for a small model,
    # gigabytes for a long polynomial in thousands of parameters, which is printed unordered instead.
    return None if len(expr.free_symbols) <= 64 else "none"


def sstr(expr: Any) -> str:
    """One-line text of an expression (sympy's str, unordered for very large ones)."""
    return sp.sstr(expr, order=_order(expr))


def _pretty_lines(expr: Any) -> tuple[list[str], int]:
    """The lines of sympy's unicode pretty form of `expr` and the index of its baseline."""
    from sympy.printing.pretty.pretty import PrettyPrinter

    printer = PrettyPrinter({"use_unicode": True, "order": _order(expr), "wrap_line": False})
    form = printer._print(expr)
    lines = str(form).split("\n")
    return lines, min(max(form.baseline, 0), len(lines) - 1)


def labelled(label: str, expr: Any, pretty: bool = False) -> str:
    """`label` followed by `expr`; in pretty form the label sits on the formula's baseline and the other lines
    are indented to the formula's first column."""
    if not pretty:
        return f"{label}{sstr(expr)}"
    lines, baseline = _pretty_lines(expr)
    pad = " " * len(label)
    text = "\n".join(((label if i == baseline else pad) + line).rstrip() for i, line in enumerate(lines))
    return text + "\n" if len(lines) > 1 else text  # a blank line after a formula of several lines


def _nodes_at_most(expr: Any, limit: int) -> bool:
    return all(count < limit for count, _ in enumerate(sp.preorder_traversal(expr)))


def show_gradient(der: Derivation, gradient: bool | None) -> bool:
    """True: always; False: never; None: only for objectives small enough to differentiate quickly.

    The symbolic θ-gradient of a nested objective grows much faster than the objective (a 16-level nest of
    exp takes tens of seconds and prints a megabyte), so a short hostile file must not hang `derive`.
    """
    if gradient is not None:
        return gradient
    return _nodes_at_most(der.objective, GRADIENT_PRINT_NODES)


def derivation_text(
    der: Derivation,
    *,
    pretty: bool = False,
    gradient: bool | None = None,
    stage: Callable[[str], Any] | None = None,
) -> str:
    """The derivation as text (see the module docstring). `gradient`: see `show_gradient`; `stage(name)`, if
    given, is a context manager entered around each step (the CLI's --verbose timing)."""
    from contextlib import nullcontext

    step = stage or (lambda name: nullcontext())
    model = der.model
    shown = der.readable
    out: list[str] = []
    x = model.data_names
    out.append(f"model {model.name}" + (f" — {model.description}" if model.description else ""))
    out.append(
        f"data x = ({', '.join(x)}), d = {model.dim}; parameters θ = ({', '.join(model.param_names)}), "
        f"P = {model.n_params}"
    )
    out.append("")
    out.append(labelled("log f(x; θ) = ", model.log_f, pretty))
    with step(f"score and ∂ᵢ² log f (d = {model.dim})"):
        score, hessian = shown.score, shown.hessian_diag
    geometry = getattr(model, "geometry", None)
    coords = x if geometry is None else _coordinate_names(model, geometry)
    if geometry is not None:
        out += ["", _geometry_text(model, geometry)]
    out += ["", "score ∂ᵢ log f"]
    out += [labelled(f"  ∂/∂{name} log f = ", e, pretty) for name, e in zip(coords, score, strict=True)]
    out += ["", "second derivatives ∂ᵢ² log f"]
    out += [labelled(f"  ∂²/∂{name}² log f = ", e, pretty) for name, e in zip(coords, hessian, strict=True)]
    out.append("")
    if geometry is not None and geometry.kind == "sphere":
        out.append(
            "per-sample objective h [½‖P∇ log f‖² + Δ_S log f] + (P∇h)ᵀ(P∇ log f), P = I − zzᵀ, "
            "Δ_S g = Σᵢ ∂ᵢ²g − zᵀ(∇²g)z − (m − 1) zᵀ∇g  (J̃(θ) is its mean)"
        )
    elif der.weights is None:
        out.append("per-sample objective Σᵢ [∂ᵢ² log f + ½ (∂ᵢ log f)²]  (J̃(θ) is its mean over the data)")
    elif model.domain == "box" and model.box is not None:  # h of the distance to the box's boundary
        out.append(
            f"domain {model.box.describe(model.data_names)}, weight h(t) = {sstr(model.weight_expr)}, "
            "hᵢ = h(distᵢ), distᵢ = min(xᵢ − aᵢ, bᵢ − xᵢ) (one-sided where a bound is infinite, hᵢ = 1 where both are)"
        )
        out += [f"  h_{name} = {sstr(h)}" for name, h in zip(x, der.weights, strict=True)]
    else:  # domain "nonnegative": generalized score matching with the coordinate weight h
        out.append(f"domain [0, ∞)^{model.dim}, weight h(t) = {sstr(model.weight_expr)}, hᵢ = h(xᵢ)")
        out.append("per-sample objective Σᵢ [hᵢ ∂ᵢ² log f + ½ hᵢ (∂ᵢ log f)² + hᵢ′ ∂ᵢ log f]  (J̃(θ) is its mean)")
    with step("per-sample objective"):
        out.append(labelled("  ", shown.objective, pretty))
    quadratic = "yes: every score is affine in θ, so J̃ is quadratic and the fit is in closed form"
    out += ["", f"quadratic in θ: {quadratic if der.is_quadratic else 'no (fitted by L-BFGS-B)'}"]
    if show_gradient(der, gradient):
        with step(f"θ-gradient (P = {model.n_params})"):
            grads = shown.gradient
        out += ["", "gradient of the per-sample objective ∂/∂θₖ"]
        out += [labelled(f"  ∂/∂{name} = ", e, pretty) for name, e in zip(model.param_names, grads, strict=True)]
    elif gradient is None:
        out += [
            "",
            f"the θ-gradient is not printed: the objective has more than {GRADIENT_PRINT_NODES} nodes, so its "
            "symbolic gradient is slow to form and very long (the kernels compute it by reverse accumulation); "
            "--gradient prints it anyway",
        ]
    return "\n".join(out)


def _coordinate_names(model: Any, geometry: Any) -> list[str]:
    """The names of the coordinates of score matching: the data's on the sphere, z_j = √u_j, y_j = alr."""
    names = model.data_names
    if geometry.transform == "sqrt":
        return [f"z{j}" for j in range(len(names))]
    if geometry.transform == "alr":
        return [f"y{j}" for j in range(len(names) - 1)]
    return names


def _geometry_text(model: Any, geometry: Any) -> str:
    """One paragraph on where score matching happens (symsm/model/manifold.py)."""
    names = model.data_names
    if geometry.weight_name == "ones":
        weight = "h = 1"
    elif geometry.weight_name == "custom":
        weight = f"h(x) = {sstr(geometry.weight)}"
    else:
        weight = f"h = {geometry.weight_name} (a_c = {geometry.a_c})"
    if geometry.transform is None:
        return f"domain: the unit sphere S^{model.dim - 1} (rows of norm 1), manifold score matching, {weight}"
    if geometry.transform == "sqrt":
        return (
            f"domain: the simplex, mapped to the sphere by z = √u (u_j = z_j²); log f in z adds the Jacobian "
            f"Σ log z_j; {weight}; shown in z, with z_j = √{names[0]} etc. in the kernels"
        )
    return (
        f"domain: the simplex, mapped to ℝ^{model.dim - 1} by y_j = log({names[0]}/{names[-1]}) …; log f in y adds "
        f"the log-Jacobian Σ log u_j; shown with y written back in the data"
    )
