"""The baselines symsm is measured against, each written the way a user would write it.

* JAX (float64, jit): value_and_grad over θ of J̃ = mean_t Σᵢ [∂ᵢ² log f + ½(∂ᵢ log f)²], from the model's
  hand-written JAX log f (rows of X → log f per row), in two formulations of the Hessian diagonal (the
  runner times both and reports the faster), plus an optional third:
  (a) ``hessian``: per row, the diagonal of ``jax.hessian`` (jacfwd over jacrev) of log f in x; vmap over rows;
  (b) ``jvp``: per row, forward-over-reverse: ``jax.jvp`` of ``jax.grad`` (in x) along each unit vector eᵢ,
      vmapped over i (``jax.linearize`` once per row, then the d tangents); vmap over rows;
  (d) ``hand``: the score and ∂ᵢ² log f derived by hand in jax.numpy (the model's jax_integrand_factory),
      JAX differentiating only in θ — what an expert would write; the strongest JAX baseline;
  (c) ``jvp_batch`` (optional, ``--jax-forms``): the same on a whole block of rows at once: the scores of all
      rows are ``jax.grad`` of Σ_t log f(x_t) in X (rows are independent), ∂ᵢ² log f of every row is its jvp
      along Eᵢ (eᵢ in every row), vmapped over i — no vmap over rows.
  For large N × d² the rows are processed in chunks inside the jitted function (a ``lax.scan`` whose body is
  value_and_grad of the chunk's sum), so no intermediate of d × d (or d tangents × d) per row occupies more
  than ~64 MiB: unchunked, d = 32 and N = 1e6 would need 8 GB per intermediate.
* sympy lambdify + numpy: the plain sympy derivation (sp.diff of log f, the integrand, sp.diff of the integrand
  by every θ_k), lambdified together (cse=True) into one numpy function vectorised over rows, evaluated on row
  chunks (so the P + 1 output columns stay small) and averaged. The derivation runs under a time cap.
* closed forms in numpy live with the models (benchmarks/models.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sympy as sp

__all__ = ["DeriveTimeout", "jax_value_and_grad", "lambdify_value_and_grad"]

JAX_FORMULATIONS = ("hessian", "jvp", "jvp_batch", "hand")
DEFAULT_JAX_FORMULATIONS = ("hessian", "jvp", "hand")
JAX_INTERMEDIATE_BYTES = 1 << 26  # rows per chunk chosen so an N_chunk × d × d float64 array is ≤ 64 MiB


def jax_chunk_rows(n: int, d: int) -> int:
    """Rows per JAX chunk: all rows when the per-row Hessians of all rows fit in the budget."""
    return max(1, min(n, JAX_INTERMEDIATE_BYTES // (8 * d * d)))


def jax_value_and_grad(
    log_f: Callable[[Any, Any], Any],
    d: int,
    n: int,
    formulation: str,
    integrand: Callable[[Any, Any], Any] | None = None,
) -> Callable[[Any, Any], Any]:
    """jit(value_and_grad(J̃)) for data of shape (n, d); `log_f(theta, X)` (rows → log f per row) in jax.numpy;
    `integrand(theta, X)` (rows → the per-row integrand, derivatives by hand) for formulation "hand"."""
    import jax
    import jax.numpy as jnp

    if formulation not in JAX_FORMULATIONS:
        raise ValueError(f"formulation must be one of {JAX_FORMULATIONS}, got {formulation!r}")
    if formulation == "hand":
        if integrand is None:
            raise ValueError("formulation 'hand' needs the model's hand-derived integrand")

        def block_sum(theta, Xb):
            return jnp.sum(integrand(theta, Xb))

    elif formulation == "hessian":

        def row_log_f(theta, xr):
            return log_f(theta, xr[None, :])[0]

        grad_x = jax.grad(row_log_f, argnums=1)
        hess_x = jax.hessian(row_log_f, argnums=1)

        def block_sum(theta, Xb):
            def integrand(xr):
                g = grad_x(theta, xr)
                return jnp.sum(jnp.diagonal(hess_x(theta, xr))) + 0.5 * jnp.sum(g * g)

            return jnp.sum(jax.vmap(integrand)(Xb))

    elif formulation == "jvp":
        units = jnp.eye(d)

        def row_log_f(theta, xr):
            return log_f(theta, xr[None, :])[0]

        def block_sum(theta, Xb):
            def integrand(xr):
                g, tangent = jax.linearize(jax.grad(lambda y: row_log_f(theta, y)), xr)
                diag = jax.vmap(lambda e: tangent(e) @ e)(units)  # eᵢᵀ H eᵢ for each i
                return jnp.sum(diag) + 0.5 * jnp.sum(g * g)

            return jnp.sum(jax.vmap(integrand)(Xb))

    else:
        units = jnp.eye(d)

        def block_sum(theta, Xb):
            def score(Xv):
                return jax.grad(lambda Z: jnp.sum(log_f(theta, Z)))(Xv)

            S, tangent = jax.linearize(score, Xb)  # S: the score of every row

            def diag(e):  # ∂ᵢ² log f of every row: the i-th column of the jvp along Eᵢ = eᵢ in every row
                return tangent(jnp.broadcast_to(e, Xb.shape)) @ e

            return jnp.sum(jax.vmap(diag)(units)) + 0.5 * jnp.sum(S * S)

    chunk = jax_chunk_rows(n, d)
    n_full, rest = divmod(n, chunk)

    if n_full <= 1 and rest == 0:

        def vg(theta, X):
            value, grad = jax.value_and_grad(block_sum)(theta, X)
            return value / n, grad / n

        return jax.jit(vg)

    block_vg = jax.value_and_grad(block_sum)

    def vg_chunked(theta, X):
        blocks = X[: n_full * chunk].reshape(n_full, chunk, d)

        def step(carry, Xb):
            value, grad = block_vg(theta, Xb)
            return (carry[0] + value, carry[1] + grad), None

        init = (jnp.zeros((), X.dtype), jnp.zeros_like(theta))
        (value, grad), _ = jax.lax.scan(step, init, blocks)
        if rest:
            v_rest, g_rest = block_vg(theta, X[n_full * chunk :])
            value, grad = value + v_rest, grad + g_rest
        return value / n, grad / n

    return jax.jit(vg_chunked)


# ---------------------------------------------------------------------- sympy lambdify


class DeriveTimeout(BaseException):
    """The sympy derivation ran past its time cap (a BaseException: sympy's `except Exception` must not
    swallow it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise DeriveTimeout


def lambdify_value_and_grad(model: Any, cap_s: float) -> tuple[Callable[[np.ndarray, np.ndarray], Any], dict]:
    """(value_and_grad(theta, X), timings) from the plain sympy derivation of `model.log_f`.

    Raises `DeriveTimeout` when differentiation + lambdify take longer than `cap_s` seconds (SIGALRM, so it
    must run in the main thread).
    """
    x, theta = list(model.data), list(model.params)
    info: dict[str, float] = {}
    old = signal.signal(signal.SIGALRM, _alarm)
    # repeating every second after the cap: an exception raised inside a gc callback (JAX's) is swallowed
    signal.setitimer(signal.ITIMER_REAL, cap_s, 1.0)
    try:
        t0 = time.perf_counter()
        scores = [sp.diff(model.log_f, xi) for xi in x]
        integrand = sum(sp.diff(s, xi) for s, xi in zip(scores, x, strict=True)) + sum(s**2 for s in scores) / 2
        grads = [sp.diff(integrand, p) for p in theta]
        t1 = time.perf_counter()
        fn = sp.lambdify([*theta, *x], [integrand, *grads], modules="numpy", cse=True)
        t2 = time.perf_counter()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    info["derive_s"] = t1 - t0
    info["lambdify_s"] = t2 - t1
    n_out = len(theta) + 1
    chunk_rows = max(1024, min(1 << 14, (1 << 24) // n_out))  # columns of ≤ 128 KiB: temporaries stay in cache
    info["chunk_rows"] = chunk_rows

    def value_and_grad(th: np.ndarray, X: np.ndarray) -> tuple[float, np.ndarray]:
        n = X.shape[0]
        totals = np.zeros(n_out)
        th_args = [float(v) for v in th]
        for start in range(0, n, chunk_rows):
            cols = [np.ascontiguousarray(X[start : start + chunk_rows, j]) for j in range(X.shape[1])]
            rows = cols[0].shape[0]
            out = fn(*th_args, *cols)
            for k, v in enumerate(out):
                totals[k] += float(np.sum(v)) if np.ndim(v) else float(v) * rows  # constants come back as scalars
        return totals[0] / n, totals[1:] / n

    return value_and_grad, info
