"""Robust score matching by Windham weighting (Windham 1995; as scorematchingad's `Windham`).

Rows are weighted by w_t ∝ f(x_t; c∘θ)/f(x_t; 0) — the model's density at the parameters scaled by the
tuning constants c (one per parameter), without its base measure — so that points the current fit finds
unlikely (outliers) count less. For an exponential family log f = θᵀF(x) + b(x), reweighting f_θ by
f_{c∘θ}/f_0 gives f_{(1+c)∘θ}: the weighted fit estimates (1+c)∘θ, and the estimate is corrected by the
tuning constants, θ ← θ̃/(1 + c). The map θ → θ̃(w(θ))/(1 + c) is iterated to its fixed point
(`WindhamResult.fixed_point_residual` = the last change). Parameters with c_k = 0 are left as the
weighted fit gives them.

Against scorematchingad's `Windham()`: the weights are the same whenever its density has no base measure
outside θ (its PPI: w ∝ exp(u_Lᵀ(c∘A)u_L) when c is 0 on β) — symsm divides by f(x; 0) so that the identity
above holds for any base measure, and substitutes c∘θ into the formula, so a term whose c_k is 0 vanishes
exactly (0·log 0 at a zero part is 0). The defaults differ in where the iteration starts and when it stops:
scorematchingad starts at a given θ and stops at max |Δθ| < tol (absolute) or after MaxIter steps; symsm starts
at the unweighted fit and stops on the change relative to max(1, max |θ|), which does not depend on the scale
of θ (PPI's A has entries ~10⁵, where an absolute 1e-10 is a few units in the last place, so the iteration
count depends on rounding). `Windham(c, start=θ₀, criterion="absolute", maxiter=n)` is scorematchingad's
convention. The start matters: the map can have several fixed points (on the TCAP microbiome data the
unweighted fit leads to a different one from Scealy et al.'s start; tests/test_windham_ppi.py).

Standard errors are not given (the sandwich of the fixed point needs the derivative of the weights).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends import DEFAULT_BACKEND
from ..core.arrays import as_data
from ..model.model import Model
from ..runtime.compiled import CompiledLoss
from .fit import FitResult, fit, register_variant
from .penalized import _loss_of

__all__ = ["Windham", "WindhamResult", "log_density", "tilt_log_density", "windham_fit"]


_CRITERIA = ("relative", "absolute")


@dataclass(frozen=True)
class Windham:
    """Windham weighting.

    c: the tuning constants c ≥ 0 — a number for every parameter, an array with one per parameter, or a dict
    {group or parameter name: number} (unnamed parameters get 0, which leaves them out of the weights and of
    the correction); tol: the stopping threshold; maxiter: at most this many reweighted fits (the result is
    the last iterate, `converged=False`, when the threshold was not met); start: θ at which the iteration
    starts (None: the unweighted fit); criterion: "relative" (``max |Δθ| / max(1, max |θ|) ≤ tol``) or
    "absolute" (``max |Δθ| < tol``, scorematchingad's FixedPoint convention).
    """

    c: Any = 0.1
    tol: float = 1e-10
    maxiter: int = 200
    start: Any = None
    criterion: str = "relative"

    def __post_init__(self) -> None:
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not self.tol > 0:
            raise ValueError(f"Windham: tol must be a number > 0, got {self.tol!r}")
        if isinstance(self.maxiter, bool) or not isinstance(self.maxiter, (int, np.integer)) or self.maxiter < 1:
            raise ValueError(f"Windham: maxiter must be an integer ≥ 1, got {self.maxiter!r}")
        if self.criterion not in _CRITERIA:
            raise ValueError(f"Windham: criterion must be one of {_CRITERIA}, got {self.criterion!r}")


@dataclass(repr=False)
class WindhamResult(FitResult):
    """`symsm.fit(..., robust=Windham(c))`: θ at the Windham fixed point (no SEs), with the tuning constants,
    the final row weights (normalised to mean 1), the iterations and the last change of θ (`Windham.criterion`);
    `converged` is False when maxiter stopped the iteration first."""

    tuning: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    windham_iter: int = 0
    fixed_point_residual: float = math.nan
    inner: FitResult | None = None


def log_density(model: Model) -> Any:
    """A numpy function (θ, X) → log f(x_t; θ) per row, from the model's formula (sympy.lambdify)."""
    import sympy as sp

    fn = sp.lambdify([list(model.params), list(model.data)], model.log_f, modules="numpy")

    def evaluate(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        out = fn(list(theta), [X[:, i] for i in range(X.shape[1])])
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (X.shape[0],)).copy()

    return evaluate


def _tuning(model: Model, c: Any) -> np.ndarray:
    if isinstance(c, Mapping):
        arr = np.zeros(model.n_params)
        names = model.param_names
        offsets = np.cumsum([0] + [g.size for g in model.groups])
        groups = {g.name: (int(off), g.size) for g, off in zip(model.groups, offsets, strict=False)}
        for name, value in c.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"Windham: c[{name!r}] must be a number, got {value!r}")
            if name in names:
                arr[names.index(name)] = float(value)
            elif name in groups:
                off, size = groups[name]
                arr[off : off + size] = float(value)
            else:
                raise ValueError(
                    f"Windham: c has an unknown parameter {name!r}; groups: {sorted(groups)}, parameters: {names}"
                )
    else:
        try:
            arr = np.asarray(c, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"Windham: c must be a number, an array or a dict of numbers, got {c!r}") from None
    if arr.ndim == 0:
        arr = np.full(model.n_params, float(arr))
    if arr.shape != (model.n_params,):
        raise ValueError(
            f"Windham: c must be a number or have one entry per parameter ({model.n_params}), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("Windham: the tuning constants c must be finite and ≥ 0")
    return arr


def tilt_log_density(model: Model, tuning: np.ndarray) -> Any:
    """A numpy function (θ, X) → log f(x_t; c∘θ) − log f(x_t; 0) per row, the log of the Windham weight.

    Built from the formula with c∘θ substituted: parameters with c_k = 0 are replaced by the number 0, so their
    terms vanish exactly (0·log u at a zero part u = 0 is 0, not nan), and the base measure (θ-free terms)
    cancels symbolically."""
    import sympy as sp

    scaled = model.log_f.xreplace(
        {p: sp.Float(float(ck)) * p if ck != 0 else sp.S.Zero for p, ck in zip(model.params, tuning, strict=True)}
    )
    expr = sp.expand(scaled - model.log_f.xreplace(dict.fromkeys(model.params, 0)))
    fn = sp.lambdify([list(model.params), list(model.data)], expr, modules="numpy")

    def evaluate(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        out = fn(list(theta), [X[:, i] for i in range(X.shape[1])])
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (X.shape[0],)).copy()

    return evaluate


def _normalised(ell: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(ell)):
        raise ValueError("Windham: log f is not finite at some rows for the current θ")
    w = np.exp(ell - ell.max())
    return w / w.mean()


def windham_weights(logf: Any, theta: np.ndarray, data: np.ndarray, tuning: np.ndarray) -> np.ndarray:
    """w_t ∝ f(x_t; c∘θ)/f(x_t; 0), normalised to mean 1 (computed as exp(ℓ_t − max ℓ))."""
    return _normalised(logf(tuning * theta, data) - logf(np.zeros_like(theta), data))


def _relation(converged: bool, relative: bool) -> str:
    if converged:
        return "≤" if relative else "<"
    return ">" if relative else "≥"


def _start(model: Model, start: Any) -> np.ndarray:
    arr = model.pack(start) if isinstance(start, Mapping) else np.asarray(start, dtype=np.float64)
    if arr.shape != (model.n_params,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"Windham: start must be finite with one entry per parameter ({model.n_params}), got shape {arr.shape}"
        )
    return arr.copy()


def windham_fit(
    model: Model | CompiledLoss,
    X: Any,
    robust: Any,
    *,
    theta0: Any = None,
    backend: str = DEFAULT_BACKEND,
    weights: Any = None,
    penalty: Any = None,
) -> WindhamResult:
    """Iterate θ ← θ̃(w(θ))/(1 + c) from the unweighted fit to the fixed point (see the module)."""
    start = time.perf_counter()
    if not isinstance(robust, Windham):
        if isinstance(robust, (int, float)) and not isinstance(robust, bool):
            robust = Windham(c=float(robust))
        else:
            raise TypeError(f"robust must be symsm.Windham(c) or a number c, got {type(robust).__name__}")
    loss = _loss_of(model, backend)
    mdl = loss.model
    tuning = _tuning(mdl, robust.c)
    data = as_data(mdl, X)
    base_w = np.ones(data.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    tilt = tilt_log_density(mdl, tuning)
    if robust.start is None:
        current = fit(loss, data, theta0, weights=weights, penalty=penalty)
        theta = current.theta
    else:
        theta = _start(mdl, robust.start)
    relative = robust.criterion == "relative"
    change = math.inf
    it = 0
    w = np.ones(data.shape[0])
    for _ in range(robust.maxiter):
        it += 1
        w = _normalised(tilt(theta, data))
        current = fit(loss, data, theta, weights=base_w * w, penalty=penalty)
        new = current.theta / (1.0 + tuning)
        change = float(np.max(np.abs(new - theta)))
        if relative:
            change /= max(1.0, float(np.max(np.abs(new))))
        theta = new
        if change <= robust.tol if relative else change < robust.tol:
            break
    converged = change <= robust.tol if relative else change < robust.tol
    message = (
        f"Windham {'fixed point' if converged else 'iteration stopped'} after {it} iterations "
        f"({robust.criterion} change {change:.2g} {_relation(converged, relative)} {robust.tol:.0e}); "
        f"inner fit: {current.method}; no standard errors"
    )
    P = mdl.n_params
    return WindhamResult(
        theta=theta,
        params=mdl.unpack(theta),
        loss=float(loss.value(theta, data)),
        grad_norm=math.nan,
        se=np.full(P, np.nan),
        cov=np.full((P, P), np.nan),
        method="windham",
        n_iter=it,
        converged=bool(converged and current.converged),
        message=message,
        hessian_method="",
        param_names=mdl.param_names,
        n_samples=int(data.shape[0]),
        grad=np.full(P, np.nan),
        hessian=np.full((P, P), np.nan),
        grad_cov=np.full((P, P), np.nan),
        seconds=time.perf_counter() - start,
        model_name=mdl.name,
        tuning=tuning,
        weights=w,
        windham_iter=it,
        fixed_point_residual=change,
        inner=current,
    )


register_variant("robust", windham_fit)
