"""A `Model` written with vectors and matrices (symsm/model/tensor.py) that keeps its structure.

``Model(log_f=<tensor expression>, data=x, params=[W, b])`` returns a `StructuredModel`: validation, the
cache key (`canonical`), θ's names and order, `pack`/`unpack` and the starting values all work on the
shapes, so a d = 128 ICA model is built in microseconds. The scalar sympy view the rest of symsm knows
(``log_f``, ``data``, ``params``, ``groups``) is built on first access only — by the scalar derivation
paths, LaTeX, CUDA — and equals the scalar spelling of the same model (entries ``W_0_0`` … row-major,
symmetric ``M_i_j`` for i ≤ j), so θ and results are interchangeable with it. ``model.structure`` is the
tensor expression, which the structured derivation (``path="structured"``) differentiates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import sympy as sp

from ..core.errors import ModelError
from .box import Box
from .manifold import Geometry, make_geometry
from .model import Model, ParamGroup, _as_description, _as_finite_float, _as_name, _as_weight, register_structured
from .tensor import TensorExpr, _shape_text, _text, data_vector, leaf_entry_names, leaf_symbols, param_matrix

__all__ = ["StructuredModel", "structured_from_string"]


class StructuredModel(Model):
    """A model whose log f is a tensor expression (see the module docstring and `symsm.Model`)."""

    def __init__(
        self,
        log_f: TensorExpr,
        data: Any,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        name: str | None = None,
        description: str = "",
        init: Mapping[str, Any] | None = None,
        domain: str = "real",
        weight: Any = None,
    ) -> None:
        if not isinstance(log_f, TensorExpr):
            raise ModelError(f"log_f must be a tensor expression, got {type(log_f).__name__}")
        self.structure: TensorExpr = log_f
        self.data_leaf: TensorExpr = _as_data_leaf(data)
        self.param_leaves: tuple[TensorExpr, ...] = _as_param_leaves(params)
        self.name = _as_name(name)
        self.description = _as_description(description)
        box = None
        if isinstance(domain, Box):
            box = domain.resolve(self.data_leaf.shape[0])
            domain = "box"
        elif domain == "nonnegative":
            box = Box.nonnegative(self.data_leaf.shape[0])
        elif domain not in ("real", "sphere"):
            raise ModelError(
                "models written with vectors and matrices support domain='real', 'nonnegative', 'sphere' and a "
                f"symsm.Box only for now (got domain={domain!r}); write the model with scalars for the simplex"
            )
        if domain == "sphere" and weight not in (None, "ones"):
            raise ModelError(
                f"models written with vectors and matrices take weight 'ones' on the sphere, got {weight!r}; "
                "write the model with scalars for a weighted sphere"
            )
        if domain == "sphere" and self.data_leaf.shape[0] < 2:
            raise ModelError(f"domain 'sphere' needs at least 2 data coordinates, got {self.data_leaf.shape[0]}")
        self.domain = domain
        #: h(t) of the weighted objective on [0, ∞)ᵈ (default t²), None on Rᵈ and the sphere
        self.weight_expr = _as_weight(weight, domain) if domain != "sphere" else None
        self.box = box
        self._validate_structure()
        offsets = np.cumsum([0] + [_leaf_size(p) for p in self.param_leaves])
        self._offsets = {
            p.name: (int(a), int(b)) for p, a, b in zip(self.param_leaves, offsets, offsets[1:], strict=False)
        }
        self.positive_mask = np.concatenate([np.full(_leaf_size(p), p.positive, dtype=bool) for p in self.param_leaves])
        self.init = dict(init or {})
        self._initial_theta = self._resolve_init(self.init)

    # ------------------------------------------------------------------ the scalar view, built on first access
    is_structured = True

    @cached_property
    def log_f(self) -> sp.Expr:
        """The scalar sympy expansion of log f (built on first access: costly at large d)."""
        values = {self.data_leaf.name: np.array(self.data, dtype=object)}
        for leaf in self.param_leaves:
            values[leaf.name] = leaf_symbols(leaf)
        expr = self.structure.to_sympy(values)
        return sp.sympify(expr)

    @cached_property
    def data(self) -> tuple[sp.Symbol, ...]:  # type: ignore[override]
        return tuple(sp.Symbol(n, real=True) for n in self.data_names)

    @cached_property
    def groups(self) -> tuple[ParamGroup, ...]:  # type: ignore[override]
        out = []
        for leaf in self.param_leaves:
            syms = leaf_symbols(leaf)
            if not leaf.shape:
                out.append(ParamGroup(leaf.name, syms, (syms,), ()))
                continue
            template = sp.ImmutableMatrix(syms.tolist()) if syms.ndim == 2 else sp.ImmutableMatrix(list(syms))
            names = leaf_entry_names(leaf)
            by_name = {str(s): s for s in syms.ravel()}
            out.append(ParamGroup(leaf.name, template, tuple(by_name[n] for n in names), leaf.shape))
        return tuple(out)

    @cached_property
    def params(self) -> tuple[sp.Symbol, ...]:  # type: ignore[override]
        return tuple(s for g in self.groups for s in g.symbols)

    @cached_property
    def positive(self) -> frozenset[sp.Symbol]:  # type: ignore[override]
        return frozenset(p for p in self.params if p.is_positive)

    @cached_property
    def geometry(self) -> Geometry | None:  # type: ignore[override]
        """On the sphere: where score matching happens (symsm/model/manifold.py), built on first access from the
        scalar expansion (the scalar paths need it; the structured path does not); None on the other domains."""
        if self.domain != "sphere":
            return None
        return make_geometry("sphere", self.log_f, self.data, None, None, None)

    @property
    def expanded(self) -> bool:
        """Whether the scalar sympy expansion of log f has been built (it is built only when asked for)."""
        return "log_f" in self.__dict__

    # ------------------------------------------------------------------ shapes
    @property
    def dim(self) -> int:
        return self.data_leaf.shape[0]

    @property
    def n_params(self) -> int:
        return int(self.positive_mask.size)

    @cached_property
    def param_names(self) -> list[str]:
        return [n for leaf in self.param_leaves for n in leaf_entry_names(leaf)]

    @cached_property
    def data_names(self) -> list[str]:
        return leaf_entry_names(self.data_leaf)

    def canonical(self) -> list[str]:
        parts = ["symsm-model-structured-v1", self.name, self.domain, self.structure.canonical()]
        parts.append(f"data {self.data_leaf.name} {self.dim}")
        for leaf in self.param_leaves:
            parts.append(f"param {leaf.name} {list(leaf.shape)} symmetric={leaf.symmetric} positive={leaf.positive}")
        if self.weight_expr is not None:  # (real models keep the form, and the cache keys, they always had)
            parts += ["weight", sp.srepr(self.weight_expr)]
        if self.domain == "box":
            assert self.box is not None
            parts += self.box.canonical()
        return parts

    # ------------------------------------------------------------------ θ packing by shapes
    def unpack(self, theta: Any) -> dict[str, float | np.ndarray]:
        from ..core.arrays import as_theta

        theta = as_theta(self, theta, check_positive=False)
        out: dict[str, float | np.ndarray] = {}
        for leaf in self.param_leaves:
            a, b = self._offsets[leaf.name]
            out[leaf.name] = _leaf_value(leaf, theta[a:b])
        return out

    def _resolve_init(self, init: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(init, Mapping):
            raise ModelError(f"init must be a mapping from parameter names to values, got {type(init)}")
        default = self.positive_mask.astype(float)
        try:
            theta, given = self._fill(init, partial=True)
        except ValueError as exc:
            raise ModelError(f"init: {exc}") from None
        theta = np.where(given, theta, default)
        bad = np.flatnonzero(self.positive_mask & (theta <= 0))
        if bad.size:
            names = self.param_names
            raise ModelError(
                f"init gives non-positive values to positive parameters: {', '.join(names[k] for k in bad)}"
            )
        return theta

    def _fill(self, values: Mapping[str, Any], *, partial: bool) -> tuple[np.ndarray, np.ndarray]:
        theta = np.zeros(self.n_params)
        given = np.zeros(self.n_params, dtype=bool)
        leaves = {leaf.name: leaf for leaf in self.param_leaves}
        entries: dict[str, int] | None = None
        for key, value in values.items():
            if key in leaves:
                leaf = leaves[key]
                a, b = self._offsets[key]
                flat = _leaf_flat(leaf, value, key)
                _put(theta, given, slice(a, b), flat, key)
                continue
            if entries is None:
                entries = {n: k for k, n in enumerate(self.param_names)}
            if key in entries:
                _put(theta, given, slice(entries[key], entries[key] + 1), np.array([_as_finite_float(value, key)]), key)
            else:
                raise ValueError(f"unknown parameter {key!r}; parameters are {', '.join(leaves)} (or their entries)")
        return theta, given

    # ------------------------------------------------------------------ validation
    def _validate_structure(self) -> None:
        e = self.structure
        if e.shape:
            raise ModelError(f"log_f must be a scalar, got {_text(e)} of shape {_shape_text(e.shape)} (use symsm.sum)")
        declared: dict[str, TensorExpr] = {self.data_leaf.name: self.data_leaf}
        for leaf in self.param_leaves:
            if leaf.name in declared:
                raise ModelError(f"the name {leaf.name!r} is declared twice (data and parameters need distinct names)")
            declared[leaf.name] = leaf
        used = e.leaves()
        undeclared = []
        for leaf in used:
            known = declared.get(leaf.name)
            if known is None:
                undeclared.append(leaf.name)
            elif (known.op, known.shape, known.symmetric, known.positive) != (
                leaf.op,
                leaf.shape,
                leaf.symmetric,
                leaf.positive,
            ):
                raise ModelError(
                    f"log_f uses {leaf.name!r} as a {leaf.op} of shape {_shape_text(leaf.shape)}, but it is declared "
                    f"as a {known.op} of shape {_shape_text(known.shape)}"
                )
        if undeclared:
            raise ModelError(
                f"log_f uses undeclared names: {', '.join(sorted(set(undeclared)))} (declared: {', '.join(declared)})"
            )
        if not any(leaf.op == "data" for leaf in used):
            raise ModelError(
                f"log_f does not depend on the data {self.data_leaf.name!r}; score matching needs a density in x"
            )
        unused = [p.name for p in self.param_leaves if p.name not in _estimable(e)]
        if unused:
            raise ModelError(
                f"parameters {', '.join(unused)} do not appear in log_f or appear only in terms free of the data; "
                "such terms drop out of the score-matching objective, so these parameters cannot be estimated — "
                "remove them"
            )

    def __repr__(self) -> str:
        params = ", ".join(p.name + (str(list(p.shape)) if p.shape else "") for p in self.param_leaves)
        data = f"{self.data_leaf.name}[{self.dim}]"
        return f"Model(name={self.name!r}, log_f={self.structure}, data={data}, params=[{params}])"


# ---------------------------------------------------------------------------------------------- helpers
def _leaf_size(leaf: TensorExpr) -> int:
    if not leaf.shape:
        return 1
    if leaf.symmetric:
        return leaf.shape[0] * (leaf.shape[0] + 1) // 2
    return int(np.prod(leaf.shape))


def _leaf_value(leaf: TensorExpr, flat: np.ndarray) -> float | np.ndarray:
    """A leaf's value (float or array of its shape) from its slice of θ."""
    if not leaf.shape:
        return float(flat[0])
    if leaf.symmetric:
        d = leaf.shape[0]
        out = np.zeros((d, d))
        iu = np.triu_indices(d)
        out[iu] = flat
        out.T[iu] = flat
        return out
    return np.array(flat, dtype=float).reshape(leaf.shape)


def _leaf_flat(leaf: TensorExpr, value: Any, key: str) -> np.ndarray:
    """A leaf's slice of θ from a value of its shape (symmetric: both triangles must agree)."""
    if not leaf.shape:
        return np.array([_as_finite_float(value, key)])
    arr = np.asarray(value, dtype=float)
    if arr.shape != leaf.shape:
        raise ValueError(f"{key} must have shape {leaf.shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{key} must be finite")
    if leaf.symmetric:
        iu = np.triu_indices(leaf.shape[0])
        if not np.array_equal(arr[iu], arr.T[iu]):
            i, j = np.argwhere(arr != arr.T)[0]
            raise ValueError(
                f"{key}[{i}, {j}]: conflicting values {arr[i, j]!r} and {arr[j, i]!r} for the symmetric entry "
                f"{key}_{min(i, j)}_{max(i, j)}"
            )
        return arr[iu]
    return arr.ravel()


def _put(theta: np.ndarray, given: np.ndarray, where: slice, values: np.ndarray, label: str) -> None:
    old, was = theta[where], given[where]
    clash = was & (old != values)
    if clash.any():
        k = int(np.flatnonzero(clash)[0])
        raise ValueError(f"{label}: conflicting values {old[k]!r} and {values[k]!r}")
    theta[where] = values
    given[where] = True


def _as_data_leaf(data: Any) -> TensorExpr:
    if isinstance(data, TensorExpr) and data.op == "data":
        return data
    raise ModelError(
        "data of a model written with vectors must be a data vector (symsm.data_vector(name, d)), "
        f"got {type(data).__name__} {str(data)[:80]}"
    )


def _as_param_leaves(params: Any) -> tuple[TensorExpr, ...]:
    if isinstance(params, TensorExpr):
        params = [params]
    items: Iterable[Any]
    if isinstance(params, Mapping):
        items = []
        for key, value in params.items():
            if isinstance(value, TensorExpr) and value.name != key:
                raise ModelError(f"params: the key {key!r} names the parameter {value.name!r}")
            items.append(value)
    elif isinstance(params, Iterable) and not isinstance(params, (str, bytes)):
        items = params
    else:
        raise ModelError("params must be a sequence of parameters (symsm.param_matrix, param_vector, param_scalar)")
    out = []
    for p in items:
        if not (isinstance(p, TensorExpr) and p.op == "param"):
            raise ModelError(
                "params of a model written with vectors must be parameters made by symsm.param_scalar, "
                f"param_vector, param_matrix or param_symmetric; got {type(p).__name__} {str(p)[:80]}"
            )
        out.append(p)
    if not out:
        raise ModelError("params must contain at least one parameter")
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ModelError(f"parameter names repeated: {', '.join(sorted(dup))}")
    return tuple(out)


def _estimable(e: TensorExpr) -> set[str]:
    """Names of the parameters that reach the score: every parameter under a data-dependent node, except the
    θ-only operands of sums (and differences) that add to log f itself (they are normalising terms)."""
    depends: dict[int, bool] = {}
    for node in e.walk():
        depends[id(node)] = node.op == "data" or any(depends[id(a)] for a in node.args)
    found: set[str] = set()

    def params_in(node: TensorExpr) -> None:
        found.update(leaf.name for leaf in node.leaves() if leaf.op == "param")

    stack: list[tuple[TensorExpr, bool]] = [(e, True)]  # (node, in an additive position of log f)
    while stack:
        node, additive = stack.pop()
        if not depends[id(node)]:
            if not additive:
                params_in(node)
            continue
        if node.op in ("add", "sub", "neg", "sum"):
            stack.extend((a, additive) for a in node.args)
        elif node.op in ("mul", "div") and not depends[id(node.args[1])]:
            stack.append((node.args[0], additive))
            params_in(node.args[1])
        elif node.op == "mul" and not depends[id(node.args[0])]:
            stack.append((node.args[1], additive))
            params_in(node.args[0])
        else:
            stack.extend((a, False) for a in node.args)
    return found


def structured_from_string(
    formula: str,
    data: Mapping[str, Any],
    params: Any,
    *,
    positive: Any = (),
    name: str | None = None,
    description: str = "",
    init: Mapping[str, Any] | None = None,
    domain: str = "real",
    weight: Any = None,
) -> StructuredModel:
    """`Model.from_string` for a data vector ``{"name": "x", "size": d}``: the formula names whole vectors and
    matrices (``sum(-2*log(cosh(W @ x)))``), parsed by symsm.model.tensor_parse (an allow-list, never eval)."""
    from .model import _param_specs, _split_names
    from .tensor import param_scalar, param_vector
    from .tensor_parse import parse_tensor_formula

    unknown = set(data) - {"name", "size"}
    if unknown or "name" not in data or "size" not in data:
        raise ModelError(f"a data vector is {{name = ..., size = d}}, got {dict(data)!r}"[:300])
    x = data_vector(data["name"], data["size"])
    positive_names = set(_split_names(positive, "positive")) if positive else set()
    specs = _param_specs(params, positive_names)
    leaves = []
    for spec in specs:
        shape = spec.get("shape")
        pos = bool(spec.get("positive"))
        if shape is None:
            if spec.get("symmetric"):
                raise ModelError(f"parameter {spec['name']!r}: symmetric needs shape = [d, d]")
            leaves.append(param_scalar(spec["name"], positive=pos))
        elif isinstance(shape, (list, tuple)) and len(shape) == 1:
            leaves.append(param_vector(spec["name"], shape[0], positive=pos))
        elif isinstance(shape, (list, tuple)) and len(shape) == 2:
            leaves.append(
                param_matrix(spec["name"], shape[0], shape[1], symmetric=bool(spec.get("symmetric")), positive=pos)
            )
        else:
            raise ModelError(f"parameter {spec['name']!r}: shape must be [n] or [rows, cols], got {shape!r}")
    names = {x.name: x, **{leaf.name: leaf for leaf in leaves}}
    if len(names) != len(leaves) + 1:
        raise ModelError(f"the name {x.name!r} is declared as data and as a parameter")
    log_f = parse_tensor_formula(formula, names)
    return StructuredModel(
        log_f, x, leaves, name=name, description=description, init=init, domain=domain, weight=weight
    )


register_structured(StructuredModel, structured_from_string)
