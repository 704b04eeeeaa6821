"""Box domains: per-coordinate bounds aᵢ ≤ xᵢ ≤ bᵢ, either of them possibly infinite.

``Model(domain=symsm.Box(lower, upper))`` fits by generalized score matching on the box (Hyvärinen 2007; Yu,
Drton & Shojaie 2019, 2022, the interval domains of the R package genscore): coordinate i is weighted by
hᵢ = h(distᵢ(xᵢ)), the model's weight h applied to the distance to the nearer finite end of its interval,

    distᵢ(xᵢ) = min(xᵢ − aᵢ, bᵢ − xᵢ)   (both ends finite),   xᵢ − aᵢ  (bᵢ = ∞),   bᵢ − xᵢ  (aᵢ = −∞),

and a coordinate unbounded on both sides has hᵢ = 1 (no boundary: the plain score-matching term). With
h(0) = 0 the boundary terms hᵢ p ∂ᵢ log f of the integration by parts vanish at every finite end; h′ of a
two-sided interval is taken piecewise (the kink of min at the midpoint is a set of measure zero).
``domain="nonnegative"`` is the box [0, ∞)ᵈ (`Box.nonnegative`), with the cache keys it always had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy as sp

from ..core.errors import ModelError

__all__ = ["Box"]


class Box:
    """Per-coordinate bounds ``lower ≤ x ≤ upper`` for ``Model(domain=Box(lower, upper))``.

    lower, upper
        A number (the same bound for every coordinate) or a sequence of d numbers; ``-math.inf`` / ``math.inf``
        leave a side open. Every lower bound must be below its upper bound.

    A Box made with scalars is resolved against the model's dimension when the model is built (``resolve``);
    ``model.box`` is the resolved one, with d bounds on each side.
    """

    __slots__ = ("_lower", "_upper")

    def __init__(self, lower: Any = 0.0, upper: Any = math.inf) -> None:
        self._lower = _as_bounds(lower, "lower")
        self._upper = _as_bounds(upper, "upper")
        if isinstance(self._lower, tuple) and isinstance(self._upper, tuple) and len(self._lower) != len(self._upper):
            raise ModelError(
                f"Box: lower has {len(self._lower)} bounds and upper {len(self._upper)}; give one per coordinate"
            )
        _check_order(self._lower, self._upper)

    @classmethod
    def nonnegative(cls, d: int) -> Box:
        """[0, ∞)ᵈ, the domain "nonnegative"."""
        return cls((0.0,) * d, (math.inf,) * d)

    @property
    def lower(self) -> tuple[float, ...] | float:
        return self._lower

    @property
    def upper(self) -> tuple[float, ...] | float:
        return self._upper

    @property
    def resolved(self) -> bool:
        return isinstance(self._lower, tuple) and isinstance(self._upper, tuple)

    def resolve(self, d: int) -> Box:
        """This box with d bounds on each side (scalars broadcast); a sequence of another length is refused."""
        sides = []
        for side, bounds in (("lower", self._lower), ("upper", self._upper)):
            if isinstance(bounds, tuple):
                if len(bounds) != d:
                    raise ModelError(f"Box: {side} has {len(bounds)} bounds but the model has d = {d} coordinates")
                sides.append(bounds)
            else:
                sides.append((bounds,) * d)
        return Box(*sides)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) as float64 arrays of length d (resolved boxes only)."""
        if not self.resolved:
            raise ValueError("Box.arrays: resolve the box against the model's dimension first")
        return np.asarray(self._lower, dtype=np.float64), np.asarray(self._upper, dtype=np.float64)

    def distance(self, i: int, x: sp.Expr) -> sp.Expr | None:
        """distᵢ(x) to the nearer finite end of coordinate i's interval, exactly (None: both ends infinite)."""
        a, b = self._side(self._lower, i), self._side(self._upper, i)
        below = None if math.isinf(a) else x - _number(a)
        above = None if math.isinf(b) else _number(b) - x
        if below is None or above is None:
            return below if above is None else above
        return sp.Min(below, above)

    def canonical(self) -> list[str]:
        """The strings that identify the bounds in a model's cache key (exact: repr of each float)."""
        return ["box", repr(self._lower), repr(self._upper)]

    def describe(self, names: Sequence[str] | None = None) -> str:
        """The box as text: [a, b]^d when every coordinate has the same interval, else one interval each."""
        if not self.resolved:
            return f"Box({self._lower!r}, {self._upper!r})"
        intervals = [_interval(a, b) for a, b in zip(self._lower, self._upper, strict=True)]  # type: ignore[arg-type]
        if len(set(intervals)) == 1:
            return f"{intervals[0]}^{len(intervals)}"
        labels = names or [f"x{i}" for i in range(len(intervals))]
        return " × ".join(f"{n} ∈ {iv}" for n, iv in zip(labels, intervals, strict=True))

    def _side(self, bounds: tuple[float, ...] | float, i: int) -> float:
        return bounds[i] if isinstance(bounds, tuple) else bounds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and (self._lower, self._upper) == (other._lower, other._upper)

    def __hash__(self) -> int:
        return hash((self._lower, self._upper))

    def __repr__(self) -> str:
        return f"Box(lower={self._lower!r}, upper={self._upper!r})"


def _as_bound(value: Any, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, sp.Number)):
        raise ModelError(f"Box: {label} must be a real number (or ±math.inf), got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ModelError(f"Box: {label} is NaN; a bound must be a number or ±math.inf")
    return v


def _as_bounds(value: Any, side: str) -> tuple[float, ...] | float:
    if isinstance(value, np.ndarray):
        if value.ndim > 1:
            raise ModelError(
                f"Box: {side} must be a number or a sequence of numbers, got an array of shape {value.shape}"
            )
        value = value.tolist()
    if isinstance(value, (str, bytes)) or (isinstance(value, sp.Basic) and not isinstance(value, sp.Number)):
        raise ModelError(f"Box: {side} must be a number or a sequence of numbers, got {value!r}")
    if isinstance(value, Sequence):
        if not value:
            raise ModelError(f"Box: {side} is empty; give a number or one bound per coordinate")
        return tuple(_as_bound(v, f"{side}[{i}]") for i, v in enumerate(value))
    return _as_bound(value, side)


def _check_order(lower: tuple[float, ...] | float, upper: tuple[float, ...] | float) -> None:
    n = max(len(s) if isinstance(s, tuple) else 1 for s in (lower, upper))
    for i in range(n):
        a = lower[i] if isinstance(lower, tuple) else lower
        b = upper[i] if isinstance(upper, tuple) else upper
        where = f"[{i}]" if isinstance(lower, tuple) or isinstance(upper, tuple) else ""
        if a == math.inf or b == -math.inf or not a < b:
            raise ModelError(f"Box: lower{where} = {a} must be below upper{where} = {b} (an interval with interior)")


def _number(value: float) -> sp.Expr:
    """A bound as an exact sympy number: the shortest decimal that rounds to the double (1.5 → 3/2, 0.1 → 1/10), so
    kernels print the same double back and LaTeX shows the number the user wrote."""
    return sp.Integer(int(value)) if value.is_integer() else sp.Rational(repr(value))


def _interval(a: float, b: float) -> str:
    left = "(-∞" if math.isinf(a) else f"[{a:g}"
    right = "∞)" if math.isinf(b) else f"{b:g}]"
    return f"{left}, {right}"
