"""Validation and conversion of the arrays users pass in (θ and the data X).

Every error names the argument and the expected shape. Conversions are exact: integers beyond 2**53
and dtypes that would lose precision are refused instead of silently rounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..model.model import Model

_EXACT_INT_LIMIT = 2**53


def as_theta(model: Model, theta: Any, *, name: str = "theta", check_positive: bool = True) -> np.ndarray:
    """θ as a contiguous float64 vector of length P, finite, positive where the model says so."""
    P = model.n_params
    if isinstance(theta, dict):
        raise TypeError(f"{name} must be an array of length {P}; use model.pack({{...}}) to build it from a dict")
    arr = _as_real_array(theta, name, f"({P},)")
    if arr.ndim != 1 or arr.shape[0] != P:
        raise ValueError(
            f"{name} must have shape ({P},) for parameters [{', '.join(model.param_names)}], got shape {arr.shape}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = [model.param_names[k] for k in np.flatnonzero(~np.isfinite(arr))]
        raise ValueError(f"{name} has non-finite values for {', '.join(bad)}")
    if check_positive:
        mask = getattr(model, "positive_mask", None)  # a model written with vectors: no Symbols needed
        if mask is not None:
            bad = [model.param_names[k] for k in np.flatnonzero(mask & (arr <= 0))]
        else:
            bad = [str(p) for p, v in zip(model.params, arr, strict=True) if p.is_positive and v <= 0]
        if bad:
            raise ValueError(f"{name}: parameters declared positive must be > 0: {', '.join(bad)}")
    return arr


def as_data(
    model: Model,
    X: Any,
    *,
    name: str = "X",
    dtype: Any = np.float64,
    check_finite: bool = True,
    check_manifold: bool = True,
) -> np.ndarray:
    """X as a C-contiguous (N, d) array of `dtype` with N ≥ 1 and finite values, inside the model's domain
    (no negative entries for domain "nonnegative").

    `check_finite=False` leaves the finiteness to the caller: for a kernel that checks it in its own pass
    over X (symsm/backends/llvm/native.py, `SumKernel`), the caller then reports with `check_data_finite`;
    `check_manifold=False` the same for the rows of the sphere or the simplex (a compiled pass that tests them
    in one read, symsm/backends/llvm/domaincheck.py)."""
    d = model.dim
    expected = f"(N, {d}) with columns [{', '.join(model.data_names)}]"
    arr = _as_real_array(X, name, expected)
    if arr.ndim != 2:
        hint = " (for one coordinate use X.reshape(-1, 1))" if arr.ndim == 1 and d == 1 else ""
        raise ValueError(f"{name} must be a 2-D array of shape {expected}, got shape {arr.shape}{hint}")
    if arr.shape[1] != d:
        raise ValueError(f"{name} must have shape {expected}, got {arr.shape[1]} columns")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {expected} needs N ≥ 1 rows")
    # float64 data into a float32 kernel is the user's explicit choice of precision (compile(dtype=...)).
    arr = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
    if check_finite:
        check_data_finite(model, arr, name=name)
    domain = getattr(model, "domain", "real")
    if domain == "nonnegative":
        first = _first_negative(arr)
        if first is not None:
            row, col = divmod(first, d)
            n_bad = int(np.count_nonzero(arr < 0))
            raise ValueError(
                f"{name} has values outside the model's domain [0, ∞)^{d} (domain='nonnegative'; {n_bad} negative "
                f"in all); the first is at row {row}, column {col} ({model.data_names[col]}): {arr[row, col]}"
            )
    elif domain == "box":
        _check_box(model, arr, name)
    elif domain in ("sphere", "simplex") and check_manifold:
        _check_manifold_rows(model, arr, name)
    return arr


def _check_manifold_rows(model: Model, arr: np.ndarray, name: str) -> None:
    """Rows on the unit sphere (‖x‖ = 1) or the simplex (x ≥ 0, Σ x = 1; > 0 where the method needs it),
    to √ε of the data's dtype (the objectives hold for unit norm exactly; √ε admits data normalised in that
    precision and refuses data that were not). Chunked (no N × d temporaries); the squared norms and the sums
    are one matrix-vector product or one fused reduction per chunk, the full report only for a bad chunk."""
    tol = float(np.sqrt(np.finfo(arr.dtype).eps))
    d = arr.shape[1]
    ones = np.ones(d, dtype=arr.dtype)
    positive = needs_positive(model)
    # alr with a score polynomial in u takes zeros in all but the last part (Geometry.zeros_allowed; asked only
    # when a zero turns up: it differentiates log f)
    last_only = False
    step = max(1, _FINITE_CHUNK // d)
    for start in range(0, arr.shape[0], step):
        chunk = arr[start : start + step]
        if model.domain == "sphere":
            sq = np.einsum("ij,ij->i", chunk, chunk)
            if np.max(np.abs(sq - 1)) <= tol:  # |‖x‖² − 1| ≤ tol ⇒ |‖x‖ − 1| ≤ tol / (1 + ‖x‖) < tol
                continue
            norms = np.sqrt(sq.astype(np.float64))
            bad = np.flatnonzero(np.abs(norms - 1.0) > tol)
            if bad.size:
                raise ValueError(
                    f"{name} has rows off the unit sphere (domain='sphere': every row must have norm 1 to within "
                    f"{tol:.1e}); the first is row {start + int(bad[0])}, with norm {float(norms[bad[0]])!r} — divide "
                    "each row by its norm"
                )
            continue
        low = np.min(chunk)
        geometry = model.geometry if positive else None  # (positive: a simplex; a sphere's geometry is not needed)
        if geometry is not None and low == 0 and not last_only and geometry.transform == "alr":
            last_only = geometry.zeros_allowed()
        if low < 0 or (positive and low == 0 and not (last_only and np.min(chunk[:, -1]) > 0)):
            bad_mask = chunk <= 0 if positive else chunk < 0
            if last_only:
                bad_mask = chunk < 0
                bad_mask[:, -1] |= chunk[:, -1] == 0
            flat = bad_mask.reshape(-1)
            row, col = divmod(int(np.argmax(flat)), d)
            if last_only:
                need = ">= 0, and the last part > 0 (alr divides by it)"
            elif positive:
                need = "> 0 (alr and the unweighted sqrt map take logs or divide by them"
                need += "; alr takes zeros in all but the last part when its score is a polynomial in u)"
            else:
                need = ">= 0"
            raise ValueError(
                f"{name} has a row outside the simplex (domain='simplex' needs entries {need}); the first is row "
                f"{start + row}, column {col} ({model.data_names[col]}): {float(chunk[row, col])!r}"
            )
        sums = chunk @ ones
        if np.max(np.abs(sums - 1)) > tol:
            bad = np.flatnonzero(np.abs(sums.astype(np.float64) - 1.0) > tol)
            raise ValueError(
                f"{name} has rows off the simplex (domain='simplex': every row must sum to 1 to within {tol:.1e}); "
                f"the first is row {start + int(bad[0])}, with sum {float(sums[bad[0]])!r} — divide each row by its "
                "sum"
            )


def needs_positive(model: Model) -> bool:
    """Whether the model's simplex rows need entries > 0 rather than ≥ 0 (alr and the unweighted sqrt map take
    logs of them or divide by them)."""
    if model.domain != "simplex":  # (a structured model builds its geometry only when asked: not for this)
        return False
    geometry = model.geometry
    return geometry is not None and (geometry.transform == "alr" or geometry.weight_name == "ones")


def _check_box(model: Model, arr: np.ndarray, name: str) -> None:
    """Every row inside the model's box lower ≤ x ≤ upper, else a ValueError naming the first offending row,
    column and bound (chunked over rows, so no N × d temporary unless there is one to report)."""
    box = model.box
    assert box is not None  # domain "box" always has its bounds
    lower, upper = box.arrays()
    lower, upper = lower.astype(arr.dtype), upper.astype(arr.dtype)  # bounds as the data's dtype compare them
    rows_per_chunk = max(1, _FINITE_CHUNK // max(1, arr.shape[1]))
    highest_lower, lowest_upper = lower.max(), upper.min()
    for start in range(0, arr.shape[0], rows_per_chunk):
        chunk = arr[start : start + rows_per_chunk]
        flat = chunk.reshape(-1)
        # the whole chunk inside [max lower, min upper] (two contiguous reductions) settles it at once for a box
        # with the same interval on every coordinate; otherwise one boolean test per entry
        if np.minimum.reduce(flat) >= highest_lower and np.maximum.reduce(flat) <= lowest_upper:
            continue
        outside = (chunk < lower) | (chunk > upper)
        if not outside.any():
            continue
        row, col = np.argwhere(outside)[0]
        n_bad = int(np.count_nonzero((arr < lower) | (arr > upper)))
        value = chunk[row, col]
        side = (
            f"below its lower bound {lower[col]:g}" if value < lower[col] else f"above its upper bound {upper[col]:g}"
        )
        raise ValueError(
            f"{name} has values outside the model's box domain {box.describe(model.data_names)} ({n_bad} in "
            f"all); the first is at row {start + row}, column {col} ({model.data_names[col]}): {value}, {side}"
        )


def check_data_finite(model: Model, arr: np.ndarray, *, name: str = "X") -> None:
    """ValueError naming the first non-finite value of the (N, d) array `arr` (C-contiguous), if it has one."""
    first = first_non_finite(arr)
    if first is not None:
        row, col = first
        n_bad = sum(int(np.count_nonzero(~np.isfinite(arr[lo : lo + 4096]))) for lo in range(0, arr.shape[0], 4096))
        raise ValueError(
            f"{name} has non-finite values ({n_bad} in all); the first is at row {row}, "
            f"column {col} ({model.data_names[col]}): {arr[row, col]}"
        )


def first_non_finite(arr: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first infinity or NaN of a C-contiguous 2-D array, or None (chunked, see
    `_all_finite`: no N × d temporary)."""
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _FINITE_CHUNK):
        chunk = flat[start : start + _FINITE_CHUNK]
        if not _all_finite(chunk):
            row, col = divmod(start + int(np.argmin(np.isfinite(chunk))), arr.shape[1])
            return row, col
    return None


def _first_negative(arr: np.ndarray) -> int | None:
    """Flat index of the first negative entry of a C-contiguous array, or None (chunked: no N × d temporary
    unless there is one to report)."""
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _FINITE_CHUNK):
        chunk = flat[start : start + _FINITE_CHUNK]
        if np.minimum.reduce(chunk) < 0:
            return start + int(np.argmax(chunk < 0))
    return None


_FINITE_CHUNK = 1 << 16  # elements per check: the temporary boolean array stays in cache, whatever N is


def _all_finite(arr: np.ndarray) -> bool:
    """np.isfinite(arr).all() without an array-sized temporary (a sum is finite iff every term is, except
    for overflow, which falls back to the exact elementwise check). The sum is in the array's own dtype:
    float32 data summed in float64 costs a conversion per element, twice the time of reading them."""
    flat = arr.reshape(-1)
    for start in range(0, flat.size, _FINITE_CHUNK):
        chunk = flat[start : start + _FINITE_CHUNK]
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(chunk)):
                continue
        if not np.isfinite(chunk).all():
            return False
    return True


def _as_real_array(value: Any, name: str, expected: str) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__") and not hasattr(value, "__array__"):
        raise TypeError(f"{name} is a GPU array; the CPU backends need a host array of shape {expected}")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of shape {expected}: {exc}") from None
    kind = arr.dtype.kind
    if kind == "b":
        raise ValueError(f"{name} must hold real numbers, got booleans (shape {expected} expected)")
    if kind in "iu":
        if arr.size and (arr.max() > _EXACT_INT_LIMIT or arr.min() < -_EXACT_INT_LIMIT):
            raise ValueError(f"{name} has integers beyond 2**53 that float64 cannot represent exactly")
        return arr
    if kind == "f":
        if arr.dtype.itemsize > 8:
            raise ValueError(
                f"{name} has dtype {arr.dtype}; symsm computes in float64 and will not silently round "
                "extended precision — convert it explicitly"
            )
        return arr
    if kind == "O":
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{name} must hold real numbers (shape {expected}), got dtype {arr.dtype}")
