"""Accumulations over the data that fitting needs, in chunks of rows of bounded size.

The fitting kernels (`symsm.ir.fit_kernels`: the quadratic form of a quadratic objective, per-row
θ-gradients, the mean exact θ-Hessian) live in generated modules of their own, loaded from the cache on
first use, so compiling a loss for evaluation does not pay for them. Everything here is host-side glue:

* per-row outputs are produced in chunks of rows whose block is at most `CHUNK_BYTES`, so memory stays
  bounded whatever N is (never an N × P matrix for the whole data);
* each chunk's block is reduced with BLAS (GᵀG for V; FᵢᵀFᵢ for the A of large quadratic objectives) into
  float64 sums, in a fixed chunk order whose boundaries depend only on N and the block width, so results
  are reproducible run to run;
* the fitting kernels compute in float64 whatever the loss's dtype: solving normal equations or forming a
  covariance in float32 would lose half the digits that matter;
* a variant objective (sliced, denoising: symsm/derive/objectives.py) gets fitting kernels built on the expression
  graph from its own integrand (``value_and_grad`` in float64 and ``grad_rows``), fed the loss's own
  auxiliary draws; its quadratic form (when J̃ is quadratic in θ) comes from P + 1 float64 gradient passes,
  and its Hessian from central differences of the exact gradient;
* a structured-path loss (block programs) gets its per-row gradients and V from its own value_and_grad program
  (`_BlockRowGradients`: each row's accumulator contributions through the epilogue's linear map), not from a
  scalar expansion of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import get_backend
from ..core.arrays import as_data, as_theta
from .loader import load_module

if TYPE_CHECKING:
    from ..backends import Backend
    from .loss import CompiledLoss

__all__ = [
    "CHUNK_BYTES",
    "ROW_GRADIENT_MAX_BYTES",
    "central_difference_hessian",
    "check_row_gradients",
    "exact_hessian",
    "gradient_moments",
    "is_quadratic",
    "is_variant",
    "load_fit_module",
    "per_sample_grad",
    "quadratic_form",
]

CHUNK_BYTES = 16 * 2**20  # a chunk's block of per-row outputs holds at most this many bytes
MIN_CHUNK_ROWS = 256  # ... unless a row alone is wider than CHUNK_BYTES / MIN_CHUNK_ROWS
#: per-row gradients of a structured-path loss: at most this many bytes in their P × P, Q × P and Q × Q matrices
ROW_GRADIENT_MAX_BYTES = 2**30


def load_fit_module(loss: CompiledLoss, kind: str = "fit") -> ModuleType:
    """A generated module of fitting kernels for `loss.model` (CPU, float64), from the cache.

    kind "fit": ``quadratic_rows`` (quadratic objectives) or ``grad_rows``; kind "hessian": the exact
    ``hessian`` kernel (P ≤ HESSIAN_MAX_PARAMS); kind "rows": the fit kernels with the per-row features
    ``quadratic_rows`` whatever the model's size (row-weighted closed forms of models small enough for
    ``quadratic_sums``). Separate modules, so a fit that does not need the exact Hessian never pays for
    deriving and compiling it. The kernels come from the host backend named by the
    loss's backend record (`fit_backend`: the loss's own for a host backend, "llvm" for a device backend —
    the data are on the host here).
    """
    if kind not in ("fit", "hessian", "rows"):
        raise ValueError(f"kind must be 'fit', 'hessian' or 'rows', got {kind!r}")
    if is_variant(loss):
        return _load_objective_fit_module(loss, kind)
    from ..ir.fit_kernels import build_fit_kernels, build_hessian_kernels, quadratic_layout

    model = loss.model
    backend = _fit_backend(loss)
    der = loss.derivation
    layout = None
    if kind != "hessian" and der.is_quadratic:
        layout = "rows" if kind == "rows" else quadratic_layout(model.dim, model.n_params)

    def generate(key: str) -> str:
        kernels = build_fit_kernels(der, layout) if kind != "hessian" else build_hessian_kernels(der)
        return backend.generate(der, kernels, dtype=np.float64, cache_key=key)

    parts = {"model": model.canonical(), "backend": backend.name, "dtype": "float64", "quadratic": layout}
    return load_module(kind, generate, **parts).module


def _fit_backend(loss: CompiledLoss) -> Backend:
    """The host backend that generates the loss's fitting kernels (its record's `fit_backend`)."""
    backend = get_backend(get_backend(loss.backend).fit_backend)
    if backend.where != "host":
        raise ValueError(f"backend {loss.backend!r}: its fit_backend {backend.name!r} does not run on the host")
    return backend


def is_variant(loss: CompiledLoss) -> bool:
    """True for a loss whose objective is not the exact one (sliced, denoising, ...): its fitting kernels are
    built on the expression graph from the objective's integrand, and read its auxiliary draws."""
    spec = getattr(loss, "objective_spec", None)
    return spec is not None and not spec.exact


def is_quadratic(loss: CompiledLoss) -> bool:
    """True when the loss's J̃ is exactly quadratic in θ: every ∂ᵢ log f is affine in θ (an exponential family)
    and the objective keeps that (the exact, sliced and denoising objectives do)."""
    spec = getattr(loss, "objective_spec", None)
    return (spec is None or spec.keeps_quadratic) and loss.derivation.is_quadratic


def _load_objective_fit_module(loss: CompiledLoss, kind: str) -> ModuleType:
    """The fitting kernels of a variant objective: ``value_and_grad`` (float64 sums) and ``grad_rows``, built
    on the expression graph from the same integrand as the loss's kernels (symsm/derive/objectives.py)."""
    from ..ir.fit_kernels import build_objective_fit_kernels

    spec = loss.objective_spec
    assert spec is not None
    if kind == "hessian":
        raise _no_exact_hessian(loss)
    model = loss.model
    backend = _fit_backend(loss)

    def generate(key: str) -> str:
        kernels = build_objective_fit_kernels(model, spec)
        return backend.generate(loss.derivation, kernels, dtype=np.float64, cache_key=key)

    parts = {"model": model.canonical(), "backend": backend.name, "dtype": "float64"}
    return load_module("objective_fit", generate, **parts, objective=spec.name, options=spec.options()).module


def _no_exact_hessian(loss: CompiledLoss) -> ValueError:
    return ValueError(
        f"no exact θ-Hessian kernel is generated for objective {loss.objective!r}: use central differences of its "
        "exact gradient (central_difference_hessian; symsm.fit does so), or A for a quadratic objective"
    )


def _with_draws(loss: CompiledLoss, data: np.ndarray) -> np.ndarray:
    """Host rows (float64) with the loss's auxiliary draws appended — the very draws its own kernels see (in
    its dtype), converted to float64 for the fitting kernels. The rows themselves when there are none."""
    draws = loss.draws(data.shape[0]) if hasattr(loss, "draws") else None
    if draws is None:
        return data
    return np.ascontiguousarray(np.concatenate([data, draws.astype(np.float64)], axis=1))


def _objective_quadratic_form(loss: CompiledLoss, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) of a variant objective that is quadratic in θ, from P + 1 float64 passes of its exact
    value_and_grad kernel: the gradient Aθ + b is affine in θ, so its differences at unit steps are the
    columns of A exactly (up to rounding; no truncation error), and b, c follow at the base point."""
    rows = _with_draws(loss, data)
    module = loss.fit_module
    model = loss.model
    base = np.array([1.0 if p.is_positive else 0.0 for p in model.params])  # inside every parameter's domain

    def value_and_grad(th: np.ndarray) -> tuple[float, np.ndarray]:
        result = np.asarray(module.value_and_grad(th, rows), dtype=np.float64)
        return float(result[0]), result[1:]

    value, grad = value_and_grad(base)
    P = model.n_params
    A = np.empty((P, P))
    for k in range(P):
        step = base.copy()
        step[k] += 1.0
        A[:, k] = value_and_grad(step)[1] - grad
    A = (A + A.T) / 2
    b = grad - A @ base
    c = value - 0.5 * base @ A @ base - b @ base
    return A, b, float(c)


def _chunks(n: int, width: int) -> Iterator[tuple[int, int]]:
    """Row ranges [start, stop) covering 0..n, each with at most CHUNK_BYTES of float64 outputs."""
    rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // (8 * max(1, width)))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def _buffer(n: int, width: int) -> np.ndarray:
    """One chunk's output block, reused for every chunk."""
    rows = min(n, max(MIN_CHUNK_ROWS, CHUNK_BYTES // (8 * max(1, width))))
    return np.empty((rows, width), dtype=np.float64)


def _column_sums(block: np.ndarray) -> np.ndarray:
    """Σ over rows of a (rows, k) block, as one BLAS product with a vector of ones (numpy's own reduction
    along axis 0 of a wide-strided block is several times slower)."""
    return np.ones(block.shape[0]) @ block


def _require_quadratic(loss: CompiledLoss) -> None:
    if not is_quadratic(loss):
        raise ValueError(
            f"model {loss.model.name!r}: the objective is not quadratic in θ (some ∂ᵢ log f is not affine in θ), "
            "so it has no (A, b, c) form; use value_and_grad, or symsm.fit(..., method='lbfgs')"
        )


def quadratic_form(loss: CompiledLoss, X: Any, weights: Any = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) with J̃(θ) = ½θᵀAθ + bᵀθ + c exactly, from one pass over X (A: P × P, symmetric).

    A = mean Σᵢ aᵢaᵢᵀ with a_ik = ∂(∂ᵢ log f)/∂θ_k (mean Σᵢ hᵢ aᵢaᵢᵀ with the weights of a model on
    [0, ∞)ᵈ). Small models: one reduction kernel sums A's upper
    triangle, b and c₀ per row; large ones: per chunk of rows, A += FᵢᵀFᵢ with BLAS on the features.
    With observation weights w (checked by the caller) every mean is Σ w_t(·)/Σ w_t: the features' rows are
    weighted (a model small enough for the reduction kernel gets the features kernel generated on first use,
    benchmarks/WEIGHTED_MANIFOLD.md); the sparse quadratic form, symsm/runtime/sparse.py, is the weighted path on
    ℝᵈ, this one serves the sphere and the simplex.
    """
    _require_quadratic(loss)
    if is_variant(loss):
        if weights is not None:
            raise NotImplementedError("weights= with a sliced or denoising objective's closed form")
        return _objective_quadratic_form(loss, as_data(loss.model, X))
    data = as_data(loss.model, X)
    d, P = loss.model.dim, loss.model.n_params
    module = loss.fit_module
    unused_theta = np.zeros(P)  # the features do not depend on θ; the kernel signature takes it anyway
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and not hasattr(module, "quadratic_rows"):
        module = load_fit_module(loss, "rows")
    if hasattr(module, "quadratic_sums"):
        means = np.asarray(module.quadratic_sums(unused_theta, data), dtype=np.float64)
        A = np.empty((P, P))
        rows, cols = np.triu_indices(P)
        A[rows, cols] = means[: rows.size]
        A[cols, rows] = means[: rows.size]
        return A, means[rows.size : rows.size + P].copy(), float(means[-1])
    # the rows of A's features: d coordinates (d − 1 after alr; d + 1 on the sphere, the last one zᵀF with
    # weight −h), followed by their weights when they have them ([0, ∞)ᵈ, the sphere)
    parts = loss.derivation.quadratic_parts
    assert parts is not None  # _require_quadratic
    d = len(parts.coeffs)
    weighted = parts.weights is not None
    width = d * P + P + 1 + (d if weighted else 0)
    A = np.zeros((P, P))
    b = np.zeros(P)
    c = 0.0
    buf = _buffer(data.shape[0], width)
    for start, stop in _chunks(data.shape[0], width):
        out = buf[: stop - start]
        module.quadratic_rows(unused_theta, data[start:stop], out)
        wt = None if w is None else w[start:stop]
        for i in range(d):
            F = out[:, i * P : (i + 1) * P]
            h = out[:, d * P + P + 1 + i] if weighted else None
            h = wt if h is None else (h if wt is None else h * wt)
            A += F.T @ F if h is None else (F * h[:, None]).T @ F
        sums = _column_sums(out) if wt is None else wt @ out
        b += sums[d * P : d * P + P]
        c += float(sums[d * P + P])
    n = data.shape[0] if w is None else float(w.sum())
    A /= n
    A = (A + A.T) / 2  # exactly symmetric (BLAS may round the two triangles differently)
    return A, b / n, c / n


class _Moments:
    """Mean and covariance (divisor N) of per-sample vectors arriving in blocks.

    Sums are taken about a shift (the first row seen), so a mean far from zero does not cancel digits in
    Σ(g − s)(g − s)ᵀ − N(ḡ − s)(ḡ − s)ᵀ. Each block is shifted in place (it is a reused buffer).
    """

    def __init__(self, P: int) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1 = np.zeros(P)
        self.s2 = np.zeros((P, P))
        self._ones = np.empty(0)

    def add(self, G: np.ndarray) -> None:
        if self.shift is None:
            self.shift = G[0].copy()
        if self._ones.shape[0] < G.shape[0]:
            self._ones = np.ones(G.shape[0])
        G -= self.shift
        self.s1 += self._ones[: G.shape[0]] @ G
        self.s2 += G.T @ G
        self.n += G.shape[0]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.shift is not None
        m = self.s1 / self.n
        cov = self.s2 / self.n - np.outer(m, m)
        return self.shift + m, (cov + cov.T) / 2


def gradient_moments(loss: CompiledLoss, theta: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with divisor N) of the per-sample θ-gradients of the integrand at θ.

    Accumulated chunk by chunk (chunk × P blocks of the grad_rows kernel, multiplied with BLAS); never an
    N × P matrix for the whole data.
    """
    model = loss.model
    th = as_theta(model, theta)
    blocks = _row_gradients(loss, th)
    if blocks is not None:
        return blocks.moments(as_data(model, X))
    data = _with_draws(loss, as_data(model, X))
    P = model.n_params
    moments = _Moments(P)
    module = loss.fit_module
    buf = _buffer(data.shape[0], P)
    for start, stop in _chunks(data.shape[0], P):
        out = buf[: stop - start]
        module.grad_rows(th, data[start:stop], out)
        moments.add(out)
    return moments.result()


def per_sample_grad(loss: CompiledLoss, theta: Any, X: Any) -> np.ndarray:
    """The θ-gradient of the integrand at every row, shape (N, P) (forms the whole matrix: small data)."""
    model = loss.model
    th = as_theta(model, theta)
    blocks = _row_gradients(loss, th)
    if blocks is not None:
        return blocks.gradients(as_data(model, X))
    data = _with_draws(loss, as_data(model, X))
    out = np.empty((data.shape[0], model.n_params))
    loss.fit_module.grad_rows(th, data, out)
    return out


class _BlockRowGradients:
    """Per-row θ-gradients of a structured-path loss, from its value_and_grad block program (float64, the numpy
    executor): the block section gives every row's own contributions a_t to the accumulators (Q of them: e.g. the
    d × d outer products of ∂J̃/∂W = Σ_t a_t b_tᵀ), and the epilogue maps the accumulators' sums to N·∇θJ̃ linearly,
    so the row's gradient is g_t = Jᵀa_t with J (Q × P) the epilogue's matrix, found from its Q unit columns.

    V = cov(g_t) is accumulated a block of rows at a time with BLAS, never N × P: as Jᵀ cov(a_t) J (N·Q² per pass)
    when that is cheaper than cov(Jᵀa_t) (N·(QP + P²)). Memory: P × P (V), Q × P (J), Q × Q; refused beyond
    `ROW_GRADIENT_MAX_BYTES`.
    """

    def __init__(self, loss: CompiledLoss, kernel: Any, theta: np.ndarray) -> None:
        P = loss.model.n_params
        self.loss = loss
        self.kernel = kernel
        _check_memory(loss, kernel)
        env = kernel.prologue(theta)
        self.env = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) else v) for k, v in env.items()}
        Q = sum(int(np.prod(shape, dtype=np.int64)) for _, shape in kernel.accumulators())
        base = kernel.epilogue_grad(self.env, np.zeros(Q))
        J = np.empty((Q, P))
        unit = np.zeros(Q)
        for q in range(Q):
            unit[q] = 1.0
            J[q] = kernel.epilogue_grad(self.env, unit) - base
            unit[q] = 0.0
        probe = np.random.default_rng(0).standard_normal(Q)  # the map must be linear, or g_t is not Jᵀa_t
        expected = probe @ J
        got = kernel.epilogue_grad(self.env, probe)
        scale = np.abs(J).sum(axis=0) + 1.0
        finite = bool(np.isfinite(J).all() and np.isfinite(base).all())  # else θ is outside the domain: NaN rows
        if finite and (np.any(base != 0) or not np.all(np.abs(got - expected) <= 1e-9 * scale)):
            raise ValueError(
                f"model {loss.model.name!r}: the structured gradient's epilogue is not linear in the accumulators, so "
                "it has no per-row gradients; compile with path='graph' for standard errors"
            )
        self.keep = np.flatnonzero(np.any(J != 0, axis=1))  # accumulators that reach ∇θ (not J̃'s own sum)
        self.J = np.ascontiguousarray(J[self.keep])

    def _blocks(self, data: np.ndarray) -> Iterator[np.ndarray]:
        """The accumulators' per-row contributions that reach ∇θ, a chunk of rows at a time (B × Q')."""
        data = _with_draws(self.loss, data)  # a randomised objective's draws: the columns after the data's
        width = self.J.shape[0] * 2 + self.J.shape[1]  # the contributions, their kept columns and G
        for start, stop in _chunks(data.shape[0], width):
            yield self.kernel.accumulator_rows(self.env, data[start:stop])[:, self.keep]

    def gradient_blocks(self, data: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, the per-row gradients of a chunk of rows (B × P)), chunk by chunk."""
        start = 0
        for A in self._blocks(data):
            yield start, A @ self.J
            start += A.shape[0]

    def weighted_sum(self, data: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Σ_t w_t g_t = Jᵀ Σ_t w_t a_t (N·Q operations, not N·Q·P)."""
        total = np.zeros(self.J.shape[0])
        start = 0
        for A in self._blocks(data):
            total += w[start : start + A.shape[0]] @ A
            start += A.shape[0]
        return total @ self.J

    def gradients(self, data: np.ndarray) -> np.ndarray:
        out = np.empty((data.shape[0], self.J.shape[1]))
        for start, G in self.gradient_blocks(data):
            out[start : start + G.shape[0]] = G
        return out

    def moments(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Q, P = self.J.shape
        in_accumulators = Q * Q <= Q * P + P * P
        moments = _Moments(Q if in_accumulators else P)
        for A in self._blocks(data):
            moments.add(A if in_accumulators else A @ self.J)
        mean, cov = moments.result()
        if in_accumulators:
            mean, cov = mean @ self.J, self.J.T @ cov @ self.J
            cov = (cov + cov.T) / 2
        return mean, cov


def _check_memory(loss: CompiledLoss, kernel: Any) -> None:
    P = loss.model.n_params
    Q = sum(int(np.prod(shape, dtype=np.int64)) for _, shape in kernel.accumulators())
    need = 8 * (P * P + Q * P + min(Q, P) ** 2)
    if need > ROW_GRADIENT_MAX_BYTES:
        raise ValueError(
            f"model {loss.model.name!r}: per-row gradients on the structured path need P × P and Q × P float64 "
            f"matrices (P = {P} parameters, Q = {Q} accumulator entries): {need / 2**30:.1f} GiB > the limit of "
            f"{ROW_GRADIENT_MAX_BYTES / 2**30:.0f} GiB (ROW_GRADIENT_MAX_BYTES); no V or standard errors"
        )


def _block_kernel(loss: CompiledLoss) -> Any:
    """The value_and_grad block program of a structured-path loss (its objective's) on the numpy executor in
    float64, as lowered, without the algebraic rewrites of symsm/ir/block_passes.py; None for other losses.
    The rewrites trade products for accumulators (a Gram matrix next to an outer product: ICA's 2d² + d + 1
    accumulator entries instead of d² + d + 1), and here every accumulator entry is a column of the per-row
    gradients, so the rewritten program would cost V's memory for no speed."""
    if "value_and_grad" not in getattr(getattr(loss, "_module", None), "PROGRAMS", {}):
        return None
    from ..backends.blocks_numpy import BlockKernel
    from ..derive.structured import derive_structured
    from ..ir.blocks import build_block_programs

    objective = getattr(loss, "objective_spec", None)
    program = build_block_programs(derive_structured(loss.model, objective), loss.model, rewrite=False)
    return BlockKernel(program["value_and_grad"].text(), np.float64)


def _row_gradients(loss: CompiledLoss, theta: np.ndarray) -> _BlockRowGradients | None:
    """The block route to per-row gradients for a structured-path loss; None otherwise."""
    kernel = _block_kernel(loss)
    return None if kernel is None else _BlockRowGradients(loss, kernel, theta)


def check_row_gradients(loss: CompiledLoss) -> None:
    """Raise `ValueError` when a structured-path loss's per-row gradients (V) would pass `ROW_GRADIENT_MAX_BYTES`
    (before a fit spends 2P gradient passes on a Hessian it could not use)."""
    kernel = _block_kernel(loss)
    if kernel is not None:
        _check_memory(loss, kernel)


def exact_hessian(loss: CompiledLoss, theta: Any, X: Any) -> np.ndarray:
    """The mean over rows of the exact θ-Hessian of the integrand (P × P).

    A for a quadratic objective; otherwise the generated kernel of symbolic second derivatives, which
    exists for P ≤ `symsm.ir.fit_kernels.HESSIAN_MAX_PARAMS` (a clear error otherwise).
    """
    model = loss.model
    th = as_theta(model, theta)
    if is_quadratic(loss):
        return quadratic_form(loss, X)[0]
    if is_variant(loss):
        raise _no_exact_hessian(loss)
    from ..ir.fit_kernels import HESSIAN_MAX_PARAMS

    if model.n_params > HESSIAN_MAX_PARAMS:
        raise ValueError(
            f"model {model.name!r} has P = {model.n_params} > {HESSIAN_MAX_PARAMS} parameters: no exact Hessian "
            "kernel is generated; use central_difference_hessian"
        )
    module = loss.hessian_module
    data = as_data(model, X)
    upper = np.asarray(module.hessian(th, data), dtype=np.float64)
    P = model.n_params
    H = np.empty((P, P))
    rows, cols = np.triu_indices(P)
    H[rows, cols] = upper
    H[cols, rows] = upper
    return H


def central_difference_hessian(loss: CompiledLoss, theta: Any, X: Any) -> np.ndarray:
    """The mean θ-Hessian by central differences of the exact gradient (2P passes over X), symmetrised.

    Steps h_k = ε^(1/3)·max(1, |θ_k|) balance truncation (O(h²)) and rounding (O(ε/h)) errors; a positive
    parameter's step is capped at θ_k/2 so both evaluations stay inside its domain. X goes to the loss's
    own `value_and_grad` as given (any backend, device arrays included).
    """
    model = loss.model
    th = as_theta(model, theta)
    P = model.n_params
    H = np.empty((P, P))
    base = np.finfo(loss.dtype).eps ** (1 / 3)  # the gradient's own precision
    for k, p in enumerate(model.params):
        h = base * max(1.0, abs(th[k]))
        if p.is_positive:
            h = min(h, th[k] / 2)
        up, down = th.copy(), th.copy()
        up[k] += h
        down[k] -= h
        h_eff = up[k] - down[k]  # the step actually taken, after rounding of θ ± h
        H[:, k] = (loss.value_and_grad(up, X)[1] - loss.value_and_grad(down, X)[1]) / h_eff
    return (H + H.T) / 2
