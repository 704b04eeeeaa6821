"""ℓ1 paths of penalised score matching, chosen by eBIC or k-fold cross-validation.

`symsm.path(model, X, penalty=L1(on=...), n_lambdas=50, ratio=None, select="ebic", gamma=0.5, folds=5)`:

* **the grid**: λ_max is the smallest λ at which every penalised θ is 0 (θ_S = 0 and θ_U minimising J̃; then
  λ_max = max_{j∈S} |∂_j J̃|), and the grid runs geometrically from λ_max down to ratio·λ_max (ratio 0.01 by
  default, 0.1 when N < P), solved with warm starts (symsm/fitting/penalized.py);
* **eBIC** (Foygel & Drton 2010) with the score-matching loss in place of the log-likelihood, as genscore
  does (Lin, Drton & Shojaie 2016; Yu, Drton & Shojaie 2019):  eBIC_γ(λ) = 2N·J̃(θ̂) + k·log N + prior, k the
  number of non-zero penalised parameters — for a graphical model (S the off-diagonal entries of a symmetric
  K) k = |E|, each edge counted once, as genscore counts them. J̃(θ̂) is the loss of the unpenalised refit on
  the support (`refit=True`, genscore's default BIC_refit = TRUE; +∞ where A on the support is singular),
  else of the penalised estimate; the constant c of J̃ does not change the selection (genscore leaves it out).
  The prior term (`ebic_prior`):
  - "foygel-drton" (default): 4γ·k·log d for a graph in d nodes (Foygel & Drton's form), 2γ·k·log|S|
    otherwise — linear in k;
  - "binomial": 2γ·log C(|S|, k) with |S| = d(d−1)/2 for a graph — Chen & Chen (2008)'s exact count, and
    genscore's `eBIC` (R/genscore.R: `2*gammas*lchoose(p*(p-1)/2, nedges)`). It is never larger than the
    linear form and *falls* once k > |S|/2, so on dense paths it selects far more edges
    (benchmarks/GRAPH_RECOVERY.md); kept to reproduce genscore's choice.
* **standard errors** (`se=True`, exponential families): sandwich SEs of the refit on the selected support
  for the parameters it estimates, from the blocks of A and per-row gradients on those parameters only
  (`_support_standard_errors`) — conditional on the support, with no correction for the selection.
* **cross-validation**: rows split at random (seed) into `folds` folds; for each, the path on the other folds
  (same λ grid) and the unpenalised J̃ on the held-out fold; the λ with the smallest mean is selected
  (`cv_se` holds the standard errors of the means, for a one-standard-error rule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import DEFAULT_BACKEND
from ..model.model import Model
from ..runtime.accumulate import is_quadratic
from ..runtime.compiled import CompiledLoss
from .fit import FitResult, _bound, _Data, _fit_data, _value_and_grad
from .penalized import (
    FISTA_TOL,
    KKT_TOL,
    L1,
    PenalizedFit,
    QuadraticProblem,
    _loss_of,
    _lower,
    _penalty,
    fista,
    make_fit,
    penalized_mask,
    quadratic_problem,
)

__all__ = ["PathResult", "ebic", "graph_edges", "path"]

SELECT = ("ebic", "cv", None)
REFIT_TOL = 1e-10  # largest gradient entry of the unpenalised refit on a support


@dataclass(repr=False)
class PathResult:
    """The ℓ1 path and its selection.

    lambdas (K,), thetas (K, P), supports (K, P) bool (non-zero penalised parameters), df (K,), losses (K,)
    J̃(θ̂_λ) unpenalised, kkt (K,) KKT residuals; ebic (K,) (with `select="ebic"`; `ebic_loss` (K,) the J̃ it
    used), cv_mean, cv_se (K,) (with `select="cv"`); selected (index into the grid), fit (the PenalizedFit at
    it), refit (the unpenalised fit on its support, or None), edges (the selected graph: (group, i, j) with
    i < j for the non-zero off-diagonal entries of symmetric matrix parameters), penalized (mask of S).
    """

    lambdas: np.ndarray
    thetas: np.ndarray
    supports: np.ndarray
    df: np.ndarray
    losses: np.ndarray
    kkt: np.ndarray
    penalized: np.ndarray
    param_names: list[str]
    select: str | None
    selected: int
    fit: PenalizedFit
    refit: FitResult | None
    edges: list[tuple[str, int, int]]
    ebic: np.ndarray | None = None
    ebic_loss: np.ndarray | None = None
    gamma: float = 0.5
    ebic_prior: str = "foygel-drton"
    cv_mean: np.ndarray | None = None
    cv_se: np.ndarray | None = None
    folds: int = 0
    lambda_max: float = 0.0
    seconds: float = 0.0
    n_samples: int = 0
    _model: Any = None

    @property
    def lam(self) -> float:
        return float(self.lambdas[self.selected])

    def graph(self, k: int | None = None) -> list[tuple[str, int, int]]:
        """The edges at grid point k (default: the selected one)."""
        k = self.selected if k is None else k
        return graph_edges(self._model, self.thetas[k], self.penalized)

    def __repr__(self) -> str:
        crit = self.select or "none"
        return (
            f"PathResult: {self.lambdas.size} λ from {self.lambdas[0]:.4g} to {self.lambdas[-1]:.4g}, "
            f"selected by {crit}: λ = {self.lam:.4g} (index {self.selected}), {int(self.df[self.selected])} of "
            f"{int(self.penalized.sum())} penalised parameters non-zero, {len(self.edges)} edges; "
            f"max KKT residual {np.max(self.kkt):.2g}; {self.seconds:.2f} s"
        )


def _graph_index(model: Model) -> dict[int, tuple[str, int, int]]:
    """Flat θ index → (group, i, j), i < j, for off-diagonal entries of symmetric square matrix groups."""
    out: dict[int, tuple[str, int, int]] = {}
    offset = 0
    for g in model.groups:
        if len(g.shape) == 2 and g.shape[0] == g.shape[1]:
            n = g.shape[0]
            T = [e for _, e in g.entries()]  # row-major, read once (indexing a sympy matrix costs µs an entry)
            sym = all(T[i * n + j] == T[j * n + i] for i in range(n) for j in range(i + 1, n))
            if sym:
                index = {s: offset + k for k, s in enumerate(g.symbols)}
                for i in range(n):
                    for j in range(i + 1, n):
                        e = T[i * n + j]
                        if e in index:
                            out[index[e]] = (g.name, i, j)
        offset += g.size
    return out


def graph_edges(model: Model, theta: np.ndarray, mask: np.ndarray) -> list[tuple[str, int, int]]:
    """The non-zero penalised off-diagonal entries of symmetric matrix parameters, as (group, i, j), i < j."""
    index = _graph_index(model)
    return [index[k] for k in sorted(index) if mask[k] and theta[k] != 0]


EBIC_PRIORS = ("binomial", "foygel-drton")


def ebic(
    loss_values: np.ndarray,
    df: np.ndarray,
    n: float,
    n_penalized: int,
    gamma: float,
    d: int | None = None,
    prior: str = "foygel-drton",
) -> np.ndarray:
    """eBIC_γ = 2n·J̃ + k·log n + (4γ·k·log d for a graph in d nodes, 2γ·k·log|S| otherwise), or with
    `prior="binomial"` (genscore's) 2γ·log C(|S|, k) as the last term. See the module docstring."""
    if prior not in EBIC_PRIORS:
        raise ValueError(f"ebic_prior must be one of {EBIC_PRIORS}, got {prior!r}")
    k = np.asarray(df, dtype=np.float64)
    if prior == "binomial":
        m = float(max(n_penalized, 1))
        log_choose = math.lgamma(m + 1) - np.array([math.lgamma(v + 1) + math.lgamma(m - v + 1) for v in k.ravel()])
        extra = 2 * gamma * log_choose.reshape(k.shape)
    else:
        per = 4 * gamma * math.log(d) if d is not None else 2 * gamma * math.log(max(n_penalized, 1))
        extra = k * per
    return 2 * n * np.asarray(loss_values) + k * math.log(n) + extra


def _first_min(values: np.ndarray) -> int:
    """The first (largest λ) index whose value is within rounding (1e-10 relative) of the minimum."""
    v = np.asarray(values, dtype=np.float64)
    best = float(np.min(v))
    return int(np.flatnonzero(v <= best + 1e-10 * max(1.0, abs(best)))[0])


def _grid(lam_max: float, n_lambdas: int, ratio: float) -> np.ndarray:
    if lam_max <= 0:
        return np.zeros(1)
    return lam_max * np.geomspace(1.0, ratio, n_lambdas)


def _quadratic_path(
    prob: QuadraticProblem, lambdas: np.ndarray, refits: list[Any] | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Warm-started solves down the grid; with `refits`, the unpenalised refit on each support is appended
    right after its solve, started from it."""
    theta, _ = prob.start()
    thetas = np.empty((lambdas.size, theta.size))
    kkt = np.empty(lambdas.size)
    sweeps = 0
    prev = float(lambdas[0])
    for k, lam in enumerate(lambdas):
        theta, kkt[k], s = prob.solve(float(lam), theta, previous_lam=prev)
        thetas[k] = theta
        sweeps += s
        prev = float(lam)
        if refits is not None:
            support = prob.mask & (theta != 0)
            if k and np.array_equal(support, prob.mask & (thetas[k - 1] != 0)) and refits[-1] is not None:
                refits.append(refits[-1])  # the same support: the same refit (ties in eBIC stay exact)
            else:
                refits.append(_refit_quadratic(prob, support, theta))
    return thetas, kkt, sweeps


def _fista_path(loss: CompiledLoss, data: _Data, lambdas: np.ndarray, mask: np.ndarray, theta0: np.ndarray) -> Any:
    lower = _lower(loss.model)
    thetas = np.empty((lambdas.size, theta0.size))
    kkt = np.empty(lambdas.size)
    values = np.empty(lambdas.size)
    theta = theta0
    for k, lam in enumerate(lambdas):
        theta, values[k], _, kkt[k], _, _ = fista(
            lambda th: _value_and_grad(loss, th, data), theta, float(lam), mask, lower
        )
        thetas[k] = theta
    return thetas, kkt, values


def _refit_quadratic(
    prob: QuadraticProblem, support: np.ndarray, start: np.ndarray | None = None
) -> tuple[np.ndarray, float] | None:
    """The unpenalised minimiser of J̃ with θ_j = 0 off the support (and the unpenalised parameters free), by
    conjugate gradients from `start` (the penalised estimate); None when A on that set is singular."""
    free = ~prob.mask | support
    theta = np.zeros(prob.b.size)
    idx = np.flatnonzero(free)
    if idx.size:
        x0 = np.zeros(idx.size) if start is None else start[idx]
        sol = prob.solve_on(free, -prob.b[idx], x0, REFIT_TOL)
        if sol is None:
            return None
        theta[idx] = sol
    return theta, prob.value(theta)


def path(
    model: Model | CompiledLoss,
    X: Any,
    penalty: L1 | None = None,
    *,
    n_lambdas: int = 50,
    ratio: float | None = None,
    lambdas: Any = None,
    select: str | None = "ebic",
    gamma: float = 0.5,
    ebic_prior: str = "foygel-drton",
    folds: int = 5,
    refit: bool = True,
    se: bool = False,
    seed: int = 0,
    weights: Any = None,
    backend: str = DEFAULT_BACKEND,
) -> PathResult:
    """The ℓ1 path of J̃ + λ‖θ_S‖₁ over a λ grid and the λ selected by eBIC or CV (see the module)."""
    start = time.perf_counter()
    penalty = _penalty(penalty if penalty is not None else L1())
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    if not (isinstance(n_lambdas, int) and n_lambdas >= 1):
        raise ValueError(f"n_lambdas must be a positive integer, got {n_lambdas!r}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be ≥ 0, got {gamma!r}")
    if ebic_prior not in EBIC_PRIORS:
        raise ValueError(f"ebic_prior must be one of {EBIC_PRIORS}, got {ebic_prior!r}")
    if select == "cv" and not (isinstance(folds, int) and folds >= 2):
        raise ValueError(f"folds must be an integer ≥ 2, got {folds!r}")
    loss = _loss_of(model, backend, quadratic_only=True)
    mdl = loss.model
    mask = penalized_mask(mdl, penalty.on)
    data = _fit_data(loss, X, weights)
    n = data.n
    n_eff = data.n_eff
    quadratic = is_quadratic(loss)
    if ratio is None:
        ratio = 0.01 if n > mdl.n_params else 0.1
    if not (0 < ratio <= 1):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")

    prob: QuadraticProblem | None = None
    if quadratic:
        prob = quadratic_problem(loss, data.host, mask, data.weights)
        theta_max, lam_max = prob.start()
    else:
        data = _bound(loss, data)  # the path's many FISTA evaluations on the same rows: the θ-free sums once
        theta_max = mdl.default_theta()
        lam_max = math.nan
        # λ_max for a non-quadratic objective: the unpenalised parameters fitted with θ_S = 0 (a huge λ)
        theta_max, _, g, _, _, _ = fista(
            lambda th: _value_and_grad(loss, th, data), theta_max, 1e300, mask, _lower(mdl)
        )
        lam_max = float(np.max(np.abs(g[mask]))) if mask.any() else 0.0
    if lambdas is not None:
        grid = np.asarray(lambdas, dtype=np.float64).ravel()
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
            raise ValueError("lambdas must be finite numbers ≥ 0")
        grid = np.sort(grid)[::-1]
    else:
        grid = _grid(lam_max, n_lambdas, ratio)

    refits: list[Any] = []
    if prob is not None:
        thetas, kkt, _ = _quadratic_path(prob, grid, refits if refit else None)
        losses = np.array([prob.value(th) for th in thetas])
    else:
        thetas, kkt, losses = _fista_path(loss, data, grid, mask, theta_max)
    supports = (thetas != 0) & mask[None, :]
    df = supports.sum(axis=1)

    result_ebic = ebic_loss = cv_mean = cv_se = None
    if not refits:
        refits = [None] * grid.size
    if select == "ebic":
        ebic_loss = np.array([r[1] if r is not None else math.inf for r in refits]) if refit and prob else losses
        graph = _graph_index(mdl)
        is_graph = bool(graph) and all(k in graph for k in np.flatnonzero(mask))
        result_ebic = ebic(
            ebic_loss, df, n_eff, int(mask.sum()), gamma, mdl.dim if is_graph else None, prior=ebic_prior
        )
        selected = _first_min(result_ebic)
    elif select == "cv":
        cv_mean, cv_se = _cross_validate(loss, data, mask, grid, folds, seed, theta_max)
        selected = _first_min(cv_mean)
    else:
        selected = grid.size - 1

    theta_sel = thetas[selected]
    if prob is not None:
        g_sel = prob.grad(theta_sel)
        value_sel = prob.value(theta_sel)
        method, tol = "l1_coordinate_descent", KKT_TOL
    else:
        value_sel, g_sel = _value_and_grad(loss, theta_sel, data)
        method, tol = "l1_fista", FISTA_TOL
    fit = make_fit(
        loss, theta_sel, value_sel, g_sel, float(grid[selected]), mask, float(kkt[selected]), method=method,
        n_iter=0, n_evals=0, n=n, tol=tol, start=start,
    )  # fmt: skip
    refit_result = _refit_result(loss, data, supports[selected], mask, refits[selected], prob) if refit else None
    if se and refit_result is not None and prob is not None:
        _support_standard_errors(refit_result, loss, data, prob, ~mask | supports[selected])
    return PathResult(
        lambdas=grid,
        thetas=thetas,
        supports=supports,
        df=df,
        losses=losses,
        kkt=kkt,
        penalized=mask,
        param_names=mdl.param_names,
        select=select,
        selected=selected,
        fit=fit,
        refit=refit_result,
        edges=graph_edges(mdl, theta_sel, mask),
        ebic=result_ebic,
        ebic_loss=ebic_loss,
        gamma=gamma,
        ebic_prior=ebic_prior,
        cv_mean=cv_mean,
        cv_se=cv_se,
        folds=folds if select == "cv" else 0,
        lambda_max=lam_max,
        seconds=time.perf_counter() - start,
        n_samples=n,
        _model=mdl,
    )


def _refit_result(
    loss: CompiledLoss, data: _Data, support: np.ndarray, mask: np.ndarray, solved: Any, prob: QuadraticProblem | None
) -> Any:
    """The unpenalised refit on the selected support as a PenalizedFit with λ = 0 (θ_j = 0 off the support)."""
    start = time.perf_counter()
    if solved is not None:
        theta = solved[0]
    elif is_quadratic(loss):
        return None
    else:
        # non-quadratic: FISTA with an infinite penalty off the support and none on it
        lower = _lower(loss.model)
        off = mask & ~support
        theta0 = loss.model.default_theta()
        theta0[off] = 0.0
        lower_fixed = np.where(off, 0.0, lower)

        def vg(th: np.ndarray) -> tuple[float, np.ndarray]:
            th = np.where(off, 0.0, th)
            v, g = _value_and_grad(loss, th, data)
            return v, np.where(off, 0.0, g)

        theta, _, _, _, _, _ = fista(vg, theta0, 0.0, np.zeros_like(mask), lower_fixed)
        theta = np.where(off, 0.0, theta)
    if prob is not None:  # the quadratic form: no pass over the data (nor the loss's kernels)
        v, g = prob.value(theta), prob.grad(theta)
    else:
        v, g = _value_and_grad(loss, theta, data)
    g_free = np.where(mask & ~support, 0.0, g)
    r = float(np.max(np.abs(g_free))) if g_free.size else 0.0
    fit = make_fit(
        loss, theta, v, g, 0.0, mask & ~support, r, method="refit_on_support", n_iter=0, n_evals=1, n=data.n,
        tol=1e-6, start=start,
    )  # fmt: skip
    return fit


SE_MAX_FREE = 20_000  # dense |F| × |F| H and V beyond this (3.2 GB each): no standard errors


def _support_standard_errors(fit: Any, loss: Any, data: _Data, prob: QuadraticProblem, free: np.ndarray) -> None:
    """Sandwich standard errors of the refit for the parameters F it estimates (the unpenalised ones and the
    selected support), H_FF⁻¹ V_FF H_FF⁻¹ / N with H_FF = A_FF from the blocks and V_FF from per-row gradients
    on F only (symsm.runtime.sparse.block_gradient_moments): |F| × |F|, never P × P. Conditional on the
    selected support — no correction for the selection. NaN off F (those parameters are fixed at 0)."""
    from ..runtime.sparse import block_gradient_moments

    idx = np.flatnonzero(free)
    if idx.size > SE_MAX_FREE:
        fit.message += f"; no standard errors: {idx.size} free parameters (> {SE_MAX_FREE}, dense |F|² matrices)"
        return
    import scipy.linalg

    H = prob.A.restrict(idx).toarray()
    try:
        factor = scipy.linalg.cho_factor(H)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        fit.message += "; no standard errors: A on the support is not positive definite"
        return
    _, V = block_gradient_moments(loss, data.host, fit.theta, free, data.weights)
    W = scipy.linalg.cho_solve(factor, V)  # H⁻¹V, then H⁻¹(H⁻¹V)ᵀ = H⁻¹VH⁻¹ (H, V symmetric)
    cov = scipy.linalg.cho_solve(factor, W.T) / data.n_eff
    se = np.full(fit.theta.size, np.nan)
    se[idx] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    fit.se = se
    fit.message = fit.message.replace(
        "no standard errors after selection",
        "sandwich standard errors on the selected support (conditional on it: no correction for the selection)",
    )


def _cross_validate(
    loss: CompiledLoss, data: _Data, mask: np.ndarray, grid: np.ndarray, folds: int, seed: int, theta0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out unpenalised J̃ (weighted when the data are) along the grid, per fold → (mean, standard error)."""
    n = data.n
    if folds > n:
        raise ValueError(f"folds = {folds} > N = {n}")
    rng = np.random.default_rng(seed)
    assignment = np.empty(n, dtype=np.int64)
    assignment[rng.permutation(n)] = np.arange(n) % folds
    scores = np.empty((folds, grid.size))
    w = data.weights
    quadratic = is_quadratic(loss)
    for f in range(folds):
        train, test = assignment != f, assignment == f
        w_train = None if w is None else w[train]
        w_test = None if w is None else w[test]
        if quadratic:
            from ..runtime.sparse import block_quadratic_form

            prob = quadratic_problem(loss, data.host[train], mask, w_train)
            A, b, c = block_quadratic_form(loss, data.host[test], w_test)
            thetas, _, _ = _quadratic_path(prob, grid)
            scores[f] = [0.5 * th @ (A @ th) + b @ th + c for th in thetas]
        else:
            sub = _bound(loss, _Data(data.host[train], data.host[train], w_train))
            held = _Data(data.host[test], data.host[test], w_test)
            thetas, _, _ = _fista_path(loss, sub, grid, mask, theta0)
            scores[f] = [_value_and_grad(loss, th, held)[0] for th in thetas]
    mean = scores.mean(axis=0)
    se = scores.std(axis=0, ddof=1) / math.sqrt(folds)
    return mean, se
