"""Evaluation and fitting on data larger than one machine: `dask.array` arrays chunked along rows.

Every quantity symsm needs from the data is a mean over rows, so each chunk of rows computes, on the worker
that holds it and with the compiled kernels, its **partial sums** — the row count n_k and n_k times the
chunk's means (J̃, ∇J̃; A, b, c of a quadratic objective; the exact θ-Hessian) or its count, mean and
centred second moments (the per-sample-gradient covariance V of the sandwich standard errors, the data
moments of the moment-matching shortcut). Only those small arrays travel back (P + 2 numbers per chunk for
`value_and_grad`, O(P²) for the fitting sums — never an N × P matrix); the client combines them in chunk
order, so the result is the in-memory mean up to rounding, and the same bits from run to run whichever
worker computed which chunk. Means are combined as Σ n_k·mean_k / Σ n_k, so chunks of unequal size (or empty
ones) combine exactly; moments are combined with the pairwise update of Chan, Golub & LeVeque (1979).

Moment matching (integrands of degree ≤ 2 in x, `CompiledLoss._reduced`): a chunk's kernel call replaces the
chunk by 2d points with the chunk's own mean and covariance, which reproduce the chunk's mean of J̃ and ∇J̃
exactly; weighted by n_k they combine exactly like any other chunk. So `value_and_grad` simply evaluates the
kernel per chunk (one code path for every model). `symsm.fit` does better for such models: one pass gathers
the exact global moments (Chan's combination) and the optimisation then runs on the 2d matching points on
the client, without touching the cluster again; only the covariance V of the standard errors (which needs
fourth moments) and an exact Hessian of a non-quadratic objective take one more pass each.

Workers get the generated code, not a recompilation: the task ships the model (a small pickle) and the
verified text of every generated module it needs with its cache key. A worker writes a text it does not
have into its own cache directory (`SYMSM_CACHE_DIR` of the worker process, checked like any cache file),
imports it once per process (a per-process memo) and each kernel compiles or loads its cached machine code
next to that file, once per worker process. Each task runs the kernels with `threads_per_task()` threads,
so the worker's dask threads and the kernels' threads do not oversubscribe its cores.

Dask is an optional dependency (`pip install "symsm[distributed]"`), imported only when a dask array is
given. With a `distributed.Client` active, passes run on its cluster; without one, on dask's local
scheduler.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends import DEFAULT_BACKEND, backends, get_backend
from ..core import cache
from ..core.arrays import as_data, as_theta

if TYPE_CHECKING:
    from ..model.model import Model
    from .loss import CompiledLoss

__all__ = [
    "exact_hessian",
    "fit_data",
    "gradient_moments",
    "moments",
    "quadratic_form",
    "threads_per_task",
    "value",
    "value_and_grad",
]


def supported_backends() -> tuple[str, ...]:
    """The backends whose kernels a dask worker runs (the registry's `dask`: CPU kernels)."""
    return tuple(b.name for b in backends() if b.dask)


# ---------------------------------------------------------------------------------------------- public API
def value_and_grad(loss: CompiledLoss, theta: Any, X: Any) -> tuple[float, np.ndarray]:
    """(J̃(θ), ∇θJ̃(θ)) over the rows of the dask array X: per-chunk sums on the workers, combined here."""
    th = as_theta(loss.model, theta)
    sums = _combine_sums(_run(loss, "value_and_grad", X, th))
    return float(sums[0]), np.array(sums[1:], dtype=np.float64)


def value(loss: CompiledLoss, theta: Any, X: Any) -> float:
    """J̃(θ) over the rows of the dask array X."""
    th = as_theta(loss.model, theta)
    return float(_combine_sums(_run(loss, "value", X, th))[0])


def quadratic_form(loss: CompiledLoss, X: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, b, c) of a quadratic objective over the rows of the dask array X (Σ n_k A_k / N, ...)."""
    from .accumulate import _require_quadratic

    _require_quadratic(loss)
    P = loss.model.n_params
    parts = _run(loss, "quadratic_form", X, np.zeros(P))
    sums = _combine_sums(parts)
    rows, cols = np.triu_indices(P)
    A = np.empty((P, P))
    A[rows, cols] = sums[: rows.size]
    A[cols, rows] = sums[: rows.size]
    return A, sums[rows.size : rows.size + P].copy(), float(sums[-1])


def exact_hessian(loss: CompiledLoss, theta: Any, X: Any) -> np.ndarray:
    """The mean exact θ-Hessian of the integrand over the rows of the dask array X (P × P): A for a
    quadratic objective, else Σ n_k H_k / N of the generated Hessian kernel (P ≤ HESSIAN_MAX_PARAMS)."""
    from ..ir.fit_kernels import HESSIAN_MAX_PARAMS

    model = loss.model
    th = as_theta(model, theta)
    if loss.derivation.is_quadratic:
        return quadratic_form(loss, X)[0]
    P = model.n_params
    if P > HESSIAN_MAX_PARAMS:
        raise ValueError(
            f"model {model.name!r} has P = {P} > {HESSIAN_MAX_PARAMS} parameters: no exact Hessian kernel is "
            "generated; use central_difference_hessian"
        )
    sums = _combine_sums(_run(loss, "hessian", X, th))
    H = np.empty((P, P))
    rows, cols = np.triu_indices(P)
    H[rows, cols] = sums
    H[cols, rows] = sums
    return H


def gradient_moments(loss: CompiledLoss, theta: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance with divisor N) of the per-sample θ-gradients over the rows of the dask array X.

    Each chunk returns its count, mean and centred second moments (P × P); they are combined exactly
    (Chan et al.) in chunk order.
    """
    th = as_theta(loss.model, theta)
    _, mean, cov = _combine_moments(_run(loss, "gradient_moments", X, th))
    return mean, cov


def moments(loss: CompiledLoss, X: Any) -> tuple[int, np.ndarray, np.ndarray]:
    """(N, mean, covariance with divisor N) of the rows of the dask array X, in the loss's dtype as its
    kernels see them (float64 results); one pass, chunk moments combined exactly (Chan et al.)."""
    return _combine_moments(_run(loss, "moments", X, np.zeros(loss.model.n_params)))


def fit_data(loss: CompiledLoss, X: Any) -> tuple[Any, Any]:
    """(rows, host) for `symsm.fit` on a dask array: `rows` for the optimisation, `host` for the fitting sums.

    For integrands of degree ≤ 2 in x, `rows` are the 2d moment-matching points of the whole array (one pass
    now; every later evaluation of J̃, ∇J̃ and their Hessian is exact on them and stays on the client);
    otherwise `rows` is X itself (one distributed pass per evaluation). `host` is X with known chunk sizes.
    """
    X = _checked_array(loss, X)
    if any(np.isnan(c) for c in X.chunks[0]):
        X = X.copy()
        X.compute_chunk_sizes()  # one pass that only loads the chunks: fit reports N and divides by it
    n, d = int(X.shape[0]), loss.model.dim
    if n == 0:
        raise ValueError(f"X is empty: a dask array of shape (N, {d}) needs N ≥ 1 rows")
    if n > 2 * d and getattr(loss._module, "QUADRATIC_IN_DATA", False):
        from .moments import matching_points

        _, mean, cov = moments(loss, X)
        return matching_points(mean, cov), X
    return X, X


def threads_per_task() -> int | None:
    """How many numba threads a chunk's kernel call may use where it runs (None: leave numba's setting).

    On a `distributed` worker with T threads, T tasks run at once: each gets NUMBA_NUM_THREADS // T threads
    when the worker's environment sets NUMBA_NUM_THREADS (e.g. ``dask worker --nthreads 1`` with
    NUMBA_NUM_THREADS=16 on a 16-core node), else 1 — dask's own convention, like the OMP_NUM_THREADS=1 its
    nanny sets, so a worker uses the cores it was given. In a thread of dask's local threaded scheduler:
    numba's threads divided among the scheduler's threads. In the main thread (the synchronous scheduler,
    or the processes of dask's multiprocessing scheduler, which are not told how many there are): None.
    """
    import numba

    most = int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # set at numba's import
    worker = _current_worker()
    if worker is not None:
        concurrent = max(1, int(worker.state.nthreads))
        env = os.environ.get("NUMBA_NUM_THREADS")
        budget = int(env) if env and env.strip().isdigit() else concurrent
    elif threading.current_thread() is threading.main_thread():
        return None
    else:
        import dask
        import dask.system

        concurrent = max(1, int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT))
        budget = most
    return max(1, min(most, budget // concurrent))


# ---------------------------------------------------------------------------------------------- client side
@dataclass(frozen=True)
class _Shipped:
    """A generated module as it travels to a worker: its cache key and its verified text."""

    key: str
    source: str


@dataclass(frozen=True)
class _Spec:
    """Everything a worker needs to rebuild the loss without deriving or generating anything."""

    model: Model
    loss_class: type[CompiledLoss]  # pickled by reference: the worker imports it, this module need not
    backend: str
    dtype: str
    main: _Shipped
    extra: tuple[tuple[str, _Shipped], ...]  # ("fit" | "hessian" | "moments", module)
    is_quadratic: bool | None


def _shipped(module: ModuleType) -> _Shipped:
    """The key (from the header line the cache requires) and text of a generated module loaded by the cache."""
    source = module.__symsm_source__
    for line in source.split("\n", cache.KEY_HEADER_LINES)[: cache.KEY_HEADER_LINES]:
        if line.startswith(cache.KEY_PREFIX):
            return _Shipped(line[len(cache.KEY_PREFIX) :].strip(), source)
    raise RuntimeError(f"generated module {module.__name__} records no cache key")  # the cache guarantees one


def _spec(loss: CompiledLoss, op: str) -> _Spec:
    from .moments import _module as moments_module

    extra: list[tuple[str, _Shipped]] = []
    is_quadratic = None
    if op in ("quadratic_form", "gradient_moments"):
        extra.append(("fit", _shipped(loss.fit_module)))
        is_quadratic = bool(loss.derivation.is_quadratic)
    elif op == "hessian":
        extra.append(("hessian", _shipped(loss.hessian_module)))
        is_quadratic = bool(loss.derivation.is_quadratic)
    quadratic_in_data = bool(getattr(loss._module, "QUADRATIC_IN_DATA", False))
    if op == "moments" or (op in ("value", "value_and_grad") and quadratic_in_data):
        extra.append(("moments", _shipped(moments_module(loss.model.dim, np.dtype(loss.dtype)))))
    return _Spec(
        model=loss.model,
        loss_class=type(loss),
        backend=loss.backend,
        dtype=np.dtype(loss.dtype).name,
        main=_Shipped(loss.key, loss.source),
        extra=tuple(extra),
        is_quadratic=is_quadratic,
    )


def _checked_array(loss: CompiledLoss, X: Any) -> Any:
    """X as a 2-D dask array of d columns in one column chunk, with a real dtype; else a clear error."""
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise ImportError(
            'X is a dask collection but dask.array cannot be imported; install "symsm[distributed]"'
        ) from exc
    model = loss.model
    d = model.dim
    expected = f"(N, {d}) with columns [{', '.join(model.data_names)}]"
    if not isinstance(X, da.Array):
        raise TypeError(f"X is a dask collection of type {type(X).__name__}; symsm needs a dask.array.Array {expected}")
    backend = getattr(loss, "backend", "?")
    if not get_backend(backend).dask:
        raise ValueError(
            f"X is a dask array: distributed evaluation runs the CPU kernels on the workers (backends "
            f"{supported_backends()}), not backend {backend!r}; compile the model with backend={DEFAULT_BACKEND!r}"
        )
    objective = getattr(loss, "objective", "exact")
    if objective != "exact":
        raise NotImplementedError(f"distributed evaluation supports objective='exact' only, not {objective!r}")
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D dask array of shape {expected}, got shape {X.shape}")
    if X.shape[1] != d:
        raise ValueError(f"X must have shape {expected}, got {X.shape[1]} columns")
    if len(X.chunks[1]) != 1:
        raise ValueError(
            f"X is a dask array chunked along its columns (column chunks {X.chunks[1]}): each chunk must hold whole "
            "rows of all d coordinates; rechunk with X.rechunk({1: -1}) (or chunks=(rows, -1) when creating it)"
        )
    kind = X.dtype.kind
    if kind not in "iuf" or (kind == "f" and X.dtype.itemsize > 8):
        raise ValueError(f"X must hold real numbers of at most 64 bits (shape {expected}), got dtype {X.dtype}")
    if not np.isnan(X.shape[0]) and X.shape[0] == 0:
        raise ValueError(f"X is empty: shape {expected} needs N ≥ 1 rows")
    return X


def _run(loss: CompiledLoss, op: str, X: Any, theta: np.ndarray) -> list[Any]:
    """One pass over X: the per-chunk results of `op`, in chunk order."""
    import dask

    X = _checked_array(loss, X)
    spec = dask.delayed(_spec(loss, op), pure=False)  # one node of the graph: each worker fetches it once
    starts = _chunk_starts(X.chunks[0])
    blocks = X.to_delayed(optimize_graph=True).ravel()
    task = dask.delayed(_chunk_task, pure=True)
    parts = [task(spec, op, theta, i, starts[i], block) for i, block in enumerate(blocks)]
    try:
        (results,) = dask.compute(parts)
    except (ValueError, TypeError, ArithmeticError):
        raise
    except Exception as exc:  # a lost worker (KilledWorker), a closed connection, ...: say that nothing was used
        exc.add_note(
            f"symsm: the distributed pass ({op} over {len(parts)} chunks of X) did not complete; no partial "
            "result was used"
        )
        raise
    if sum(int(r[0]) for r in results) == 0:
        raise ValueError(f"X is empty: every chunk of the dask array has 0 rows (shape (N, {loss.model.dim}))")
    return list(results)


def _chunk_starts(row_chunks: Sequence[float]) -> list[int | None]:
    """The first row of each chunk (None from the first chunk of unknown size on), for error messages."""
    starts: list[int | None] = []
    at: int | None = 0
    for size in row_chunks:
        starts.append(at)
        at = None if at is None or np.isnan(size) else at + int(size)
    return starts


def _combine_sums(parts: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Σ_k (n_k · mean_k) / Σ_k n_k, summed in chunk order (deterministic)."""
    n = 0
    total: np.ndarray | None = None
    for count, sums in parts:
        n += int(count)
        total = np.array(sums, dtype=np.float64) if total is None else total + sums
    assert total is not None and n > 0
    return total / n


def _combine_moments(parts: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> tuple[int, np.ndarray, np.ndarray]:
    """(N, mean, covariance with divisor N) from per-chunk (n_k, mean_k, M2_k), M2 = Σ (v − mean)(v − mean)ᵀ.

    Chan, Golub & LeVeque's pairwise update, applied in chunk order: exact in exact arithmetic, and stable
    (no Σvvᵀ − N m mᵀ cancellation across chunks)."""
    n = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None
    for count, mean_k, m2_k in parts:
        count = int(count)
        if count == 0:
            continue
        if mean is None or m2 is None:
            n, mean, m2 = count, np.array(mean_k, dtype=np.float64), np.array(m2_k, dtype=np.float64)
            continue
        total = n + count
        delta = mean_k - mean
        mean = mean + delta * (count / total)
        m2 = m2 + m2_k + np.outer(delta, delta) * (n * count / total)
        n = total
    assert mean is not None and m2 is not None and n > 0
    cov = m2 / n
    return n, mean, (cov + cov.T) / 2


# ---------------------------------------------------------------------------------------------- worker side
_worker_lock = threading.Lock()
_worker_modules: dict[str, ModuleType] = {}
_worker_losses: dict[str, CompiledLoss] = {}


def _current_worker() -> Any:
    try:
        from distributed import get_worker
    except ImportError:
        return None
    try:
        return get_worker()
    except ValueError:  # not running inside a distributed worker
        return None


def _module(shipped: _Shipped) -> ModuleType:
    """The module for a shipped text, loaded once per process: from this process's cache directory if a
    verified file for its key is there, else written there from the shipped text (never regenerated)."""
    module = _worker_modules.get(shipped.key)
    if module is None:
        module, _, _ = cache.load_or_generate(shipped.key, lambda: shipped.source)
        _worker_modules[shipped.key] = module
    return module


def _worker_loss(spec: _Spec) -> CompiledLoss:
    """The loss of `spec` in this process, built once (per-process memo) from the shipped modules."""
    with _worker_lock:
        loss = _worker_losses.get(spec.main.key)
        if loss is None:
            module = _module(spec.main)
            loss = spec.loss_class(
                spec.model,
                backend=spec.backend,
                dtype=np.dtype(spec.dtype),
                key=spec.main.key,
                path=cache.module_path(spec.main.key),
                source=spec.main.source,
                module=module,
            )
            _worker_losses[spec.main.key] = loss
        for kind, shipped in spec.extra:
            module = _module(shipped)  # "moments": found in memory by symsm.runtime.moments on its first use
            if kind in ("fit", "hessian"):
                setattr(loss, f"{kind}_module", module)  # cached_property: the shipped module is the one used
        if spec.is_quadratic is not None and "derivation" not in loss.__dict__:
            from ..derive.derivation import Derivation

            derivation = Derivation(spec.model)
            derivation.is_quadratic = spec.is_quadratic  # decided on the client; nothing is derived here
            loss.derivation = derivation
    return loss


def _chunk_task(spec: _Spec, op: str, theta: np.ndarray, index: int, start: int | None, block: Any) -> tuple:
    """One chunk's contribution to `op`: (n, n · means) or (n, mean, M2), computed with the compiled kernels."""
    block = np.asarray(block)
    n = int(block.shape[0])
    if n == 0:
        return _empty(spec, op)
    loss = _worker_loss(spec)
    try:
        return _with_threads(lambda: _evaluate(loss, op, theta, block, n))
    except ValueError as exc:
        where = f"rows {start}..{start + n - 1}" if start is not None else f"{n} rows"
        raise ValueError(
            f"{exc} — in chunk {index} of the dask array X ({where}; row numbers above are within it)"
        ) from None


def _evaluate(loss: CompiledLoss, op: str, theta: np.ndarray, block: np.ndarray, n: int) -> tuple:
    from . import accumulate

    if op == "value_and_grad":
        value, grad = loss.value_and_grad(theta, block)
        return n, np.concatenate([[value], grad]) * n
    if op == "value":
        return n, np.array([loss.value(theta, block)]) * n
    if op == "quadratic_form":
        A, b, c = accumulate.quadratic_form(loss, block)
        rows, cols = np.triu_indices(A.shape[0])
        return n, np.concatenate([A[rows, cols], b, [c]]) * n
    if op == "hessian":
        H = accumulate.exact_hessian(loss, theta, block)
        rows, cols = np.triu_indices(H.shape[0])
        return n, H[rows, cols] * n
    if op == "gradient_moments":
        mean, cov = accumulate.gradient_moments(loss, theta, block)
        return n, mean, cov * n
    if op == "moments":
        from .moments import moments as data_moments

        mean, cov = data_moments(as_data(loss.model, block, dtype=loss.dtype))
        return n, mean, cov * n
    raise ValueError(f"unknown operation {op!r}")


def _empty(spec: _Spec, op: str) -> tuple:
    P, d = spec.model.n_params, spec.model.dim
    widths = {"value_and_grad": P + 1, "value": 1, "quadratic_form": P * (P + 1) // 2 + P + 1}
    if op in widths:
        return 0, np.zeros(widths[op])
    if op == "hessian":
        return 0, np.zeros(P * (P + 1) // 2)
    k = P if op == "gradient_moments" else d
    return 0, np.zeros(k), np.zeros((k, k))


def _with_threads(call: Callable[[], Any]) -> Any:
    """Run `call` with `threads_per_task()` numba threads (numba's setting is per thread; restored after)."""
    k = threads_per_task()
    if k is None:
        return call()
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(k)
    try:
        return call()
    finally:
        numba.set_num_threads(before)
