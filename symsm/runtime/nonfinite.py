"""Why J̃ or ∇θJ̃ is not finite: the first rows that make it so, and the reason for each.

`CompiledLoss.value` and `value_and_grad` raise `symsm.NonFiniteError` with this diagnosis instead of
returning nan or inf. Rows and columns are 0-based indices into X, as everywhere in symsm's messages.

* **Which rows**: the per-row integrand (and, when only the gradient is not finite, the per-row θ-gradient,
  in chunks) is evaluated at θ; the first `SHOWN` rows with a non-finite value are named.
* **Data or parameters**: if every row is affected, θ is outside the model's domain (a parameter problem:
  e.g. a scale of 0, degrees of freedom ≤ 0); if only some are, those rows are the problem (a data problem).
* **The reason** for the first row: log f's derivatives at that row are evaluated exactly by sympy (50
  digits). A finite exact value means floating point overflowed or underflowed on the way (rescale the data,
  or write the formula in a stabler form); a value that is infinite or not real means the model itself is
  not defined there (e.g. the log of a negative number).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import NonFiniteError

if TYPE_CHECKING:
    from .loss import CompiledLoss

__all__ = ["SHOWN", "check_finite", "diagnose"]

SHOWN = 5  # rows named in the message
EXACT_MAX_OPS = 2000  # larger integrands are not evaluated exactly for the reason (it would take too long)
GRAD_CHUNK = 4096


def check_finite(loss: CompiledLoss, theta: Any, X: Any, value: float, grad: np.ndarray | None = None) -> None:
    """Raise NonFiniteError (with `diagnose`) when `value` or `grad` is not finite."""
    if math.isfinite(value) and (grad is None or bool(np.isfinite(grad).all())):
        return
    what = "J̃(θ)" if not math.isfinite(value) else "∇θJ̃(θ)"
    raise diagnose(loss, theta, X, what)


def diagnose(loss: CompiledLoss, theta: Any, X: Any, what: str = "J̃(θ)") -> NonFiniteError:
    """The error for a non-finite `what` at θ on rows X (see the module docstring)."""
    if not isinstance(X, np.ndarray):
        return NonFiniteError(f"{what} is not finite on these data at this θ (the rows are not checked one by one)")
    bad = ~np.isfinite(loss.per_sample(theta, X))
    part = "the integrand"
    if not bad.any() and what != "J̃(θ)":
        part = "the θ-gradient of the integrand"
        bad = np.zeros(X.shape[0], dtype=bool)
        for start in range(0, X.shape[0], GRAD_CHUNK):
            rows = loss.per_sample_grad(theta, X[start : start + GRAD_CHUNK])
            bad[start : start + GRAD_CHUNK] = ~np.isfinite(rows).all(axis=1)
    n, rows = X.shape[0], np.flatnonzero(bad)
    if rows.size == 0:
        return NonFiniteError(
            f"{what} is not finite although every row's integrand is: the sum over the N = {n} rows overflowed"
        )
    names = loss.model.param_names
    th = np.asarray(theta, dtype=np.float64).ravel()
    at = ", ".join(f"{k} = {v:.6g}" for k, v in zip(names, th, strict=True))
    shown = ", ".join(f"row {i} ({_row_text(loss, X[i])})" for i in rows[:SHOWN])
    more = f" and {rows.size - SHOWN} more" if rows.size > SHOWN else ""
    if rows.size == n:
        message = (
            f"{what} is not finite: {part} is not finite at every row (N = {n}), so θ is outside the model's "
            f"domain — a parameter problem, not the data: {at}"
        )
        return NonFiniteError(message + _reason(loss, th, X[rows[0]]), tuple(int(i) for i in rows[:SHOWN]), True)
    message = (
        f"{what} is not finite: {part} is not finite at {rows.size} of N = {n} rows, first {shown}{more} — a data "
        f"problem (the other rows are fine at this θ)"
    )
    return NonFiniteError(message + _reason(loss, th, X[rows[0]]), tuple(int(i) for i in rows[:SHOWN]), False)


def _row_text(loss: CompiledLoss, row: np.ndarray) -> str:
    return ", ".join(f"{x} = {v:.6g}" for x, v in zip(loss.model.data_names, row, strict=False))


def _reason(loss: CompiledLoss, theta: np.ndarray, row: np.ndarray) -> str:
    """'; reason: …' for one row, from an exact evaluation of the derivation (or '' when too large)."""
    try:
        import sympy as sp

        model = loss.model
        if loss.objective != "exact" or model.dim * sp.count_ops(model.log_f) > EXACT_MAX_OPS:
            return ""
        der = loss.derivation
        subs = {**dict(zip(model.params, theta, strict=True)), **dict(zip(model.data, row, strict=False))}
        subs = {k: sp.Float(float(v), 30) for k, v in subs.items()}
        exact = der.objective.evalf(50, subs=subs)
    except Exception:  # the diagnosis is best effort; the error itself is raised anyway
        return ""
    if exact.is_real and exact.is_finite:
        return (
            f"; reason: floating-point overflow or underflow — the exact integrand there is {float(exact):.6g}, so "
            "rescale the data or write log f in a stabler form"
        )
    return "; reason: the model is not defined there (log f or its derivatives are infinite or not real)"
