"""ℓ1-penalised score matching: minimise J̃(θ) + λ Σ_{j∈S} |θ_j| over a set S of penalised parameters.

* **Exponential families** (every ∂ᵢ log f affine in θ): J̃ = ½θᵀAθ + bᵀθ + c with A kept as its blocks
  (symsm/runtime/sparse.py: only the blocks the score pattern allows, each read from a Gram matrix of the
  distinct score coefficients — one shared Gram matrix on ℝᵈ); cyclic coordinate descent on (A, b)
  (Friedman, Hastie & Tibshirani 2010), compiled with numba, on an active set (sequential strong rules,
  Tibshirani et al. 2012) checked against the KKT conditions of every parameter after each solve, with
  warm starts down the λ path. A solution is accepted when every KKT condition holds to `KKT_TOL`,
  computed from a fresh g = Aθ + b:  g_j = 0 (j ∉ S), g_j + λ sign θ_j = 0 (θ_j ≠ 0), |g_j| ≤ λ (θ_j = 0).
* **Other models**: FISTA with backtracking (Beck & Teboulle 2009) on `value_and_grad`, with restarts when
  the objective increases; parameters declared positive are kept ≥ `POSITIVE_LOWER_BOUND`.

The penalised set S (`L1(on=...)`): by default the off-diagonal entries of the square matrix parameters
(the interactions of a graphical model: genscore's default, which leaves the diagonal of K and η
unpenalised), or every parameter when the model has no square matrix; or a list of group / parameter names,
or "all".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache as cache_function
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..backends import DEFAULT_BACKEND, get_backend
from ..core.arrays import as_theta
from ..model.model import Model
from ..runtime.accumulate import is_quadratic
from ..runtime.compiled import CompiledLoss, compile_model
from ..runtime.loader import load_module
from .fit import POSITIVE_LOWER_BOUND, FitResult, _bound, _fit_data, _value_and_grad, register_variant

if TYPE_CHECKING:
    from ..runtime.sparse import BlockQuadratic

__all__ = ["KKT_TOL", "L1", "PenalizedFit", "fit_penalized", "kkt_residual", "penalized_mask"]

KKT_TOL = 1e-10  # largest violation of a KKT condition accepted by coordinate descent
FISTA_TOL = 1e-8  # the same, for FISTA (a gradient evaluated by a kernel carries more rounding)
MAX_SWEEPS = 100_000
CG_MAXITER = 2000  # conjugate-gradient steps of the exact solve on a support (plus 10·√|F|)
POLISH_FROM = 1e-4  # CD runs to this tolerance before the exact solve on the support and signs is tried
FISTA_MAXITER = 20_000


@dataclass(frozen=True)
class L1:
    """The ℓ1 penalty λ Σ_{j∈S} ``|θ_j|``.

    Attributes
    ----------
    lam : float or None
        λ ≥ 0 (for `symsm.fit`; `symsm.path` builds its own grid and ignores it).
    on : None, "all" or list of str
        The penalised set S — None (the default: off-diagonal entries of square matrix parameters, or all
        parameters when there are none), "all", or a list of parameter-group and parameter names.
    """

    lam: float | None = None
    on: Any = None

    def __post_init__(self) -> None:
        if self.lam is not None:
            lam = float(self.lam)
            if not math.isfinite(lam) or lam < 0:
                raise ValueError(f"L1: lam must be a finite number ≥ 0, got {self.lam!r}")


def penalized_mask(model: Model, on: Any = None) -> np.ndarray:
    """Boolean mask over flat θ of the penalised parameters (see `L1`)."""
    P = model.n_params
    mask = np.zeros(P, dtype=bool)
    offsets = np.cumsum([0, *(g.size for g in model.groups)])
    if on is None or on == "offdiagonal":
        found = False
        for g, off in zip(model.groups, offsets, strict=False):
            if len(g.shape) == 2 and g.shape[0] == g.shape[1] and g.shape[0] > 1:
                found = True
                index = {s: off + k for k, s in enumerate(g.symbols)}
                for (i, j), entry in g.entries():
                    if i != j and entry in index:
                        mask[index[entry]] = True
                for i in range(g.shape[0]):  # a symbol on the diagonal is never penalised by default
                    entry = g.template[i, i]
                    if entry in index:
                        mask[index[entry]] = False
        if not found and on is None:
            mask[:] = True
        return mask
    if isinstance(on, str):
        if on == "all":
            mask[:] = True
            return mask
        on = [on]
    if not isinstance(on, Sequence) or not on:
        raise ValueError(f"L1(on=...): expected None, 'all' or a non-empty list of names, got {on!r}")
    names = model.param_names
    groups = {g.name: (off, g.size) for g, off in zip(model.groups, offsets, strict=False)}
    for name in on:
        if name in groups:
            off, size = groups[name]
            mask[off : off + size] = True
        elif name in names:
            mask[names.index(name)] = True
        else:
            raise ValueError(
                f"L1(on=...): unknown parameter {name!r}; groups: {sorted(groups)}, parameters: "
                f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''}"
            )
    return mask


def kkt_residual(grad: np.ndarray, theta: np.ndarray, lam: float, mask: np.ndarray) -> float:
    """The largest violation of the KKT conditions of J̃ + λ‖θ_S‖₁ at θ, given g = ∇J̃(θ)."""
    g = np.asarray(grad, dtype=np.float64)
    r = np.abs(g)  # unpenalised: g_j = 0
    pen = mask
    nz = pen & (theta != 0)
    r = np.where(nz, np.abs(g + lam * np.sign(theta)), r)
    zero = pen & (theta == 0)
    r = np.where(zero, np.maximum(0.0, np.abs(g) - lam), r)
    return float(r.max()) if r.size else 0.0


# ---------------------------------------------------------------------------------------------- coordinate descent
@cache_function
def _cd_kernel() -> Any:
    """`_cd.coordinate_descent_blocks`, loaded through symsm's verified cache (numba compiles it once per machine)."""
    source = resources.files(__package__).joinpath("_cd.py").read_text(encoding="utf-8")

    def copy(key: str) -> str:
        header = f"# generated by symsm {__version__}: a copy of symsm/fitting/_cd.py — do not edit"
        return f"{header}\n# cache-key: {key}\n{source}"

    return load_module("l1-coordinate-descent", copy, source=source).module.coordinate_descent_blocks


@dataclass
class QuadraticProblem:
    """½θᵀAθ + bᵀθ + c with A kept as its blocks (symsm.runtime.sparse.BlockQuadratic), and the penalised set."""

    A: BlockQuadratic
    b: np.ndarray
    c: float
    mask: np.ndarray
    names: list[str]
    diag: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.diag = np.asarray(self.A.diagonal(), dtype=np.float64)
        dead = [n for n, v in zip(self.names, self.diag, strict=True) if not v > 0]
        if dead:
            raise ValueError(
                f"J̃ does not depend on {', '.join(dead[:5])} (A has a zero diagonal entry there): the penalised "
                "objective has no unique minimiser in that direction"
            )

    def grad(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(self.A @ theta, dtype=np.float64) + self.b

    def value(self, theta: np.ndarray) -> float:
        return float(0.5 * theta @ (self.A @ theta) + self.b @ theta + self.c)

    def start(self) -> tuple[np.ndarray, float]:
        """θ at λ_max (θ_S = 0, θ_U minimising J̃) and λ_max = max_{j∈S} |g_j| there.

        Raises ValueError when A restricted to the unpenalised parameters is singular: J̃ + λ‖θ_S‖₁ is then
        unbounded below or has no unique minimiser, whatever λ."""
        import scipy.linalg

        U = np.flatnonzero(~self.mask)
        theta = np.zeros(self.b.size)
        if U.size:
            Auu = self.A.restrict(U).toarray()
            try:
                factor = scipy.linalg.cho_factor(Auu)
                scale = np.sqrt(np.diag(Auu))
                w = np.linalg.eigvalsh(Auu / np.outer(scale, scale)) if U.size <= 3000 else np.array([1.0])
                if w.min() <= 1e-12 * w.max():
                    raise np.linalg.LinAlgError
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError) as err:
                names = [self.names[k] for k in U[:8]]
                raise ValueError(
                    "the unpenalised parameters (" + ", ".join(names) + (" …" if U.size > 8 else "") + ") are not "
                    "identified: A restricted to them is singular, so J̃ + λ‖θ_S‖₁ is unbounded below (or has no "
                    "unique minimiser) for every λ; penalise more parameters (L1(on=...)) or fix some"
                ) from err
            theta[U] = scipy.linalg.cho_solve(factor, -self.b[U])
        g = self.grad(theta)
        lam_max = float(np.max(np.abs(g[self.mask]))) if self.mask.any() else 0.0
        self._start = (theta.copy(), lam_max)
        return theta, lam_max

    def solve(
        self, lam: float, theta: np.ndarray, *, previous_lam: float | None = None
    ) -> tuple[np.ndarray, float, int]:
        """Minimise at λ from θ (warm start): active set (strong rule) → CD → KKT on all → repeat.
        Returns (θ̂, KKT residual, sweeps)."""
        start = getattr(self, "_start", None) or self.start()
        if lam >= start[1]:  # at or above λ_max the solution is θ_S = 0 exactly (CD would leave rounding there)
            theta = start[0].copy()
            return theta, kkt_residual(self.grad(theta), theta, lam, self.mask), 0
        kernel = _cd_kernel()
        A = self.A
        theta = theta.copy()
        g = self.grad(theta)
        lam_vec = np.where(self.mask, lam, 0.0)
        prev = lam if previous_lam is None else previous_lam
        active = (~self.mask) | (theta != 0) | (self.mask & (np.abs(g) >= 2 * lam - prev))
        sweeps = 0
        tol = POLISH_FROM  # loose: identify the support and signs, then solve on them exactly (`_polish`)
        for _ in range(400):
            idx = np.flatnonzero(active).astype(np.int64)
            sweeps += kernel(
                A.occ_ptr, A.occ_block, A.occ_pos, A.ptr, A.cols, A.fidx, A.gram, A.goff, A.gdim, A.own, self.diag,
                theta, g, lam_vec, idx, tol, MAX_SWEEPS,
            )  # fmt: skip
            g = self.grad(theta)  # fresh, without the drift of the incremental updates
            violation = self.mask & (theta == 0) & (np.abs(g) > lam + 0.5 * KKT_TOL) & ~active
            if violation.any():
                active |= violation
                continue
            r = kkt_residual(g, theta, lam, self.mask)
            if r <= KKT_TOL:
                return theta, r, sweeps
            if not np.all(np.isfinite(theta)):
                break
            polished = self._polish(theta, lam)
            if polished is not None:
                g2 = self.grad(polished)
                r2 = kkt_residual(g2, polished, lam, self.mask)
                if r2 <= KKT_TOL:
                    return polished, r2, sweeps
            tol = max(tol * 1e-2, KKT_TOL * 1e-2)
        r = kkt_residual(g, theta, lam, self.mask)
        if not np.all(np.isfinite(theta)) or np.max(np.abs(theta)) > 1e100:
            raise ValueError(f"coordinate descent diverged at λ = {lam:.4g}: J̃ + λ‖θ_S‖₁ is unbounded below")
        return theta, r, sweeps

    def solve_on(self, free: np.ndarray, rhs: np.ndarray, x0: np.ndarray, tol: float) -> np.ndarray | None:
        """Solve A_FF y = rhs (F = `free`) by conjugate gradients with a Jacobi preconditioner from x0 until
        |A_FF y − rhs|_∞ ≤ tol — which is the KKT residual on F when rhs = −(b_F + λ s_F). A_FF is positive
        semi-definite; None when it does not converge (singular: the support does not identify θ_F)."""
        idx = np.flatnonzero(free)
        sub = self.A.restrict(idx)
        inv_diag = 1.0 / self.diag[idx]
        y = x0.copy()
        r = rhs - sub @ y
        z = inv_diag * r
        p = z.copy()
        rz = float(r @ z)
        for _ in range(CG_MAXITER + 10 * int(np.sqrt(idx.size))):
            if np.max(np.abs(r), initial=0.0) <= tol:
                return y
            q = sub @ p
            pq = float(p @ q)
            if not pq > 0:
                return None
            alpha = rz / pq
            y += alpha * p
            r -= alpha * q
            z = inv_diag * r
            rz_new = float(r @ z)
            p = z + (rz_new / rz) * p
            rz = rz_new
        r = rhs - sub @ y  # the true residual: stop when the recursion's has drifted below it
        return y if np.max(np.abs(r), initial=0.0) <= tol else None

    def _polish(self, theta: np.ndarray, lam: float) -> np.ndarray | None:
        """With the support and signs s of θ fixed, the minimiser solves A_FF θ_F = −(b_F + λ s_F) (F: the free
        parameters and the non-zero penalised ones): accepted when no sign changes."""
        free = ~self.mask | (theta != 0)
        idx = np.flatnonzero(free)
        s = np.where(self.mask[idx], np.sign(theta[idx]), 0.0)
        sol = self.solve_on(free, -(self.b[idx] + lam * s), theta[idx], 0.1 * KKT_TOL)
        if sol is None:
            return None
        pen = self.mask[idx]
        if np.any(np.sign(sol[pen]) != s[pen]):
            return None
        out = np.zeros_like(theta)
        out[idx] = sol
        return out


def quadratic_problem(loss: CompiledLoss, X: Any, mask: np.ndarray, weights: Any = None) -> QuadraticProblem:
    from ..runtime.sparse import block_quadratic_form

    A, b, c = block_quadratic_form(loss, X, weights)
    return QuadraticProblem(A, b, c, mask, loss.model.param_names)


# ---------------------------------------------------------------------------------------------- FISTA
def _kkt_with_bounds(g: np.ndarray, theta: np.ndarray, lam: float, mask: np.ndarray, lower: np.ndarray) -> float:
    """KKT residual with parameters held at a lower bound counted as satisfied when g_j ≥ 0 there."""
    at_bound = (theta <= lower) & (g >= 0)
    if not at_bound.any():
        return kkt_residual(g, theta, lam, mask)
    return kkt_residual(np.where(at_bound, 0.0, g), np.where(at_bound, 0.0, theta), lam, mask & ~at_bound)


def fista(
    vg: Any,
    theta0: np.ndarray,
    lam: float,
    mask: np.ndarray,
    lower: np.ndarray,
    *,
    tol: float = FISTA_TOL,
    maxiter: int = FISTA_MAXITER,
) -> tuple[np.ndarray, float, np.ndarray, float, int, int]:
    """Proximal gradient with Nesterov momentum and backtracking on L (Beck & Teboulle 2009), restarted when
    J̃ + λ‖θ_S‖₁ increases. vg(θ) → (J̃, ∇J̃). Returns (θ̂, J̃, ∇J̃, KKT residual, iterations, evaluations)."""
    lam_vec = np.where(mask, lam, 0.0)

    def prox(z: np.ndarray, step: float) -> np.ndarray:
        out = np.sign(z) * np.maximum(np.abs(z) - lam_vec * step, 0.0)
        return np.maximum(out, lower)

    def F(f: float, th: np.ndarray) -> float:
        return f + lam * float(np.abs(th[mask]).sum())

    x = np.maximum(np.asarray(theta0, dtype=np.float64), lower)
    fx, gx = vg(x)
    evals = 1
    if not math.isfinite(fx):
        raise ValueError("J̃ is not finite at the starting point")
    y, fy, gy = x.copy(), fx, gx
    t = 1.0
    L = 1.0
    it = 0
    r = _kkt_with_bounds(gx, x, lam, mask, lower)
    while r > tol and it < maxiter:
        it += 1
        while True:
            x_new = prox(y - gy / L, 1.0 / L)
            f_new, g_new = vg(x_new)
            evals += 1
            diff = x_new - y
            # sufficient decrease, judged by the gradients (robust to the rounding of J̃ near the minimum):
            # the local curvature (g_new − g_y)·Δ / |Δ|² must not exceed L
            dd = float(diff @ diff)
            if math.isfinite(f_new) and np.all(np.isfinite(g_new)) and (dd == 0 or (g_new - gy) @ diff <= L * dd):
                break
            L *= 2.0
            if L > 1e300:
                raise ValueError("FISTA: no step lowers the objective (the gradient is not Lipschitz here)")
        r = _kkt_with_bounds(g_new, x_new, lam, mask, lower)
        # adaptive restart (O'Donoghue & Candès 2015): momentum off when it points uphill
        if (y - x_new) @ (x_new - x) > 0 or F(f_new, x_new) > F(fx, x):
            t = 1.0
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        y = np.maximum(x_new + ((t - 1) / t_new) * (x_new - x), lower)
        x, fx, gx, t = x_new, f_new, g_new, t_new
        if r <= tol:
            break
        if t > 1.0 + 1e-12 and np.any(y != x):
            fy, gy = vg(y)
            evals += 1
            if not math.isfinite(fy):
                y, fy, gy, t = x.copy(), fx, gx, 1.0
        else:
            y, fy, gy = x.copy(), fx, gx
        L = max(L / 2.0, 1e-12)
    return x, fx, gx, r, it, evals


# ---------------------------------------------------------------------------------------------- results
@dataclass(repr=False)
class PenalizedFit(FitResult):
    """`symsm.fit(..., penalty=L1(...))`: a FitResult (no standard errors: inference after selection needs
    more than the sandwich) with the penalty's λ, the penalised set, the support and the KKT residual."""

    lam: float = 0.0
    penalized: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    support: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    kkt: float = math.nan
    objective_value: float = math.nan  # J̃ + λ‖θ_S‖₁

    @property
    def selected(self) -> list[str]:
        """Names of the penalised parameters that are not zero."""
        return [n for n, s in zip(self.param_names, self.support, strict=True) if s]


class QuadraticOnly:
    """What a penalised fit of an exponential family needs from a loss — the model, its derivation and the
    backend of its fitting kernels — without compiling the loss's own kernels (their code generation and
    native compilation dominate at large d; the sparse quadratic form has a kernel of its own)."""

    objective = "exact"
    objective_spec = None
    dtype = np.dtype(np.float64)

    def __init__(self, model: Model, backend: str) -> None:
        from ..derive.derivation import Derivation

        self.model = model
        self.backend = backend
        self.derivation = Derivation(model)


# the stand-ins of the last few models (by identity), so that a second path on the same Model reuses its
# derivation and sparse pieces (seconds for a large graphical model); bounded, so models are not kept for long
_STAND_INS: dict[tuple[int, str], QuadraticOnly] = {}
STAND_INS_KEPT = 4


def _loss_of(model: Model | CompiledLoss, backend: str, *, quadratic_only: bool = False) -> CompiledLoss:
    """The compiled loss; with `quadratic_only`, a Model whose objective is quadratic in θ gets a
    `QuadraticOnly` stand-in instead (no kernels compiled but the sparse quadratic form's)."""
    if isinstance(model, CompiledLoss | QuadraticOnly):
        return model
    if isinstance(model, Model):
        if quadratic_only:
            key = (id(model), get_backend(backend).name)
            stand_in = _STAND_INS.get(key)
            if stand_in is None or stand_in.model is not model:
                stand_in = QuadraticOnly(model, key[1])
            if stand_in.derivation.is_quadratic:
                _STAND_INS.pop(key, None)
                _STAND_INS[key] = stand_in
                while len(_STAND_INS) > STAND_INS_KEPT:
                    del _STAND_INS[next(iter(_STAND_INS))]
                return stand_in  # type: ignore[return-value]
        return compile_model(model, backend=backend)
    raise TypeError(f"model must be a symsm.Model or a CompiledLoss, got {type(model).__name__}")


def _lower(model: Model) -> np.ndarray:
    return np.array([POSITIVE_LOWER_BOUND if p.is_positive else -np.inf for p in model.params])


def make_fit(
    loss: CompiledLoss,
    theta: np.ndarray,
    value: float,
    grad: np.ndarray,
    lam: float,
    mask: np.ndarray,
    kkt: float,
    *,
    method: str,
    n_iter: int,
    n_evals: int,
    n: int,
    tol: float,
    start: float,
) -> PenalizedFit:
    mdl = loss.model
    P = mdl.n_params
    support = mask & (theta != 0)
    converged = bool(kkt <= tol)
    message = (
        f"{method}: λ = {lam:.6g}, {int(support.sum())} of {int(mask.sum())} penalised parameters non-zero; "
        f"KKT residual {kkt:.2g} ({'≤' if converged else '>'} {tol:.0e}); no standard errors after selection"
    )
    nan = np.full(P, np.nan)
    empty = np.empty((0, 0))
    return PenalizedFit(
        theta=theta,
        params=mdl.unpack(theta),
        loss=float(value),
        grad_norm=float(np.linalg.norm(grad)),
        se=nan,
        cov=empty,
        method=method,
        n_iter=n_iter,
        converged=converged,
        message=message,
        hessian_method="",
        param_names=mdl.param_names,
        n_samples=n,
        grad=np.asarray(grad, dtype=np.float64),
        hessian=empty,
        grad_cov=empty,
        n_evals=n_evals,
        seconds=time.perf_counter() - start,
        model_name=mdl.name,
        se_params={},
        lam=float(lam),
        penalized=mask.copy(),
        support=support,
        kkt=float(kkt),
        objective_value=float(value + lam * np.abs(theta[mask]).sum()),
    )


def _penalty(penalty: Any) -> L1:
    if not isinstance(penalty, L1):
        raise TypeError(f"penalty must be symsm.L1(lam, on=...), got {type(penalty).__name__}")
    return penalty


def fit_penalized(
    model: Model | CompiledLoss,
    X: Any,
    penalty: L1,
    *,
    theta0: Any = None,
    backend: str = DEFAULT_BACKEND,
    weights: Any = None,
    options: Any = None,
) -> PenalizedFit:
    """`symsm.fit(model, X, penalty=L1(lam, on=...))`: the minimiser of J̃ + λ‖θ_S‖₁ (see the module)."""
    start = time.perf_counter()
    penalty = _penalty(penalty)
    if penalty.lam is None:
        raise ValueError("symsm.fit(..., penalty=L1(lam)): give λ, or use symsm.path for a grid of λ")
    if options:
        raise ValueError("options are not used by penalised fits")
    loss = _loss_of(model, backend, quadratic_only=True)
    mdl = loss.model
    mask = penalized_mask(mdl, penalty.on)
    lam = float(penalty.lam)
    data = _fit_data(loss, X, weights)
    if is_quadratic(loss):
        prob = quadratic_problem(loss, data.host, mask, data.weights)
        theta, lam_max = prob.start()
        if theta0 is not None:
            theta = as_theta(mdl, theta0, name="theta0", check_positive=False)
        theta, r, sweeps = prob.solve(lam, theta, previous_lam=max(lam, lam_max))
        g = prob.grad(theta)
        return make_fit(
            loss, theta, prob.value(theta), g, lam, mask, r, method="l1_coordinate_descent", n_iter=sweeps,
            n_evals=1, n=data.n, tol=KKT_TOL, start=start,
        )  # fmt: skip
    th0 = mdl.default_theta() if theta0 is None else as_theta(mdl, theta0, name="theta0")
    data = _bound(loss, data)  # FISTA's many evaluations on the same rows: the θ-free sums once
    theta, value, grad, r, it, evals = fista(lambda th: _value_and_grad(loss, th, data), th0, lam, mask, _lower(mdl))
    return make_fit(
        loss, theta, value, grad, lam, mask, r, method="l1_fista", n_iter=it, n_evals=evals, n=data.n,
        tol=FISTA_TOL, start=start,
    )  # fmt: skip


register_variant("penalty", fit_penalized)
