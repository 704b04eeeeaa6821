"""Fitting by score matching: closed form for quadratic objectives, L-BFGS-B otherwise, sandwich SEs.

* **Closed form.** When every ∂ᵢ log f is affine in θ (exponential families, log f = θᵀF(x) + c(x) plus
  any term of θ alone), J̃ = ½θᵀAθ + bᵀθ + c₀ exactly (Hyvärinen 2007); one pass over the data gives
  (A, b, c₀) and θ̂ = −A⁻¹b. A singular or ill-conditioned A is refused with the direction of θ the data
  do not identify — never a silent garbage estimate.
* **Iterative.** Otherwise scipy's L-BFGS-B on `value_and_grad` (one pass over the data per evaluation; from
  `BIND_MIN_ROWS` host rows through `loss.bind`, which sums the integrand's θ-free terms once), with tight
  tolerances; parameters declared positive get the bound θ ≥ `POSITIVE_LOWER_BOUND`.
  Non-convergence is reported in `converged` / `message`, never raised.
* **Standard errors.** The estimator solves mean_t ∇φ_t(θ̂) = 0 (φ_t the per-sample integrand), an
  M-estimator, so cov(θ̂) ≈ H⁻¹ V H⁻¹ / N with H the mean θ-Hessian of φ_t and V the covariance of the
  per-sample gradients ∇φ_t(θ̂) — the sandwich, valid whether or not the model holds (score matching is
  consistent when it does, Hyvärinen 2005; asymptotic normality needs the usual regularity conditions).
  H is A for the closed form, else the exact Hessian (a generated kernel, P ≤ 30) or central differences
  of the exact gradient; V is accumulated chunk by chunk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import DEFAULT_BACKEND
from ..core.arrays import as_theta
from ..core.errors import IdentificationError, NonFiniteError
from ..core.progress import IterationProgress
from ..model.model import Model
from ..runtime import placement
from ..runtime.accumulate import central_difference_hessian, check_row_gradients, is_quadratic, is_variant
from ..runtime.compiled import CompiledLoss, compile_model

if TYPE_CHECKING:
    from ..derive.objectives import Objective
    from ..runtime.bound import BoundLoss

__all__ = ["METHODS", "FitResult", "fit"]

# fit(..., penalty=) and fit(..., robust=) hand over to symsm/fitting/penalized.py and robust.py, which build on
# this module; each registers its entry point here when the package symsm.fitting is imported (its __init__
# imports them), so this module does not import them back.
_VARIANTS: dict[str, Any] = {}


def register_variant(keyword: str, entry: Any) -> None:
    """Called once by penalized.py ("penalty") and robust.py ("robust") with the function `fit` hands over to."""
    _VARIANTS[keyword] = entry


METHODS = ("auto", "closed_form", "lbfgs")
HESSIAN_METHODS = ("auto", "exact", "central_differences")
POSITIVE_LOWER_BOUND = 1e-10  # L-BFGS-B bound for parameters declared positive (their domain is open)
DEAD_DIAGONAL = 64 * float(np.finfo(np.float64).eps)  # a Hessian diagonal entry this small against the largest is 0
IDENTIFICATION_RCOND = 1e-10  # smallest/largest eigenvalue of the scaled Hessian below which θ is unidentified
#: structured-path fits with more parameters skip the Newton steps and standard errors by default: H takes 2P
#: gradient passes over X, V N·P² operations (per-row gradients from the block program, runtime/accumulate.py)
STRUCTURED_SE_MAX_PARAMS = 4096
LBFGS_OPTIONS: dict[str, Any] = {
    "polish": True,  # Newton steps with the Hessian after L-BFGS-B (not a scipy option)
    "maxiter": 20_000,
    "maxfun": 40_000,
    "maxcor": 20,
    "ftol": 1e-15,  # relative reduction of J̃ per iteration: a few ulps
    "gtol": 1e-10,  # largest entry of the projected gradient
}
NEWTON_STEPS = 4  # at most this many Newton steps after L-BFGS-B, each accepted only if it lowers J̃ and |∇J̃|
ROUNDING_SLACK = 64 * np.finfo(np.float64).eps  # a Newton step near the minimum may raise J̃ by rounding only
# converged when gᵀH⁻¹g ≤ this × max(1, |J̃|) (J̃ within about half of it from its minimum), by the loss's
# dtype: a float32 kernel's gradient carries rounding errors of ~1e-5 relative, whatever the optimiser does
DECREMENT_TOL = {"float64": 1e-12, "float32": 1e-8}
MAX_RESTARTS = 3  # fresh L-BFGS-B runs after a run that met non-finite values of J̃


@dataclass(repr=False)
class FitResult:
    """The outcome of `symsm.fit`.

    Attributes
    ----------
    theta, params
        the estimate (flat, and by parameter group with matrices rebuilt)
    loss, grad, grad_norm
        J̃(θ̂), ∇θJ̃(θ̂) and its Euclidean norm
    se, cov, se_params
        sandwich standard errors and covariance H⁻¹VH⁻¹/N (NaN where H is not positive
        definite), and the SEs by parameter group
    hessian, grad_cov
        H (the mean θ-Hessian of the integrand) and V (the covariance of its per-sample
        gradients) at θ̂
    method
        "closed_form" or "lbfgs"; hessian_method: how H was obtained ("quadratic_form" (= A, exact),
        "exact" (generated kernel) or "central_differences" (of the exact gradient))
    n_iter, n_evals, converged, message
        iterations (0 for the closed form), passes of value_and_grad,
        whether the fit met its tolerances, and how it ended
    n_samples, param_names, model_name, seconds
        N, the names of θ's entries, the model, the wall time
    """

    theta: np.ndarray
    params: dict[str, float | np.ndarray]
    loss: float
    grad_norm: float
    se: np.ndarray
    cov: np.ndarray
    method: str
    n_iter: int
    converged: bool
    message: str
    hessian_method: str
    param_names: list[str]
    n_samples: int
    grad: np.ndarray
    hessian: np.ndarray
    grad_cov: np.ndarray
    n_evals: int = 0
    seconds: float = 0.0
    model_name: str = "model"
    se_params: dict[str, float | np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (lists, floats, str, bool), JSON-ready; non-finite numbers become None."""
        return {
            "model": self.model_name,
            "method": self.method,
            "converged": self.converged,
            "message": self.message,
            "n_iter": self.n_iter,
            "n_evals": self.n_evals,
            "n_samples": self.n_samples,
            "loss": _plain(self.loss),
            "grad_norm": _plain(self.grad_norm),
            "hessian_method": self.hessian_method,
            "param_names": list(self.param_names),
            "theta": _plain(self.theta),
            "se": _plain(self.se),
            "cov": _plain(self.cov),
            "params": {k: _plain(v) for k, v in self.params.items()},
            "se_params": {k: _plain(v) for k, v in self.se_params.items()},
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        width = max(9, *(len(n) for n in self.param_names))
        status = "converged" if self.converged else "NOT converged"
        lines = [
            f"FitResult: model {self.model_name!r}, method {self.method}, N = {self.n_samples}, {status}",
            f"  {'parameter':<{width}}  {'estimate':>14}    {'std. error':>11}",
        ]
        for name, value, s in zip(self.param_names, self.theta, self.se, strict=True):
            lines.append(f"  {name:<{width}}  {value:>14.7g}  ± {s:>11.4g}")
        lines.append(
            f"  J̃(θ̂) = {self.loss:.10g}, |∇J̃| = {self.grad_norm:.3g}, iterations = {self.n_iter}, "
            f"H: {self.hessian_method}"
        )
        lines.append(f"  {self.message}")
        return "\n".join(lines)


def fit(
    model: Model | CompiledLoss,
    X: Any,
    theta0: Any = None,
    *,
    backend: str = DEFAULT_BACKEND,
    method: str = "auto",
    callback: Callable[[np.ndarray, float], bool | None] | None = None,
    options: Mapping[str, Any] | None = None,
    hessian: str = "auto",
    objective: str | Objective = "exact",
    seed: int = 0,
    verbose: bool = False,
    weights: Any = None,
    penalty: Any = None,
    robust: Any = None,
) -> FitResult:
    """Estimate θ by minimising the score-matching objective J̃ on the rows of X.

    Parameters
    ----------
    model
        A `Model` (compiled here for `backend`) or an already compiled `CompiledLoss`.
    X
        Data of shape (N, d); validated once (non-finite values raise `ValueError`).
    theta0
        Starting point for L-BFGS-B (default: the model's `init`, else 0, or 1 for positive parameters);
        not used by the closed form, which has one answer.
    method
        "auto" (closed form when the objective is quadratic in θ, else L-BFGS-B), "closed_form" or "lbfgs".
    callback
        Called as ``callback(theta, loss)`` after every L-BFGS-B iteration (once for the closed form);
        returning True stops the iterations (reported as not converged).
    options
        Overrides of `LBFGS_OPTIONS`: scipy's L-BFGS-B options (maxiter, maxfun, maxcor, ftol, gtol) and
        ``polish`` (Newton steps with the Hessian after L-BFGS-B, default True).
    hessian
        How H (for the standard errors and the Newton steps) is obtained when the objective is not
        quadratic: "auto" (the exact symbolic Hessian kernel for P ≤ 30, else central differences),
        "exact" or "central_differences" (of the exact gradient: 2P passes over X, no extra kernel to
        derive and compile). Quadratic objectives use A, which is exact. Variant objectives (sliced,
        denoising) have no exact Hessian kernel: "auto" uses central differences for them.
    objective, seed
        The score-matching objective a `Model` is compiled with ("exact", "sliced", "sliced_vr",
        "denoising", or a `symsm.derive.objectives` instance carrying its options) and the seed of its draws; a
        `CompiledLoss` brings its own. The closed form applies to every one of them when the scores are
        affine in θ.
    verbose
        Report the compilation's stages and every iteration (stage, iteration, J̃ and the norm of ∇J̃) on
        stderr. Without it, a fit that runs longer than two seconds shows one live line on a terminal, and
        nothing elsewhere (symsm/core/progress.py).
    weights
        Observation (frequency) weights, one per row, ≥ 0: every mean over rows becomes a weighted mean and
        the standard errors use N = Σ w (integer weights = repeated rows). symsm/runtime/weighted.py.
    penalty
        `symsm.L1(lam, on=...)`: minimise J̃ + λ Σ_{j∈S} ``|θ_j|`` instead (symsm/fitting/penalized.py).
    robust
        `symsm.Windham(c)` (or a number c): a robust fit by Windham weighting (symsm/fitting/robust.py).

    Raises
    ------
    IdentificationError
        The Hessian (A for the closed form) is singular or ill-conditioned at θ̂: the data do not identify
        θ; the message names the parameters along the flat direction.
    """
    if (penalty is not None or robust is not None) and (method != "auto" or callback is not None or hessian != "auto"):
        raise ValueError("method, callback and hessian apply to unpenalised, non-robust fits only")
    if (penalty is not None or robust is not None) and (objective != "exact" or seed != 0):
        raise ValueError("penalty= and robust= fits use the exact objective")
    if robust is not None:
        return _VARIANTS["robust"](model, X, robust, theta0=theta0, backend=backend, weights=weights, penalty=penalty)
    if penalty is not None:
        return _VARIANTS["penalty"](model, X, penalty, theta0=theta0, backend=backend, weights=weights, options=options)
    start = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if hessian not in HESSIAN_METHODS:
        raise ValueError(f"hessian must be one of {HESSIAN_METHODS}, got {hessian!r}")
    if isinstance(model, CompiledLoss):
        if objective != "exact" or seed != 0:
            raise ValueError(
                "objective and seed are fixed by the compiled loss: pass them to model.compile(...) instead"
            )
        loss = model
    elif isinstance(model, Model):
        loss = compile_model(model, backend=backend, objective=objective, seed=seed, verbose=verbose)
    else:
        raise TypeError(f"model must be a symsm.Model or a CompiledLoss, got {type(model).__name__}")
    mdl = loss.model
    if hessian == "exact" and is_variant(loss) and not is_quadratic(loss):
        raise ValueError(
            f"hessian='exact': no exact Hessian kernel is generated for objective {loss.objective!r}; "
            "use 'auto' or 'central_differences'"
        )
    data = _fit_data(loss, X, weights)
    quadratic = is_quadratic(loss)
    if method == "closed_form" and not quadratic:
        raise ValueError(
            f"method='closed_form' needs an objective quadratic in θ, but model {mdl.name!r} has a score that is "
            "not affine in θ; use method='auto' or 'lbfgs'"
        )
    opts = dict(LBFGS_OPTIONS)
    if options is not None:
        unknown = set(options) - set(LBFGS_OPTIONS)
        if unknown:
            raise ValueError(f"options: unknown keys {sorted(unknown)}; known: {sorted(LBFGS_OPTIONS)}")
        opts.update(options)
    th0 = mdl.default_theta() if theta0 is None else as_theta(mdl, theta0, name="theta0")

    note = ""
    progress = IterationProgress(verbose)
    if method in ("auto", "closed_form") and quadratic:
        est = _closed_form(loss, data)
        progress.note(f"closed form: θ̂ = −A⁻¹b, J̃ = {est.value:.10g}, |∇J̃| = {float(np.linalg.norm(est.grad)):.3g}")
        bad = [n for n, p, v in zip(mdl.param_names, mdl.params, est.theta, strict=True) if p.is_positive and v <= 0]
        if not bad:
            if callback is not None:
                callback(est.theta.copy(), est.value)
            return _result(loss, data, est, start)
        if method == "closed_form":
            raise ValueError(
                f"the closed-form minimiser gives non-positive values to parameters declared positive: {', '.join(bad)}"
                " (the constrained minimum lies on the boundary); use method='lbfgs' for the bounded fit"
            )
        note = f"the closed form leaves the domain of {', '.join(bad)}; bounded L-BFGS-B used instead. "
    try:
        est = _lbfgs(loss, data, th0, callback, opts, hessian, progress)
    finally:
        progress.close()
    progress.note(est.message)
    est.message = note + est.message
    return _result(loss, data, est, start)


#: rows from which the L-BFGS path evaluates J̃ through `loss.bind` (the data's θ-free sums once, then the rest
#: of the integrand per call; symsm/runtime/bound.py): below it generating the bound kernels costs more than the
#: calls save
BIND_MIN_ROWS = 10_000


@dataclass(frozen=True)
class _Data:
    """The data twice: `rows` as the loss's own methods take them (validated host array, or the device
    array a CUDA loss was given), `host` as a validated host array for the fitting kernels. For a dask
    array (symsm/runtime/dask.py), `host` is the dask array and `rows` the same array, or the 2d moment
    matching points of all of it when the integrand is of degree ≤ 2 in x."""

    rows: Any
    host: Any
    weights: np.ndarray | None = None
    #: the loss bound to the rows (`CompiledLoss.bind`) for the optimisation's many evaluations, or None
    bound: BoundLoss | None = None

    @property
    def n(self) -> int:
        return int(self.host.shape[0])

    @property
    def n_eff(self) -> float:
        """N, or Σ w with observation weights (frequency weights: the N of repeated rows)."""
        return float(self.n if self.weights is None else self.weights.sum())


def _fit_data(loss: CompiledLoss, X: Any, weights: Any = None) -> _Data:
    """Validate X once, where it lives (symsm.runtime.placement.fit_data); weights checked against it."""
    if weights is None:
        return _Data(*placement.fit_data(loss, X))
    from ..runtime.sparse import check_weights

    if placement.is_dask(X) or placement.is_device(X):
        raise NotImplementedError("weights= is supported for host (numpy) data only, not dask or device arrays yet")
    rows, host = placement.fit_data(loss, X)
    return _Data(rows, host, check_weights(weights, int(host.shape[0])))


def _bound(loss: CompiledLoss, data: _Data) -> _Data:
    """`data` with the loss bound to its rows, for host rows of at least BIND_MIN_ROWS (the same J̃ and ∇J̃ as
    `_value_and_grad` gives without it, and the same errors)."""
    host_rows = isinstance(data.host, np.ndarray) and data.rows is data.host
    if not host_rows or data.n < BIND_MIN_ROWS:
        return data
    from ..runtime.bound import BoundLoss

    # the fit's own validated rows, held only for this optimisation: no copy
    return replace(data, bound=BoundLoss(loss, data.host, data.weights, copy=False))


def _value_and_grad(loss: CompiledLoss, theta: np.ndarray, data: _Data) -> tuple[float, np.ndarray]:
    if data.bound is not None:
        return data.bound.value_and_grad(theta)
    if data.weights is None:
        return loss.value_and_grad(theta, data.rows)
    from ..runtime.weighted import weighted_value_and_grad

    return weighted_value_and_grad(loss, theta, data.host, data.weights)


def _quadratic_form(loss: CompiledLoss, data: _Data) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c): from the loss's own reduction when A is small; from the sparse quadratic form (only the
    distinct non-zero score coefficients per row; symsm/runtime/sparse.py) with weights, or when the dense
    per-row features would be large (d·P(P+1)/2 products per row beyond the reduction kernel's budget)."""
    from ..ir.fit_kernels import quadratic_layout
    from ..runtime.sparse import weighted_quadratic_form

    if data.weights is not None:
        if loss.derivation.manifold is not None or loss.model.domain in ("sphere", "simplex"):
            # the sparse form is written for ℝᵈ-like domains; the loss's own kernels, row-weighted, for these
            from ..runtime.accumulate import quadratic_form as row_weighted

            return row_weighted(loss, data.host, data.weights)
        return weighted_quadratic_form(loss, data.host, data.weights)
    mdl = loss.model
    sparse_ok = not is_variant(loss) and isinstance(data.host, np.ndarray) and isinstance(data.rows, np.ndarray)
    if sparse_ok and quadratic_layout(mdl.dim, mdl.n_params) == "rows":
        return weighted_quadratic_form(loss, data.host, None)
    return loss.quadratic_form(data.rows)


@dataclass
class _Estimate:
    theta: np.ndarray
    value: float
    grad: np.ndarray
    method: str
    n_iter: int
    n_evals: int
    converged: bool
    message: str
    H: np.ndarray | None = None
    hessian_method: str = ""


def _closed_form(loss: CompiledLoss, data: _Data) -> _Estimate:
    A, b, c = _quadratic_form(loss, data)
    _check_identified(A, loss.model.param_names, "A (J̃ = ½θᵀAθ + bᵀθ + c)", data.n)
    theta = _solve_spd(A, -b)
    value = float(0.5 * theta @ A @ theta + b @ theta + c)
    message = f"closed form θ̂ = −A⁻¹b from one pass over N = {data.n} rows"
    return _Estimate(theta, value, A @ theta + b, "closed_form", 0, 1, True, message, A, "quadratic_form")


def _lbfgs(
    loss: CompiledLoss,
    data: _Data,
    theta0: np.ndarray,
    callback: Callable[[np.ndarray, float], bool | None] | None,
    options: dict[str, Any],
    hessian: str,
    progress: IterationProgress | None = None,
) -> _Estimate:
    """L-BFGS-B from theta0, then (options["polish"]) Newton steps with the Hessian; judged by the Newton
    decrement gᵀH⁻¹g, which is scale-free (≈ 2·(J̃(θ) − min J̃)), rather than by the line search's exit."""
    import scipy.optimize  # imported here: `import symsm` stays light

    progress = progress or IterationProgress()

    mdl = loss.model
    options = dict(options)
    polish = bool(options.pop("polish"))
    lower = np.array([POSITIVE_LOWER_BOUND if p.is_positive else -np.inf for p in mdl.params])
    bounds = [(lo, None) if np.isfinite(lo) else (None, None) for lo in lower]
    if np.any(theta0 < lower):
        raise ValueError(f"theta0: parameters declared positive must be ≥ {POSITIVE_LOWER_BOUND}")
    state = {"evals": 0, "nonfinite": 0, "iters": 0, "stopped": False}
    latest = {"value": math.nan, "grad_norm": math.nan}  # J̃ and |∇J̃| at the last finite evaluation (progress)
    problems: dict[str, NonFiniteError] = {}  # the last non-finite trial point's diagnosis, by kind

    try:
        loss.value_and_grad(theta0, data.rows)
    except NonFiniteError as exc:  # L-BFGS-B cannot start there: say whether the data or θ₀ is the problem
        kind = "θ₀ is outside the model's domain" if exc.domain else "the data are the problem"
        raise NonFiniteError(f"fit: at the starting point θ₀ ({kind}): {exc}", exc.rows, exc.domain) from None
    data = _bound(loss, data)

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        state["evals"] += 1
        try:
            value, grad = _value_and_grad(loss, th, data)
        except NonFiniteError as exc:
            problems["domain" if exc.domain else "data"] = exc
            value, grad = math.nan, np.full(len(th), math.nan)
        if not (math.isfinite(value) and np.isfinite(grad).all()):
            state["nonfinite"] += 1
            return math.inf, np.zeros(len(th))
        latest["value"], latest["grad_norm"] = value, float(np.linalg.norm(grad))
        return value, grad

    def on_iteration(intermediate_result: Any) -> None:
        state["iters"] += 1
        progress.update("L-BFGS-B", state["iters"], float(intermediate_result.fun), latest["grad_norm"])
        if callback is not None and callback(np.array(intermediate_result.x), float(intermediate_result.fun)) is True:
            state["stopped"] = True
            raise StopIteration

    theta = np.array(theta0, dtype=np.float64)
    messages = []
    for _ in range(1 + MAX_RESTARTS):
        nonfinite_before = state["nonfinite"]
        res = scipy.optimize.minimize(
            fun, theta, jac=True, method="L-BFGS-B", bounds=bounds, callback=on_iteration, options=options
        )
        theta = np.asarray(res.x, dtype=np.float64)
        text = str(res.message).strip()
        if text.startswith("ABNORMAL"):
            text += " the line search could not lower J̃ further (usually the rounding floor of J̃)"
        messages.append(text)
        met_nonfinite = state["nonfinite"] > nonfinite_before
        # A trial step that met J̃ = ±inf or NaN can make L-BFGS-B stop early and still report success:
        # start a fresh run from where it stopped (small first steps again).
        if state["stopped"] or not met_nonfinite or not np.all(np.isfinite(theta)):
            break
    try:
        value, grad = _value_and_grad(loss, theta, data)
    except NonFiniteError as exc:
        problems["domain" if exc.domain else "data"] = exc
        value, grad = math.nan, np.full(len(theta), math.nan)
    est = _Estimate(theta, value, grad, "lbfgs", state["iters"], state["evals"] + 1, bool(res.success), "")
    message = "L-BFGS-B: " + " / ".join(messages)
    if state["nonfinite"]:
        message += f"; J̃ was not finite at {state['nonfinite']} trial points"
        kinds = []
        if "domain" in problems:
            kinds.append("θ outside the model's domain (every row non-finite)")
        if "data" in problems:
            kinds.append(f"rows of the data {list(problems['data'].rows)} non-finite at some θ")
        message += f" ({'; '.join(kinds)})"
    if not (math.isfinite(value) and np.all(np.isfinite(theta))):
        est.converged = False
        last = problems.get("domain") or problems.get("data")
        est.message = message + "; the final point is not finite" + (f": {last}" if last else "")
        return est
    if hessian == "auto" and loss.derivation_path == "structured" and mdl.n_params > STRUCTURED_SE_MAX_PARAMS:
        est.converged = bool(res.success) and not state["stopped"]
        est.message = message + (
            f"; no Newton steps or standard errors: with P = {mdl.n_params} > {STRUCTURED_SE_MAX_PARAMS} parameters "
            "the structured path's Hessian takes 2P gradient passes over X and V N·P² operations "
            "(hessian='central_differences' forces them, up to the memory limit of per-row gradients)"
        )
        return est
    if loss.derivation_path == "structured":
        check_row_gradients(loss)  # V's matrices must fit before H's 2P gradient passes are spent
    est.H, est.hessian_method = _hessian(loss, theta, data, hessian)
    at_bound = [n for n, v, lo in zip(mdl.param_names, theta, lower, strict=True) if v <= 2 * lo]
    if at_bound or state["stopped"]:
        est.converged = bool(res.success) and not state["stopped"] and not met_nonfinite
        if at_bound:
            message += f"; at the lower bound (SEs not meaningful): {', '.join(at_bound)}"
        est.message = message + ("; stopped by the callback" if state["stopped"] else "")
        return est
    steps = 0
    while polish and steps < NEWTON_STEPS and _positive_definite(est.H):
        trial = est.theta - np.linalg.solve(est.H, est.grad)
        if np.any(trial <= lower):
            break
        try:
            v2, g2 = _value_and_grad(loss, trial, data)
        except NonFiniteError:
            break
        est.n_evals += 1
        if (
            not (math.isfinite(v2) and np.isfinite(g2).all())
            or v2 > est.value + ROUNDING_SLACK * max(1.0, abs(est.value))  # J̃ may only move by rounding
            or not (np.linalg.norm(g2) < np.linalg.norm(est.grad))
        ):
            break
        est.theta, est.value, est.grad = trial, v2, g2
        steps += 1
        progress.update("Newton", steps, v2, float(np.linalg.norm(g2)))
    if steps:
        est.H, est.hessian_method = _hessian(loss, est.theta, data, hessian)
        message += f"; {steps} Newton step{'s' if steps > 1 else ''} with the {est.hessian_method} Hessian"
    if _positive_definite(est.H):
        decrement = float(est.grad @ np.linalg.solve(est.H, est.grad))
        tol = DECREMENT_TOL[np.dtype(loss.dtype).name] * max(1.0, abs(est.value))
        est.converged = decrement <= tol
        message += f"; Newton decrement gᵀH⁻¹g = {decrement:.2g} ({'≤' if est.converged else '>'} {tol:.2g})"
    else:
        est.converged = False
    est.message = message
    return est


def _hessian(loss: CompiledLoss, theta: np.ndarray, data: _Data, how: str) -> tuple[np.ndarray, str]:
    """The mean θ-Hessian of J̃ and how it was obtained (see `fit`'s ``hessian``)."""
    from ..ir.fit_kernels import HESSIAN_MAX_PARAMS

    if how != "central_differences" and is_quadratic(loss):
        return _quadratic_form(loss, data)[0], "quadratic_form"
    if data.weights is not None:
        return _weighted_central_differences(loss, theta, data), "central_differences"
    if how == "exact" or (how == "auto" and loss.model.n_params <= HESSIAN_MAX_PARAMS and not is_variant(loss)):
        return loss.hessian(theta, data.host), "exact"
    return central_difference_hessian(loss, theta, data.rows), "central_differences"


def _weighted_central_differences(loss: CompiledLoss, theta: np.ndarray, data: _Data) -> np.ndarray:
    """`central_difference_hessian` of the weighted gradient (same steps)."""
    P = loss.model.n_params
    H = np.empty((P, P))
    base = np.finfo(loss.dtype).eps ** (1 / 3)
    for k, p in enumerate(loss.model.params):
        h = base * max(1.0, abs(theta[k]))
        if p.is_positive:
            h = min(h, theta[k] / 2)
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        H[:, k] = (_value_and_grad(loss, up, data)[1] - _value_and_grad(loss, down, data)[1]) / (up[k] - down[k])
    return (H + H.T) / 2


def _positive_definite(H: np.ndarray | None) -> bool:
    if H is None or not np.all(np.isfinite(H)):
        return False
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return False
    return True


def _result(loss: CompiledLoss, data: _Data, est: _Estimate, start: float) -> FitResult:
    """The sandwich covariance H⁻¹VH⁻¹/N at θ̂, and the result."""
    mdl = loss.model
    n = data.n_eff
    P = mdl.n_params
    message = est.message
    if est.H is None:
        cov = np.full((P, P), np.nan)
        H = np.full((P, P), np.nan)
        V = np.full((P, P), np.nan)
        message += "; no standard errors"
    else:
        H = est.H
        _check_identified(H, mdl.param_names, "the Hessian of J̃ at θ̂", data.n)
        if data.weights is None:
            _, V = placement.executor(data.host).gradient_moments(loss, est.theta, data.host)
        else:
            from ..runtime.weighted import weighted_gradient_moments

            _, V = weighted_gradient_moments(loss, est.theta, data.host, data.weights)
        if _positive_definite(H):
            cov = np.linalg.solve(H, np.linalg.solve(H, V).T) / n
            cov = (cov + cov.T) / 2
        else:
            cov = np.full((P, P), np.nan)
            message += "; the Hessian at θ̂ is not positive definite (not a minimum): no standard errors"
    diag = np.diag(cov)
    se = np.sqrt(np.where(diag >= 0, diag, np.nan))
    return FitResult(
        theta=est.theta,
        params=mdl.unpack(est.theta),
        loss=float(est.value),
        grad_norm=float(np.linalg.norm(est.grad)),
        se=se,
        cov=cov,
        method=est.method,
        n_iter=est.n_iter,
        converged=est.converged,
        message=message,
        hessian_method=est.hessian_method,
        param_names=mdl.param_names,
        n_samples=data.n,
        grad=np.asarray(est.grad, dtype=np.float64),
        hessian=H,
        grad_cov=V,
        n_evals=est.n_evals,
        seconds=time.perf_counter() - start,
        model_name=mdl.name,
        se_params=_unpack_values(mdl, se),
    )


def _solve_spd(A: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """A⁻¹ rhs for symmetric positive definite A (Cholesky), with one step of iterative refinement."""
    import scipy.linalg

    factor = scipy.linalg.cho_factor(A)
    x = scipy.linalg.cho_solve(factor, rhs)
    return x + scipy.linalg.cho_solve(factor, rhs - A @ x)


def _check_identified(H: np.ndarray, names: list[str], what: str, n: int) -> None:
    """Raise `IdentificationError` naming the flat directions when H is singular or ill-conditioned.

    H is scaled to unit diagonal first (so parameters measured in different units do not look
    unidentified); an eigenvalue below `IDENTIFICATION_RCOND` times the largest is a direction in which
    J̃ is (numerically) flat on these data.
    """
    if not np.all(np.isfinite(H)):
        raise IdentificationError(f"{what} has non-finite entries: the data or θ̂ are outside the model's domain")
    diag = np.diag(H).copy()
    top = float(np.max(np.abs(diag))) if diag.size else 0.0
    # zero up to rounding only: a diagonal entry's size against the others is a matter of θ's units (a PPI's
    # A multiplies u², 10⁻⁶ of β's log u on microbiome data, less under Windham weights); the scaled
    # eigenvalues below judge the rest
    dead = [nm for nm, v in zip(names, diag, strict=True) if not v > DEAD_DIAGONAL * top]
    if dead:
        raise IdentificationError(
            f"the data (N = {n}) do not identify {', '.join(dead)}: J̃ does not change with "
            f"{'it' if len(dead) == 1 else 'them'} ({what} has a zero diagonal entry there)"
        )
    scale = 1.0 / np.sqrt(diag)
    Hs = H * np.outer(scale, scale)
    w, U = np.linalg.eigh((Hs + Hs.T) / 2)
    # Near-zero eigenvalues are flat directions; clearly negative ones mean θ̂ is not a minimum (a saddle),
    # which the caller reports as non-convergence rather than as a property of the data.
    flat = np.flatnonzero(np.abs(w) <= IDENTIFICATION_RCOND * np.max(np.abs(w)))
    if flat.size == 0:
        return
    directions = []
    for k in flat[:3]:
        v = U[:, k] * scale
        v = v / v[np.argmax(np.abs(v))]
        terms = [f"{c:+.3g}·{nm}" for c, nm in zip(v, names, strict=True) if abs(c) >= 0.01]
        directions.append(" ".join(terms))
    raise IdentificationError(
        f"{what} is singular or ill-conditioned (smallest/largest |eigenvalue| after scaling to unit diagonal: "
        f"{np.min(np.abs(w[flat])) / np.max(np.abs(w)):.2g}): the data (N = {n}) do not identify θ along "
        + "; ".join(directions)
        + " — J̃ is flat in that direction; reparametrise, fix a parameter, or add data that vary along it"
    )


def _unpack_values(model: Model, values: np.ndarray) -> dict[str, float | np.ndarray]:
    """Like `model.unpack`, for any vector (NaN allowed); fixed matrix entries get 0 (they are not estimated)."""
    out: dict[str, float | np.ndarray] = {}
    offset = 0
    for g in model.groups:
        vals = dict(zip(g.symbols, values[offset : offset + g.size], strict=True))
        offset += g.size
        if not g.shape:
            out[g.name] = float(vals[g.template])
            continue
        arr = np.zeros(g.shape)
        for idx, entry in g.entries():
            if entry in vals:
                arr[idx] = vals[entry]
        out[g.name] = arr
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
