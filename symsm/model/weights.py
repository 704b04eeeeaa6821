"""genscore's named coordinate weights h(t) (Yu, Drton & Shojaie; the R package genscore's ``get_h_hp``).

``Model(weight="min_pow")`` or ``Model(weight=("min_pow", 2, 1))`` takes one of these by name with its
parameters (para, para2; each 1 when not given, scad's para2 2), as genscore defines them. Each is built as a
sympy expression in t and then checked like any weight (h(0) = 0, h′(0) finite, h > 0 for t > 0), and its h′
is derived exactly (piecewise for the capped ones) rather than copied: genscore's hand-written h′ of
min_asinh and min_sinh compares ``para <= sinh(para2)/x`` where ``x <= asinh(para2)/para`` is meant. The
step-wise ones (mcp, scad, truncated_sin, truncated_tan) are written with min and max, which is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy as sp

from ..core.errors import ModelError

__all__ = ["NAMED_WEIGHTS", "named_weight"]

_Builder = Callable[[sp.Symbol, sp.Expr, sp.Expr], sp.Expr]


def _scad(t: sp.Symbol, lam: sp.Expr, gamma: sp.Expr) -> sp.Expr:
    # λt up to λ, (2γλt − t² − λ²)/(2(γ − 1)) up to γλ, λ²(γ + 1)/2 beyond: the middle piece at m = clamp(t)
    m = sp.Min(sp.Max(t, lam), gamma * lam)
    return lam * sp.Min(t, lam) + (2 * gamma * lam * m - m**2 - lam**2) / (2 * (gamma - 1)) - lam**2


def _softplus(t: sp.Symbol, p: sp.Expr) -> sp.Expr:
    return sp.log(1 + sp.exp(p * t)) - sp.log(2)


#: name → (number of parameters, default para2, h(t, para, para2))
NAMED_WEIGHTS: dict[str, tuple[int, int, _Builder]] = {
    "asinh": (1, 1, lambda t, p, q: sp.asinh(p * t)),
    "cosh": (1, 1, lambda t, p, q: sp.cosh(p * t) - 1),
    "exp": (1, 1, lambda t, p, q: sp.exp(p * t) - 1),
    "identity": (0, 1, lambda t, p, q: t),
    "log_pow": (1, 1, lambda t, p, q: sp.log(1 + t) ** p),
    "mcp": (2, 1, lambda t, p, q: p * sp.Min(t, p * q) - sp.Min(t, p * q) ** 2 / (2 * q)),
    "min_asinh": (2, 1, lambda t, p, q: sp.Min(sp.asinh(p * t), q)),
    "min_cosh": (2, 1, lambda t, p, q: sp.Min(sp.cosh(p * t) - 1, q)),
    "min_exp": (2, 1, lambda t, p, q: sp.Min(sp.exp(p * t) - 1, q)),
    "min_log_pow": (2, 1, lambda t, p, q: sp.Min(sp.log(1 + t), q) ** p),
    "min_pow": (2, 1, lambda t, p, q: sp.Min(t, q) ** p),
    "min_sinh": (2, 1, lambda t, p, q: sp.Min(sp.sinh(p * t), q)),
    "min_softplus": (2, 1, lambda t, p, q: sp.Min(_softplus(t, p), q)),
    "pow": (1, 1, lambda t, p, q: t**p),
    "scad": (2, 2, _scad),
    "sinh": (1, 1, lambda t, p, q: sp.sinh(p * t)),
    "softplus": (1, 1, lambda t, p, q: _softplus(t, p)),
    "tanh": (1, 1, lambda t, p, q: sp.tanh(p * t)),
    "truncated_sin": (1, 1, lambda t, p, q: sp.sin(p * sp.Min(t, sp.pi / (2 * p)))),
    "truncated_tan": (1, 1, lambda t, p, q: sp.tan(p * sp.Min(t, sp.pi / (4 * p)))),
}


def named_weight(name: Any, *params: Any) -> sp.Lambda:
    """genscore's weight `name` with its parameters (para, para2) as a sympy Lambda h(t)."""
    if not isinstance(name, str) or name not in NAMED_WEIGHTS:
        raise ModelError(f"weight: unknown named weight {name!r}; the named weights are {', '.join(NAMED_WEIGHTS)}")
    n, default2, build = NAMED_WEIGHTS[name]
    if len(params) > n:
        raise ModelError(
            f"weight: {name} takes {n} parameter(s) (para{', para2' if n == 2 else ''}), got {len(params)}"
        )
    values = [_parameter(v, name, k) for k, v in enumerate(params)]
    p = values[0] if values else sp.Integer(1)
    q = values[1] if len(values) > 1 else sp.Integer(default2)
    if name == "scad" and not q > 1:
        raise ModelError(f"weight: scad needs para2 > 1, got {q}")
    t = sp.Symbol("t", real=True)
    return sp.Lambda(t, build(t, p, q))


def _parameter(value: Any, name: str, k: int) -> sp.Expr:
    label = f"weight: {name}'s para{'' if k == 0 else '2'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"{label} must be a positive number, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ModelError(f"{label} must be positive and finite, got {value!r}")
    return sp.Rational(repr(float(value)))  # the decimal the user wrote, exactly (it rounds back to the same double)
