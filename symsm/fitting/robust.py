"""Robust score matching by Windham weighting (Windham 1995; as scorematchingad's `Windham`).

Rows are weighted by w_t ∝ f(x_t; c∘θ)/f(x_t; 0) — the model's density at the parameters scaled by the
tuning constants c (one per parameter), without its base measure — so that points the current fit finds
unlikely (outliers) count less. For an exponential family log f = θᵀF(x) + b(x), reweighting f_θ by
f_{c∘θ}/f_0 gives f_{(1+c)∘θ}: the weighted fit estimates (1+c)∘θ, and the estimate is corrected by the
tuning constants, θ ← θ̃/(1 + c). The map θ → θ̃(w(θ))/(1 + c) is iterated to its fixed point
(`WindhamResult.fixed_point_residual` = the last relative change). Parameters with c_k = 0 are left as the
weighted fit gives them.

Standard errors are not given (the sandwich of the fixed point needs the derivative of the weights).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends import DEFAULT_BACKEND
from ..core.arrays import as_data
from ..model.model import Model
from ..runtime.compiled import CompiledLoss
from .fit import FitResult, fit, register_variant
from .penalized import _loss_of

__all__ = ["Windham", "WindhamResult", "log_density", "windham_fit"]


@dataclass(frozen=True)
class Windham:
    """Windham weighting with tuning constant(s) c ≥ 0 (a number for every parameter, or one per parameter;
    0 leaves a parameter out of the weights and of the correction), tol on the relative change of θ between
    iterations, and at most maxiter iterations."""

    c: Any = 0.1
    tol: float = 1e-10
    maxiter: int = 200


@dataclass(repr=False)
class WindhamResult(FitResult):
    """`symsm.fit(..., robust=Windham(c))`: θ at the Windham fixed point (no SEs), with the tuning constants,
    the final row weights (normalised to mean 1), the iterations and the last relative change of θ."""

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
    arr = np.asarray(c, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(model.n_params, float(arr))
    if arr.shape != (model.n_params,):
        raise ValueError(
            f"Windham: c must be a number or have one entry per parameter ({model.n_params}), got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("Windham: the tuning constants c must be finite and ≥ 0")
    return arr


def windham_weights(logf: Any, theta: np.ndarray, data: np.ndarray, tuning: np.ndarray) -> np.ndarray:
    """w_t ∝ f(x_t; c∘θ)/f(x_t; 0), normalised to mean 1 (computed as exp(ℓ_t − max ℓ))."""
    ell = logf(tuning * theta, data) - logf(np.zeros_like(theta), data)
    if not np.all(np.isfinite(ell)):
        raise ValueError("Windham: log f is not finite at some rows for the current θ")
    w = np.exp(ell - ell.max())
    return w / w.mean()


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
    logf = log_density(mdl)
    current = fit(loss, data, theta0, weights=weights, penalty=penalty)
    theta = current.theta
    change = math.inf
    it = 0
    w = np.ones(data.shape[0])
    for _ in range(robust.maxiter):
        it += 1
        w = windham_weights(logf, theta, data, tuning)
        current = fit(loss, data, theta, weights=base_w * w, penalty=penalty)
        new = current.theta / (1.0 + tuning)
        change = float(np.max(np.abs(new - theta)) / max(1.0, float(np.max(np.abs(new)))))
        theta = new
        if change <= robust.tol:
            break
    converged = change <= robust.tol
    message = (
        f"Windham fixed point after {it} iterations (relative change {change:.2g}"
        f"{' ≤ ' if converged else ' > '}{robust.tol:.0e}); inner fit: {current.method}; no standard errors"
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
