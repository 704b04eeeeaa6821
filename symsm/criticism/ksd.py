"""The kernel Stein discrepancy (KSD) goodness-of-fit test, from the model's score alone.

For a model p with score s = ∇ₓ log p = ∇ₓ log f (the normaliser drops out) and a kernel k, the Stein kernel

    u(x, y) = s(x)ᵀs(y) k(x, y) + s(x)ᵀ∇_y k(x, y) + s(y)ᵀ∇_x k(x, y) + tr ∇_x∇_y k(x, y)

has E_{x,y ~ q} u(x, y) = KSD²(q, p) ≥ 0, zero exactly when q = p (for the kernels here, on ℝᵈ, under the
tail conditions of Gorham & Mackey 2017 / Liu, Lee & Jordan 2016). The statistic is the U-statistic

    KSD²ₙ = 1/(n(n−1)) Σ_{i≠j} u(xᵢ, xⱼ),

a degenerate U-statistic under the null, so its null distribution is not normal; the p-value comes from the
**wild bootstrap** for degenerate U-statistics (Dehling & Mikosch 1994; Arcones & Giné 1992) as used by
Chwialkowski, Strathmann & Gretton (2016, §2.1) for i.i.d. data: independent Rademacher weights wᵢ = ±1
(their Markov-chain weights with a switching probability of ½, i.e. independent signs), and the draws

    B*ᵦ = 1/(n(n−1)) Σ_{i≠j} wᵢᵦ wⱼᵦ u(xᵢ, xⱼ),    p = (1 + #{ᵦ : B*ᵦ ≥ KSD²ₙ}) / (1 + B).

(Chwialkowski et al. bootstrap the V-statistic; with wᵢ² = 1 the diagonal is the same in every draw, so the
U-statistic version here ranks the draws identically up to that constant. Liu et al. (2016) bootstrap with
multinomial weights (wᵢ − 1/n); that variant is not implemented.) The weights are drawn as
``numpy.random.default_rng(seed).integers(0, 2, size=(n, B), dtype=np.int8) * 2 - 1``, so a plain loop can
reproduce every draw.

Computation: the double sum runs over blocks of row pairs (a ≤ b by symmetry). Each pair of blocks needs
three matrix products (BLAS, multithreaded by numpy's BLAS): S_a S_bᵀ, X_a X_bᵀ and [X_a S_a][S_b X_b]ᵀ
(= X_a S_bᵀ + S_a X_bᵀ), from which one fused elementwise pass (a numba kernel on symsm's thread pool)
forms U_ab; every bootstrap draw then comes from one more matrix product, W_aᵀ-weighted column sums of
U_ab W_b for all B draws at once. Nothing of size n × n is ever held: memory is O(block² + block·B) floats
plus the n × B int8 signs. The statistic is accumulated in float64 in a fixed order (independent of the
thread count); the bootstrap products run in ``bootstrap_dtype`` (float32 by default, twice the speed of
float64 — the rounding, ~1e-6 relative, moves the p-value only if a draw lies that close to the statistic;
pass ``bootstrap_dtype="float64"`` for the exact draws).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache as cache_function
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np

from .._version import __version__
from ..core.arrays import as_data, as_theta
from ..core.threads import run_blocks
from ..fitting.fit import FitResult, fit
from ..model.model import Model
from ..runtime.compiled import CompiledLoss, compile_model
from ..runtime.loader import load_module

__all__ = ["KERNELS", "KSDResult", "Kernel", "ksd_test", "median_bandwidth", "stein_kernel_matrix"]

KERNELS = ("imq", "gaussian")
#: rows per block: a pair of blocks holds block² float32 (16 MiB) and block × B floats (2048 measured faster than 1024)
DEFAULT_BLOCK = 2048
#: the median heuristic looks at the pairwise distances of at most this many rows
MEDIAN_ROWS = 1000
#: up to this d the inner products are formed in the fused loop, not by BLAS (measured: skinny products are slow)
FUSED_DOTS_MAX_D = 32


@dataclass(frozen=True)
class Kernel:
    """A translation-invariant kernel of r² = ‖x − y‖² with bandwidth h.

    "imq": k(x, y) = (c² + r²/h²)^β (inverse multiquadric, Gorham & Mackey 2017; β ∈ (−1, 0), c > 0);
    "gaussian": k(x, y) = exp(−r²/(2h²)).

    The methods evaluate k and the derivatives the Stein kernel needs at one pair of points (x, y), by their
    closed forms: the readable reference for the fused expression of the blocked pass.
    """

    name: str
    bandwidth: float
    c: float = 1.0
    beta: float = -0.5

    def _q(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        diff = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
        return diff, float(diff @ diff)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        _, r2 = self._q(x, y)
        h2 = self.bandwidth**2
        if self.name == "imq":
            return float((self.c**2 + r2 / h2) ** self.beta)
        return float(np.exp(-r2 / (2 * h2)))

    def grad_x(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇ₓ k(x, y) (= −∇_y k(x, y))."""
        diff, r2 = self._q(x, y)
        h2 = self.bandwidth**2
        if self.name == "imq":
            return 2 * self.beta / h2 * (self.c**2 + r2 / h2) ** (self.beta - 1) * diff
        return -np.exp(-r2 / (2 * h2)) * diff / h2

    def grad_y(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇_y k(x, y)."""
        return -self.grad_x(x, y)

    def trace_grad_xy(self, x: np.ndarray, y: np.ndarray) -> float:
        """tr ∇ₓ∇_y k(x, y) = Σᵢ ∂²k/∂xᵢ∂yᵢ."""
        diff, r2 = self._q(x, y)
        d, h2 = diff.size, self.bandwidth**2
        if self.name == "imq":
            q, b = self.c**2 + r2 / h2, self.beta
            return float(-2 * b / h2 * (2 * (b - 1) * q ** (b - 2) * r2 / h2 + d * q ** (b - 1)))
        return float(np.exp(-r2 / (2 * h2)) * (d / h2 - r2 / h2**2))

    def describe(self) -> str:
        if self.name == "imq":
            return f"IMQ (c² + ‖x−y‖²/h²)^β with c = {self.c:g}, β = {self.beta:g}, h = {self.bandwidth:.6g}"
        return f"Gaussian exp(−‖x−y‖²/(2h²)) with h = {self.bandwidth:.6g}"


@dataclass(repr=False)
class KSDResult:
    """The outcome of `ksd_test`.

    Attributes
    ----------
    statistic
        the U-statistic KSD²ₙ = 1/(n(n−1)) Σ_{i≠j} u(xᵢ, xⱼ) (can be slightly negative)
    p_value
        (1 + #{bootstrap draws ≥ statistic}) / (1 + n_bootstrap)
    kernel
        the `Kernel` used (name, bandwidth h, c, β); bandwidth_rule: "median" or "given"
    bootstrap
        the n_bootstrap wild-bootstrap draws of the statistic
    n, d
        rows tested and their dimension; n_fit: rows used to fit θ when fit_fraction was given (else 0)
    theta, param_names, model_name, seed, seconds, fit
        θ tested, the model, the seed, the wall time, and
        the `FitResult` of the fit on the other rows (fit_fraction) or the one passed in (else None)
    """

    statistic: float
    p_value: float
    kernel: Kernel
    bandwidth_rule: str
    bootstrap: np.ndarray
    n: int
    d: int
    n_fit: int
    theta: np.ndarray
    param_names: list[str]
    model_name: str
    seed: int
    seconds: float
    bootstrap_dtype: str
    fit: FitResult | None = field(default=None)

    @property
    def n_bootstrap(self) -> int:
        return int(self.bootstrap.size)

    @property
    def bandwidth(self) -> float:
        return self.kernel.bandwidth

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether the test rejects "the data come from the model" at level alpha."""
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        return self.p_value <= alpha

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "kernel": self.kernel.name,
            "bandwidth": self.kernel.bandwidth,
            "bandwidth_rule": self.bandwidth_rule,
            "c": self.kernel.c,
            "beta": self.kernel.beta,
            "n": self.n,
            "d": self.d,
            "n_fit": self.n_fit,
            "n_bootstrap": self.n_bootstrap,
            "bootstrap_dtype": self.bootstrap_dtype,
            "seed": self.seed,
            "theta": self.theta.tolist(),
            "seconds": self.seconds,
        }

    def __repr__(self) -> str:
        tested = f"n = {self.n} rows, d = {self.d}"
        if self.n_fit:
            tested += f" (θ fitted on {self.n_fit} other rows)"
        elif self.fit is not None:
            tested += " (θ fitted on these rows: the test is conservative, see fit_fraction)"
        verdict = "rejects" if self.rejects(0.05) else "does not reject"
        theta = ", ".join(f"{n} = {v:.5g}" for n, v in zip(self.param_names, self.theta, strict=True))
        return "\n".join(
            [
                f"KSDResult: model {self.model_name!r}, {tested}",
                f"  KSD² (U-statistic) = {self.statistic:.6g}, p-value = {self.p_value:.4g} "
                f"({self.n_bootstrap} wild-bootstrap draws, seed {self.seed}); "
                f"at α = 0.05 the test {verdict} the model",
                f"  kernel: {self.kernel.describe()} ({self.bandwidth_rule})",
                f"  θ: {theta}",
            ]
        )


def median_bandwidth(X: np.ndarray, seed: int = 0, max_rows: int = MEDIAN_ROWS) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows of X (of at most `max_rows`
    rows drawn without replacement with numpy.random.default_rng(seed) when X has more)."""
    n = X.shape[0]
    rows = X if n <= max_rows else X[np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))]
    sq = np.einsum("ij,ij->i", rows, rows)
    r2 = sq[:, None] + sq[None, :] - 2 * rows @ rows.T
    iu = np.triu_indices(rows.shape[0], k=1)
    dist = np.sqrt(np.maximum(r2[iu], 0.0))
    h = float(np.median(dist))
    if not h > 0:
        raise ValueError(
            "bandwidth='median': the median distance between rows of X is 0 (repeated rows); pass a number"
        )
    return h


def ksd_test(
    model_or_loss: Model | CompiledLoss,
    X: Any,
    theta: Any = None,
    *,
    kernel: str = "imq",
    bandwidth: float | str = "median",
    n_bootstrap: int = 1000,
    seed: int = 0,
    fit_fraction: float | None = None,
    c: float = 1.0,
    beta: float = -0.5,
    block_size: int = DEFAULT_BLOCK,
    bootstrap_dtype: str = "float32",
    fit_options: dict[str, Any] | None = None,
) -> KSDResult:
    """Test "the rows of X are draws from the model at θ" with the kernel Stein discrepancy.

    Parameters
    ----------
    model_or_loss
        A `Model` on ℝᵈ (compiled here with the numba backend) or a `CompiledLoss` (any backend: a CUDA loss
        computes the score on the GPU with its score kernel; the pair sums run on the host).
    X
        Data of shape (n, d), n ≥ 2 (n ≥ 2 after the split with fit_fraction).
    theta
        The parameters tested, shape (P,), or a `FitResult` (its θ̂). Testing θ̂ fitted on the same rows is
        biased towards accepting (the fit has adapted to these rows, so the test is conservative): prefer
        `fit_fraction`. None only together with fit_fraction.
    kernel, c, beta, bandwidth
        "imq" (default; k = (c² + ‖x−y‖²/h²)^β, β ∈ (−1, 0) — Gorham & Mackey's kernel, whose KSD detects
        non-convergence, unlike light-tailed kernels in d ≥ 3) or "gaussian" (k = exp(−‖x−y‖²/(2h²))).
        bandwidth h: a positive number or "median" (the median distance between rows; see `median_bandwidth`).
    n_bootstrap, seed
        Wild-bootstrap draws B (≥ 1) and the seed of their Rademacher weights (and of the split).
    fit_fraction
        If given (in (0, 1)): θ is fitted here with `symsm.fit` on that fraction of the rows and the test runs
        on the remaining rows, which the fit has not seen; the result's ``fit`` holds the fit. The rows fitted
        are the first round(fit_fraction·n) entries of ``numpy.random.default_rng(seed).permutation(n)``, the
        others are tested (both in their original order). theta must then be None.
    block_size
        Rows per block of the pair sums (memory O(block_size²)).
    bootstrap_dtype
        "float32" (default, twice as fast) or "float64" for the bootstrap matrix products.
    fit_options
        Keyword arguments for `symsm.fit` when fit_fraction is given.
    """
    start = time.perf_counter()
    loss = _as_loss(model_or_loss)
    model = loss.model
    if model.domain != "real":
        raise NotImplementedError(
            f"ksd_test: model {model.name!r} has domain {model.domain!r}; only models on ℝᵈ are supported yet. "
            "On a bounded domain the Stein identity E[sᵀg + ∇·g] = 0 needs g to vanish on the boundary, i.e. a "
            "Stein operator with a weight (as in generalized score matching), which is not implemented"
        )
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    n_bootstrap = _check_int(n_bootstrap, "n_bootstrap", 1)
    block_size = _check_int(block_size, "block_size", 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if bootstrap_dtype not in ("float32", "float64"):
        raise ValueError(f"bootstrap_dtype must be 'float32' or 'float64', got {bootstrap_dtype!r}")
    if kernel == "imq":
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0):
            raise ValueError(f"c must be a positive number, got {c!r}")
        if not (isinstance(beta, (int, float)) and -1 < beta < 0):
            raise ValueError(f"beta must be in (−1, 0) for the IMQ kernel, got {beta!r}")
    data = as_data(model, X)
    fitted: FitResult | None = None
    n_fit = 0
    if fit_fraction is not None:
        if theta is not None:
            raise ValueError("theta must be None when fit_fraction is given: θ is fitted on the fit_fraction rows")
        if not (isinstance(fit_fraction, (int, float)) and 0 < fit_fraction < 1):
            raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction!r}")
        perm = np.random.default_rng(seed).permutation(data.shape[0])
        n_fit = round(fit_fraction * data.shape[0])
        if n_fit < 1 or data.shape[0] - n_fit < 2:
            raise ValueError(
                f"fit_fraction={fit_fraction} of n = {data.shape[0]} rows leaves {n_fit} rows to fit and "
                f"{data.shape[0] - n_fit} to test; need ≥ 1 and ≥ 2"
            )
        fitted = fit(loss, data[np.sort(perm[:n_fit])], **(fit_options or {}))
        data = np.ascontiguousarray(data[np.sort(perm[n_fit:])])
        th = fitted.theta
    elif theta is None:
        raise ValueError("theta is required (a parameter vector or a FitResult) unless fit_fraction is given")
    elif isinstance(theta, FitResult):
        if list(theta.param_names) != list(model.param_names):
            raise ValueError(
                f"theta: the FitResult is for parameters {theta.param_names} (model {theta.model_name!r}), "
                f"not those of model {model.name!r}: {model.param_names}"
            )
        fitted = theta
        th = as_theta(model, theta.theta)
    else:
        th = as_theta(model, theta)
    n, d = data.shape
    if n < 2:
        raise ValueError(f"X: the KSD U-statistic needs at least 2 rows, got {n}")
    scores = np.ascontiguousarray(loss.score(th, data), dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("the model's score is not finite at some rows of X for this theta")
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
        h, rule = median_bandwidth(data, seed), "median heuristic"
    else:
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float, np.floating, np.integer)):
            raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
        h, rule = float(bandwidth), "given"
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"bandwidth must be a positive number or 'median', got {bandwidth!r}")
    kern = Kernel(kernel, h, float(c), float(beta))
    signs = rademacher(n, n_bootstrap, seed)
    stat, boot = ksd_sums(data, scores, kern, signs, block_size=block_size, dtype=np.dtype(bootstrap_dtype))
    norm = 1.0 / (n * (n - 1))
    stat *= norm
    boot *= norm
    p = (1 + int(np.count_nonzero(boot >= stat))) / (1 + n_bootstrap)
    return KSDResult(
        statistic=stat,
        p_value=p,
        kernel=kern,
        bandwidth_rule=rule,
        bootstrap=boot,
        n=n,
        d=d,
        n_fit=n_fit,
        theta=np.asarray(th, dtype=np.float64),
        param_names=list(model.param_names),
        model_name=model.name,
        seed=int(seed),
        seconds=time.perf_counter() - start,
        bootstrap_dtype=bootstrap_dtype,
        fit=fitted,
    )


def rademacher(n: int, n_draws: int, seed: int) -> np.ndarray:
    """The bootstrap's weights: shape (n, n_draws), int8 entries ±1 from numpy.random.default_rng(seed)."""
    w = np.random.default_rng(seed).integers(0, 2, size=(n, n_draws), dtype=np.int8)
    w *= 2
    w -= 1
    return w


def ksd_sums(
    X: np.ndarray,
    S: np.ndarray,
    kernel: Kernel,
    signs: np.ndarray | None,
    *,
    block_size: int = DEFAULT_BLOCK,
    dtype: np.dtype | None = None,
) -> tuple[float, np.ndarray]:
    """(Σ_{i≠j} u(xᵢ, xⱼ), [Σ_{i≠j} wᵢᵦ wⱼᵦ u(xᵢ, xⱼ) for each column β of `signs`]) in one blocked pass.

    X, S: float64 (n, d) rows and their scores; signs: (n, B) ±1 (int8) or None (no bootstrap).
    """
    n, d = X.shape
    dtype = np.dtype(np.float32) if dtype is None else np.dtype(dtype)
    n_draws = 0 if signs is None else signs.shape[1]
    xx = np.einsum("ij,ij->i", X, X)
    sx = np.einsum("ij,ij->i", S, X)
    fused_dots = d <= FUSED_DOTS_MAX_D
    if fused_dots:
        XT, ST = np.ascontiguousarray(X.T), np.ascontiguousarray(S.T)
    else:
        XS = np.ascontiguousarray(np.concatenate([X, S], axis=1))  # [X S]: rows a of the cross product
        SX = np.ascontiguousarray(np.concatenate([S, X], axis=1))  # [S X]: rows b
    starts = list(range(0, n, block_size))
    b = min(block_size, n)
    if not fused_dots:
        gss, gxx, gcr = np.empty((b, b)), np.empty((b, b)), np.empty((b, b))
    u_low = np.empty((b, b), dtype=dtype)
    prod = np.empty((b, n_draws), dtype=dtype)
    rowsum = np.empty(b)
    imq = kernel.name == "imq"
    consts = (imq, kernel.c**2, kernel.beta, 1.0 / kernel.bandwidth**2)
    total = 0.0
    boot = np.zeros(n_draws)
    for ia, a0 in enumerate(starts):
        a1 = min(a0 + block_size, n)
        na = a1 - a0
        w_a = None if signs is None else signs[a0:a1].astype(dtype)
        for b0 in starts[ia:]:
            b1 = min(b0 + block_size, n)
            nb = b1 - b0
            u = u_low[:na, :nb]
            norms = (xx[a0:a1], xx[b0:b1], sx[a0:a1], sx[b0:b1])
            if fused_dots:
                # contiguous column blocks (d × nb, small): a strided block would compile to scalar loops
                cols = (np.ascontiguousarray(XT[:, b0:b1]), np.ascontiguousarray(ST[:, b0:b1]))
                rows = (X[a0:a1], S[a0:a1], *cols)
                run_blocks(_kernel("stein_rows_dots"), na, *rows, *norms, *consts, a0 == b0, u, rowsum[:na])
            else:
                g_ss, g_xx, g_cr = gss[:na, :nb], gxx[:na, :nb], gcr[:na, :nb]
                np.matmul(S[a0:a1], S[b0:b1].T, out=g_ss)
                np.matmul(X[a0:a1], X[b0:b1].T, out=g_xx)
                np.matmul(XS[a0:a1], SX[b0:b1].T, out=g_cr)
                run_blocks(
                    _kernel("stein_rows"), na, g_ss, g_xx, g_cr, *norms, *consts, float(d), a0 == b0, u, rowsum[:na]
                )
            weight = 1.0 if a0 == b0 else 2.0  # u is symmetric: the pair (b, a) is the transpose of (a, b)
            total += weight * float(rowsum[:na].sum())
            if signs is not None and w_a is not None:
                p = prod[:na]
                np.matmul(u, signs[b0:b1].astype(dtype), out=p)
                p *= w_a
                boot += weight * p.sum(axis=0, dtype=np.float64)
    return total, boot


def stein_kernel_matrix(X: Any, S: Any, kernel: Kernel) -> np.ndarray:
    """The full n × n Stein kernel matrix u(xᵢ, xⱼ) (diagonal included), for small n only (inspection, plots)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    S = np.ascontiguousarray(S, dtype=np.float64)
    n, d = X.shape
    if n > 5000:
        raise ValueError(f"stein_kernel_matrix holds n × n floats: n = {n} is too large; ksd_test works in blocks")
    g_ss, g_xx = S @ S.T, X @ X.T
    g_cr = np.concatenate([X, S], axis=1) @ np.concatenate([S, X], axis=1).T
    xx, sx = np.einsum("ij,ij->i", X, X), np.einsum("ij,ij->i", S, X)
    u = np.empty((n, n))
    _kernel("stein_rows")(
        g_ss, g_xx, g_cr, xx, xx, sx, sx, kernel.name == "imq", kernel.c**2, kernel.beta,
        1.0 / kernel.bandwidth**2, float(d), False, u, np.empty(n), 0, n,
    )  # fmt: skip
    return u


def _kernel(name: str) -> Callable[..., None]:
    """A fused elementwise kernel of `_fused` (numba: compiled on first use; GIL released).

    The module is loaded through symsm's verified cache, from a copy of its text there: numba keeps its
    compiled machine code next to the module it compiles, so it lands in the private cache directory
    (like every generated module's), never in the installed package's folder.
    """
    return getattr(_fused_module(), name)


@cache_function
def _fused_module() -> ModuleType:
    source = resources.files(__package__).joinpath("_fused.py").read_text(encoding="utf-8")

    def copy(key: str) -> str:
        header = f"# generated by symsm {__version__}: a copy of symsm/criticism/_fused.py — do not edit"
        return f"{header}\n# cache-key: {key}\n{source}"

    return load_module("ksd-fused", copy, source=source).module


def _as_loss(model_or_loss: Any) -> CompiledLoss:
    if isinstance(model_or_loss, CompiledLoss):
        return model_or_loss
    if isinstance(model_or_loss, Model):
        return compile_model(model_or_loss)
    raise TypeError(f"model_or_loss must be a symsm.Model or a CompiledLoss, got {type(model_or_loss).__name__}")


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)
