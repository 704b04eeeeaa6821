"""The user's model: an unnormalised log-density log f(x; θ), its data symbols and its parameters.

`Model` validates the formula (declared symbols only, smooth in the data, depends on the data) and
fixes the flat parameter order θ that every kernel, fit and result uses. It knows nothing about
derivation or code generation; `Model.derive` and `Model.compile` import those modules lazily so the
module dependencies stay one-way (model → derive → codegen → compiled).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import sympy as sp

from ..core.errors import ModelError
from ..core.functions import NON_SMOOTH_FUNCTIONS, SMOOTH_FUNCTIONS, WEIGHT_FUNCTIONS  # the table's smoothness
from .box import Box
from .manifold import MANIFOLD_DOMAINS, Geometry, make_geometry
from .tensor import TensorExpr
from .weights import NAMED_WEIGHTS, named_weight

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..runtime.loss import CompiledLoss

__all__ = ["Box", "Model", "ParamGroup", "matrix", "symmetric"]

# Models written with vectors and matrices: symsm/model/structured.py registers its StructuredModel class and
# its formula reader here when the package symsm.model is imported (its __init__ imports it, before anything
# can call Model), so this module does not import its own subclass.
_STRUCTURED: dict[str, Any] = {}


def register_structured(model_class: type[Model], from_string: Any) -> None:
    """Called once by symsm/model/structured.py: the class Model(...) returns for a tensor expression and
    the reader of vector formulas (Model.from_string with a data vector)."""
    _STRUCTURED.update(model=model_class, from_string=from_string)


#: The domains by name (`Model.domain`); "box" is given as ``domain=Box(lower, upper)`` (symsm/model/box.py),
#: "nonnegative" is the box [0, ∞)ᵈ.
DOMAINS = ("real", "nonnegative", "box", "sphere", "simplex")
#: Domains whose objective is the weighted one, with a weight h of the distance to the boundary.
WEIGHTED_DOMAINS = ("nonnegative", "box")

#: The argument of a coordinate weight h(t) as the model stores it: one fixed Symbol, so the canonical form
#: (and the cache key) does not depend on the name the user gave the argument.
WEIGHT_VARIABLE = sp.Symbol("t", real=True)

#: Points t > 0 at which a weight must be positive when sympy cannot decide it symbolically.
_WEIGHT_CHECK_POINTS = (*(10.0**k for k in range(-8, 9)), 0.5, 2.0, 3.0, 7.0)


def matrix(name: str, rows: int, cols: int, **assumptions: Any) -> sp.ImmutableMatrix:
    """A `rows × cols` matrix parameter whose entries are the Symbols ``{name}_{i}_{j}``."""
    _check_group_name(name)
    _check_dimension(rows, "rows")
    _check_dimension(cols, "cols")
    return sp.ImmutableMatrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}_{j}", real=True, **assumptions))


def symmetric(name: str, d: int, **assumptions: Any) -> sp.ImmutableMatrix:
    """A symmetric `d × d` matrix parameter: [i, j] and [j, i] are the same Symbol ``{name}_{i}_{j}``, i ≤ j.

    It contributes d(d+1)/2 entries to θ (the upper triangle, row by row), so it is identifiable.
    """
    _check_group_name(name)
    _check_dimension(d, "d")
    return sp.ImmutableMatrix(d, d, lambda i, j: sp.Symbol(f"{name}_{min(i, j)}_{max(i, j)}", real=True, **assumptions))


def _check_group_name(name: object) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
        raise ModelError(f"matrix name must be letters and digits starting with a letter, got {name!r}")


def _check_dimension(n: object, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ModelError(f"{what} must be a positive integer, got {n!r}")


@dataclass(frozen=True)
class ParamGroup:
    """A named group of parameters: one Symbol, a vector of Symbols or a matrix (possibly structured).

    `template` holds the group as the user gave it (a Symbol or an ImmutableMatrix whose entries are
    Symbols or constants); `symbols` are its distinct Symbols in row-major order of first appearance,
    which is the group's slice of the flat θ.
    """

    name: str
    template: sp.Basic
    symbols: tuple[sp.Symbol, ...]
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.symbols)

    def entries(self) -> list[tuple[tuple[int, ...], sp.Basic]]:
        """(index, entry) pairs of the template in row-major order."""
        if not self.shape:
            return [((), self.template)]
        T = self.template
        flat = T.flat() if isinstance(T, sp.MatrixBase) else list(T)  # flat(): no per-entry __getitem__
        return [(tuple(int(i) for i in np.unravel_index(k, self.shape)), e) for k, e in enumerate(flat)]


CANONICAL_ORDERED_TERMS = 2000  # a longer log f is written in sympy's own argument order (see _srepr_formula)


def _srepr_formula(expr: sp.Basic) -> str:
    """srepr of log f. srepr sorts a sum's terms by their monomials in *every* symbol, which costs terms × symbols
    (hours for a d = 500 graphical model's 125,000 terms and parameters); a long sum is written in its argument
    order instead — sympy's canonical order of the terms, so the same formula gives the same string. Shorter
    formulas keep the form (and the cache keys) they always had."""
    if isinstance(expr, sp.Add) and len(expr.args) > CANONICAL_ORDERED_TERMS:
        return "args-order:" + sp.srepr(expr, order="none")
    return sp.srepr(expr)


class Model:
    """An unnormalised log-density log f(x; θ) for score matching.

    Parameters
    ----------
    log_f
        A sympy expression (or a 1×1 Matrix) in the data symbols and the parameters — or a tensor expression
        written with vectors and matrices (``symsm.sum(-2 * symsm.log(symsm.cosh(W @ x)))`` with
        ``x = symsm.data_vector("x", d)``, ``W = symsm.param_matrix("W", d, d)``), which gives a
        `StructuredModel` (symsm/model/structured.py) that keeps the structure for ``path="structured"``.
    data
        The data coordinates x_1..x_d: a sequence of Symbols or a column Matrix.
    params
        A sequence of Symbols and/or Matrices (a nested sequence is a vector group), or a mapping
        name → Symbol | Matrix | sequence that names every group. The flat θ order follows it.
    name, description
        Free text shown in generated files, LaTeX and the CLI.
    init
        Starting values for fits: a mapping from group or parameter names to values.
    domain
        "real" (x ∈ Rᵈ, Hyvärinen 2005), "nonnegative" (x ∈ [0, ∞)ᵈ: generalized score matching,
        Hyvärinen 2007, Yu, Drton & Shojaie 2019, with the per-coordinate weight h), or a box
        ``symsm.Box(lower, upper)`` (aᵢ ≤ xᵢ ≤ bᵢ, bounds possibly infinite; ``model.domain`` is then "box" and
        ``model.box`` the bounds): coordinate i is weighted by h(distᵢ(xᵢ)), distᵢ = min(xᵢ − aᵢ, bᵢ − xᵢ)
        (one-sided where a bound is infinite; weight 1 where both are), as genscore's interval domains.
    weight
        For domain "nonnegative" or a box: h(t), applied to each coordinate's distance to the boundary — a
        one-argument callable (called once with a sympy Symbol), a sympy ``Lambda``, a formula string in ``t``
        (parsed through the allow-list; ``min`` and ``max`` allowed: a capped weight "min(t**2, 1)"), or one of
        genscore's named weights (``"min_pow"`` or ``("min_pow", 2, 1)``: `NAMED_WEIGHTS`). Default t². It must
        be continuous and piecewise smooth (h′ taken piecewise, a.e.), positive for t > 0, with h(0) = 0 and
        h′(0) finite, so that the boundary term hᵢ p ∂ᵢ log f of the integration by parts vanishes there.
        For domains "sphere" and "simplex" (symsm/model/manifold.py): "ones" (h = 1, the sphere's default),
        "minsq" = min(min_j z_j², a_c²) (the sqrt-mapped simplex's default) or "prodsq" = min(∏_j z_j², a_c²);
        on the sphere also h(x) as a formula string or sympy expression in the data coordinates.
    transform, a_c
        Domain "simplex" only: "sqrt" (default: z = √u on the positive part of the sphere, Scealy & Wood
        2023; zeros allowed under a boundary weight) or "alr" (ℝ^{d−1}, no zeros). a_c: the cap of the
        minsq / prodsq weight (default 0.01, Scealy & Wood's value).
    """

    def __new__(cls, log_f: Any = None, *args: Any, **kwargs: Any) -> Model:
        # A log f written with vectors and matrices (symsm/model/tensor.py) keeps its structure: StructuredModel.
        if cls is Model and isinstance(log_f, TensorExpr):
            return super().__new__(_STRUCTURED["model"])
        return super().__new__(cls)

    def __init__(
        self,
        log_f: sp.Expr | sp.MatrixBase,
        data: Sequence[sp.Symbol] | sp.MatrixBase,
        params: Sequence[Any] | Mapping[str, Any],
        *,
        name: str | None = None,
        description: str = "",
        init: Mapping[str, Any] | None = None,
        domain: str | Box = "real",
        weight: Any = None,
        transform: str | None = None,
        a_c: float | None = None,
    ) -> None:
        self.log_f = _as_scalar_expr(log_f)
        self.data: tuple[sp.Symbol, ...] = _as_data_symbols(data)
        self.groups: tuple[ParamGroup, ...] = _as_groups(params)
        self.params: tuple[sp.Symbol, ...] = tuple(s for g in self.groups for s in g.symbols)
        self.name = _as_name(name)
        self.description = _as_description(description)
        #: the bounds of domains "nonnegative" ([0, ∞)ᵈ) and "box", one per coordinate; None for the others
        self.box: Box | None = None
        if isinstance(domain, Box):
            self.box = domain.resolve(len(self.data))
            domain = "box"
        elif domain == "box":
            raise ModelError("domain 'box' needs its bounds: pass domain=symsm.Box(lower, upper)")
        elif not isinstance(domain, str) or domain not in DOMAINS:
            named = tuple(d for d in DOMAINS if d != "box")
            raise ModelError(f"domain must be one of {named} or a symsm.Box(lower, upper), got {domain!r}")
        elif domain == "nonnegative":
            self.box = Box.nonnegative(len(self.data))
        self.domain = domain
        #: sphere / simplex: where score matching happens (symsm/model/manifold.py), else None
        self.geometry: Geometry | None = None
        #: h(t) as an expression in `WEIGHT_VARIABLE` for the weighted domains (default t²), None otherwise
        self.weight_expr: sp.Expr | None = None
        if domain in MANIFOLD_DOMAINS:
            self._validate()
            self.geometry = make_geometry(domain, self.log_f, self.data, weight, transform, a_c)
        else:
            if transform is not None or a_c is not None:
                raise ModelError("transform and a_c apply to domain='simplex' (a_c also to 'sphere') only")
            self.weight_expr = _as_weight(weight, domain)
            self._validate()
        self.positive: frozenset[sp.Symbol] = frozenset(p for p in self.params if p.is_positive)
        self.init: dict[str, Any] = dict(init or {})
        self._initial_theta = self._resolve_init(self.init)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_string(
        cls,
        formula: str,
        data: str | Sequence[str] | Mapping[str, Any],
        params: str | Sequence[str | Mapping[str, Any]],
        *,
        positive: str | Iterable[str] = (),
        name: str | None = None,
        description: str = "",
        init: Mapping[str, Any] | None = None,
        domain: str | Box = "real",
        weight: Any = None,
        transform: str | None = None,
        a_c: float | None = None,
    ) -> Model:
        """Build a model from a formula string, parsed through an allow-list (never `eval`).

        `data` and `params` are names separated by spaces or commas (or sequences of names);
        a parameter may also be a mapping ``{"name": "W", "shape": [3, 3], "symmetric": False,
        "positive": False}`` for a matrix, whose entries the formula names ``W_0_1``.
        """
        from .parse import parse_formula

        if isinstance(data, Mapping):  # a data vector {"name": "x", "size": d}: a model written with vectors
            return _STRUCTURED["from_string"](
                formula, data, params, positive=positive, name=name, description=description, init=init,
                domain=domain, weight=weight,
            )  # fmt: skip
        data_names = _split_names(data, "data")
        positive_names = set(_split_names(positive, "positive")) if positive else set()
        specs = _param_specs(params, positive_names)
        unknown_positive = positive_names - {s["name"] for s in specs}
        if unknown_positive:
            raise ModelError(f"positive names unknown parameters: {', '.join(sorted(unknown_positive))}")
        data_syms = [sp.Symbol(n, real=True) for n in data_names]
        groups: dict[str, Any] = {}
        for spec in specs:
            groups[spec["name"]] = _symbols_for_spec(spec)
        symbols = {str(s): s for s in data_syms}
        for g in groups.values():
            for s in g.free_symbols if isinstance(g, sp.MatrixBase) else {g}:
                if str(s) in symbols and symbols[str(s)] != s:
                    raise ModelError(f"name {str(s)!r} is declared twice")
                symbols[str(s)] = s
        indexed = {name: g for name, g in groups.items() if isinstance(g, sp.MatrixBase)}
        log_f = parse_formula(formula, symbols, indexed=indexed)
        if transform is None and a_c is None:  # (subclasses without the manifold keywords keep working)
            return cls(
                log_f, data_syms, groups, name=name, description=description, init=init, domain=domain, weight=weight
            )
        return cls(
            log_f, data_syms, groups, name=name, description=description, init=init, domain=domain, weight=weight,
            transform=transform, a_c=a_c,
        )  # fmt: skip

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        """Number of data coordinates d."""
        return len(self.data)

    @property
    def n_params(self) -> int:
        """Number of free parameters P (the length of θ)."""
        return len(self.params)

    @property
    def param_names(self) -> list[str]:
        """Names of the entries of θ, in order."""
        names = self.__dict__.get("_param_names")
        if names is None:  # printed once: a graphical model has d(d+3)/2 of them
            names = self.__dict__["_param_names"] = [str(p) for p in self.params]
        return list(names)

    @property
    def data_names(self) -> list[str]:
        return [str(x) for x in self.data]

    @property
    def hash(self) -> str:
        """sha256 of the canonical model (formula, symbols with assumptions, groups, name)."""
        h = hashlib.sha256()
        for part in self.canonical():
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def canonical(self) -> list[str]:
        """The strings that identify this model for caching (srepr keeps the symbols' assumptions)."""
        cached = self.__dict__.get("_canonical")
        if cached is None:
            cached = self.__dict__["_canonical"] = self._canonical()
        return list(cached)

    def _canonical(self) -> list[str]:
        parts = ["symsm-model-v1", self.name, self.domain, _srepr_formula(self.log_f)]
        parts += [sp.srepr(x) for x in self.data]
        for g in self.groups:
            parts += [g.name, repr(g.shape), sp.srepr(g.template)]
        if self.weight_expr is not None:  # (real models keep the form, and the cache keys, they always had)
            parts += ["weight", sp.srepr(self.weight_expr)]
        if self.domain == "box":  # (and "nonnegative" models theirs: [0, ∞)ᵈ is implied by the name)
            assert self.box is not None
            parts += self.box.canonical()
        if self.geometry is not None:
            parts += self.geometry.canonical()
        return parts

    @property
    def weight(self) -> sp.Lambda | None:
        """The coordinate weight h as a sympy Lambda (domains "nonnegative" and "box"), None on Rᵈ."""
        return None if self.weight_expr is None else sp.Lambda(WEIGHT_VARIABLE, self.weight_expr)

    def boundary_distances(self) -> tuple[sp.Expr | None, ...] | None:
        """distᵢ(xᵢ), the distance to the nearer finite end of coordinate i's interval (xᵢ on [0, ∞); None for
        a coordinate unbounded on both sides), per coordinate; None on Rᵈ."""
        if self.box is None:
            return None
        return tuple(self.box.distance(i, x) for i, x in enumerate(self.data))

    def coordinate_weights(self) -> tuple[sp.Expr, ...] | None:
        """hᵢ = h(distᵢ(xᵢ)) for each data coordinate (h(xᵢ) on [0, ∞)ᵈ; 1 where a coordinate has no finite
        bound), None for the plain objective on Rᵈ."""
        distances = self.boundary_distances()
        if self.weight_expr is None or distances is None:
            return None
        return tuple(
            sp.Integer(1) if dist is None else self.weight_expr.xreplace({WEIGHT_VARIABLE: dist}) for dist in distances
        )

    # ------------------------------------------------------------------ θ packing
    def pack(self, values: Mapping[str, Any]) -> np.ndarray:
        """Flat θ from a mapping of group names (scalars or arrays of the group's shape) or entry names."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a mapping from parameter names to values, got {type(values)}")
        theta, given = self._fill(values, partial=False)
        missing = [n for n, ok in zip(self.param_names, given, strict=True) if not ok]
        if missing:
            raise ValueError(f"values is missing parameters: {', '.join(missing)}")
        return theta

    def unpack(self, theta: Any) -> dict[str, float | np.ndarray]:
        """Mapping group name → value (float, or array of the group's shape, matrices rebuilt)."""
        from ..core.arrays import as_theta

        theta = as_theta(self, theta, check_positive=False)
        out: dict[str, float | np.ndarray] = {}
        offset = 0
        for g in self.groups:
            vals = dict(zip(g.symbols, theta[offset : offset + g.size], strict=True))
            offset += g.size
            if not g.shape:
                out[g.name] = float(vals[g.template])
                continue
            arr = np.empty(g.shape)
            for idx, entry in g.entries():
                arr[idx] = vals[entry] if isinstance(entry, sp.Symbol) else float(entry)
            out[g.name] = arr
        return out

    def default_theta(self) -> np.ndarray:
        """Starting values: `init` where given, else 1 for positive parameters and 0 for the others."""
        return self._initial_theta.copy()

    def _resolve_init(self, init: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(init, Mapping):
            raise ModelError(f"init must be a mapping from parameter names to values, got {type(init)}")
        default = np.array([1.0 if p.is_positive else 0.0 for p in self.params])
        try:
            theta, given = self._fill(init, partial=True)
        except ValueError as exc:
            raise ModelError(f"init: {exc}") from None
        theta = np.where(given, theta, default)
        bad = [n for n, p, v in zip(self.param_names, self.params, theta, strict=True) if p.is_positive and v <= 0]
        if bad:
            raise ModelError(f"init gives non-positive values to positive parameters: {', '.join(bad)}")
        return theta

    def _fill(self, values: Mapping[str, Any], *, partial: bool) -> tuple[np.ndarray, np.ndarray]:
        index = {p: k for k, p in enumerate(self.params)}
        by_name = {str(p): p for p in self.params}
        groups = {g.name: g for g in self.groups}
        theta = np.zeros(self.n_params)
        given = np.zeros(self.n_params, dtype=bool)

        def put(sym: sp.Symbol, value: Any, label: str) -> None:
            v = _as_finite_float(value, label)
            k = index[sym]
            if given[k] and theta[k] != v:
                raise ValueError(f"{label}: conflicting values {theta[k]!r} and {v!r} for {sym}")
            theta[k] = v
            given[k] = True

        for key, value in values.items():
            if key in groups and (groups[key].shape or key not in by_name):
                g = groups[key]
                if not g.shape:
                    put(g.template, value, key)
                    continue
                arr = np.asarray(value, dtype=float)
                if (
                    arr.shape != g.shape
                    and arr.size == g.template.rows * g.template.cols
                    and (sorted(g.shape)[0] == 1 and arr.ndim == 1)
                ):
                    arr = arr.reshape(g.shape)  # a vector given for a row or column matrix
                if arr.shape != g.shape:
                    raise ValueError(f"{key} must have shape {g.shape}, got {arr.shape}")
                for idx, entry in g.entries():
                    label = f"{key}{list(idx)}"
                    if isinstance(entry, sp.Symbol):
                        put(entry, arr[idx], label)
                    elif arr[idx] != float(entry):
                        raise ValueError(f"{label} is fixed at {float(entry)} in the model, got {arr[idx]}")
            elif key in by_name:
                put(by_name[key], value, key)
            else:
                raise ValueError(f"unknown parameter {key!r}; parameters are {', '.join(self.param_names)}")
        return theta, given

    # ------------------------------------------------------------------ pipeline
    def derive(self, *, path: str = "auto") -> Derivation:
        """Exact derivatives and the score-matching objective (see `symsm.derive.Derivation`).

        `path` chooses how kernels built from this derivation are derived: "sympy", "graph" (automatic
        differentiation on the expression graph) or "auto" (by the model's size); both are exact.
        """
        from ..derive.derivation import Derivation

        return Derivation(self, path=path)

    def compile(self, backend: str | None = None, dtype: Any = np.float64, **options: Any) -> CompiledLoss:
        """Generated, compiled kernels for J̃ and ∇θJ̃ (see `symsm.runtime.compiled.compile_model`): `backend`
        names one of symsm.backends' registry (default: its default, "llvm"); options include `path=`,
        `objective=` and its settings, and `seed=` for randomised objectives."""
        from ..runtime.compiled import compile_model

        if backend is not None:
            options["backend"] = backend
        return compile_model(self, dtype=dtype, **options)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        data_set = set(self.data)
        param_set = set(self.params)
        both = data_set & param_set
        if both:
            raise ModelError(f"symbols are both data and parameters: {_names(both)}")
        free = self.log_f.free_symbols
        undeclared = free - data_set - param_set
        if undeclared:
            raise ModelError(
                f"log_f uses undeclared symbols: {_names(undeclared)} "
                f"(declare them as data or parameters; data: {_names(self.data)}, params: {_names(self.params)})"
            )
        data_terms = [t for t in sp.Add.make_args(self.log_f) if t.free_symbols & data_set]
        if not data_terms:
            raise ModelError(
                f"log_f does not depend on the data symbols {_names(self.data)}; score matching needs a density in x"
            )
        for term in data_terms:
            _check_smooth(term)
        in_data_terms = set().union(*(t.free_symbols for t in data_terms))
        unused = [p for p in self.params if p not in in_data_terms]
        if unused:
            where = "appear only in terms free of the data" if set(unused) & free else "do not appear in log_f"
            raise ModelError(
                f"parameters {_names(unused)} {where}; such terms drop out of the score-matching "
                "objective, so these parameters cannot be estimated — remove them"
            )

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        return (
            f"Model(name={self.name!r}, log_f={self.log_f}, data=[{', '.join(self.data_names)}], "
            f"params=[{', '.join(self.param_names)}])"
        )

    def _repr_latex_(self) -> str:
        """log f typeset for a notebook, with mathematicians' symbol names (see `symsm.latex.model_latex`)."""
        from ..latex.derivation import model_latex

        return model_latex(self)


# ---------------------------------------------------------------------- helpers


def _names(symbols: Iterable[sp.Basic]) -> str:
    return ", ".join(sorted(str(s) for s in symbols))


def _as_scalar_expr(log_f: Any) -> sp.Expr:
    if isinstance(log_f, str):
        raise ModelError("log_f is a string; use Model.from_string(formula, data=..., params=...)")
    if isinstance(log_f, sp.MatrixBase):
        if log_f.shape != (1, 1):
            raise ModelError(f"log_f must be a scalar (or 1×1 matrix), got a matrix of shape {log_f.shape}")
        log_f = log_f[0, 0]
    if isinstance(log_f, (int, float)) and not isinstance(log_f, bool):
        log_f = sp.Float(log_f) if isinstance(log_f, float) else sp.Integer(log_f)
    if not isinstance(log_f, sp.Expr):
        raise ModelError(f"log_f must be a sympy expression, got {type(log_f).__name__}")
    if log_f.has(sp.I) or log_f.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ModelError(f"log_f must be real and finite, got {log_f}")
    return log_f


def _as_data_symbols(data: Any) -> tuple[sp.Symbol, ...]:
    if isinstance(data, sp.Symbol):
        data = [data]
    if isinstance(data, sp.MatrixBase):
        if 1 not in data.shape:
            raise ModelError(f"data must be a sequence of Symbols or a column Matrix, got shape {data.shape}")
        data = list(data)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ModelError("data must be a sequence of sympy Symbols (use Model.from_string for names)")
    syms = tuple(data)
    if not syms:
        raise ModelError("data must contain at least one Symbol")
    for s in syms:
        if not isinstance(s, sp.Symbol):
            raise ModelError(f"data entries must be sympy Symbols, got {s!r} ({type(s).__name__})")
    dup = {s for s in syms if syms.count(s) > 1}
    if dup:
        raise ModelError(f"data symbols repeated: {_names(dup)}")
    return syms


def _as_name(name: Any) -> str:
    # The name is written into generated Python modules (a comment and a docstring), LaTeX and terminal
    # output; a newline, a quote or a backslash in it could end the comment or the docstring and run code.
    if name is None:
        return "model"
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"name must be a non-empty string, got {name!r}")
    bad = [ch for ch in name if not ch.isprintable() or ch in '"\\']
    if bad or len(name) > 200:
        why = f"contains {bad[0]!r}" if bad else f"is {len(name)} characters long"
        raise ModelError(
            f"name must be printable text of at most 200 characters without quotes or backslashes; {name!r} {why}"
        )
    return name


def _as_description(description: Any) -> str:
    # Shown in terminals and written into generated files: no control characters (escape sequences) or
    # bidirectional overrides; newlines and tabs are kept.
    text = str(description)
    bad = [ch for ch in text if not (ch.isprintable() or ch in "\n\t")]
    if bad:
        raise ModelError(f"description contains the non-printable character {bad[0]!r}")
    return text


def _as_groups(params: Any) -> tuple[ParamGroup, ...]:
    if isinstance(params, (sp.Symbol, sp.MatrixBase)):
        params = [params]
    items: list[tuple[str | None, Any]]
    if isinstance(params, Mapping):
        items = [(str(k), v) for k, v in params.items()]
        for k, _ in items:
            if not str(k).isidentifier():
                raise ModelError(f"parameter group names must be identifiers, got {k!r}")
    elif isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
        raise ModelError("params must be a sequence of Symbols/Matrices or a mapping name → Symbol | Matrix")
    else:
        items = [(None, v) for v in params]
    if not items:
        raise ModelError("params must contain at least one parameter")
    groups: list[ParamGroup] = []
    seen_symbols: dict[sp.Symbol, str] = {}
    for name, value in items:
        group = _make_group(name, value)
        if any(g.name == group.name for g in groups):
            raise ModelError(f"parameter group name {group.name!r} is used twice")
        for s in group.symbols:
            if s in seen_symbols:
                raise ModelError(f"parameter {s} appears in groups {seen_symbols[s]!r} and {group.name!r}")
            seen_symbols[s] = group.name
        groups.append(group)
    return tuple(groups)


def _make_group(name: str | None, value: Any) -> ParamGroup:
    if isinstance(value, sp.Symbol):
        return ParamGroup(name or str(value), value, (value,), ())
    if isinstance(value, sp.MatrixBase):
        template = sp.ImmutableMatrix(value)
        shape: tuple[int, ...] = template.shape
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        entries = list(value)
        if not entries:
            raise ModelError(f"parameter group {name or ''!r} is empty")
        template = sp.ImmutableMatrix(entries)
        shape = (len(entries),)
    else:
        raise ModelError(f"parameters must be sympy Symbols or Matrices, got {value!r} ({type(value).__name__})")
    symbols: list[sp.Symbol] = []
    seen: set[sp.Symbol] = set()  # a list lookup here made a 128 × 128 matrix take minutes
    for entry in template:
        if isinstance(entry, sp.Symbol):
            if entry not in seen:
                seen.add(entry)
                symbols.append(entry)
        elif not (isinstance(entry, sp.Expr) and entry.is_number and entry.is_finite):
            raise ModelError(f"matrix parameter entries must be Symbols or constants, got {entry}")
    if not symbols:
        raise ModelError(f"parameter group {name or ''!r} has no free Symbols")
    return ParamGroup(name or _infer_group_name(symbols), template, tuple(symbols), shape)


def _infer_group_name(symbols: Sequence[sp.Symbol]) -> str:
    stems = {re.sub(r"(_?\d+)+$", "", str(s)) for s in symbols}
    if len(stems) == 1:
        stem = stems.pop()
        if stem.isidentifier():
            return stem
    return str(symbols[0])


def _check_smooth(term: sp.Expr, what: str = "log_f") -> None:
    """log f: smooth functions only. A weight h may also use min and max (continuous, piecewise smooth: a capped
    weight min(h(t), c)), whose h′ the objective takes piecewise (a.e.); nothing discontinuous."""
    where = "in a term that depends on the data" if what == "log_f" else "(h(t))"
    need = (
        "score matching needs log f twice differentiable in x (min and max are allowed in weights only)"
        if what == "log_f"
        else "h must be continuous and piecewise smooth (smooth functions, min and max)"
    )
    for node in sp.preorder_traversal(term):
        if isinstance(node, (sp.Symbol, sp.Number, sp.NumberSymbol, sp.Add, sp.Mul, sp.Pow)):
            continue
        if what != "log_f" and isinstance(node, WEIGHT_FUNCTIONS):
            continue
        if isinstance(node, NON_SMOOTH_FUNCTIONS):
            raise ModelError(f"{what} contains the non-smooth function {type(node).__name__} {where}: {node}; {need}")
        if isinstance(node, SMOOTH_FUNCTIONS):
            continue
        if isinstance(node, sp.Function):
            raise ModelError(
                f"{what} contains the function {type(node).__name__}, which symsm does not support {where}: {node}"
            )
        raise ModelError(f"{what} contains an unsupported expression {node} ({type(node).__name__})")


def _as_weight(weight: Any, domain: str) -> sp.Expr | None:
    """The coordinate weight h as an expression in `WEIGHT_VARIABLE`, validated (see `Model`'s ``weight``).

    Generalized score matching on [0, ∞)ᵈ integrates by parts with hᵢ(xᵢ) p ∂ᵢ log f as the boundary term:
    it vanishes at 0 for every density only when h(0) = 0, the objective needs h and h′ everywhere on
    [0, ∞) (h′ finite at 0, where data may lie), and the weighted Fisher divergence is a divergence only if
    h > 0 inside the domain. Each is checked here, with sympy where it decides and at a grid of points where
    it does not.
    """
    if domain not in WEIGHTED_DOMAINS:
        if weight is not None:
            raise ModelError(
                "weight applies to domain='nonnegative' or a symsm.Box (generalized score matching with a weight "
                f"of the distance to the boundary); the objective on domain {domain!r} has no weight"
            )
        return None
    t = WEIGHT_VARIABLE
    if weight is None:
        return t**2
    if isinstance(weight, tuple) or (isinstance(weight, str) and weight in NAMED_WEIGHTS):
        weight = named_weight(*(weight if isinstance(weight, tuple) else (weight,)))
    if isinstance(weight, str):
        from .parse import parse_formula

        try:
            expr = parse_formula(weight, {"t": t})
        except ModelError as exc:
            raise ModelError(f"weight: {exc} (a weight formula is h(t) in the variable t)") from None
    elif isinstance(weight, sp.Lambda):
        if len(weight.variables) != 1:
            raise ModelError(
                f"weight must be a function of one variable h(t), got a Lambda of {len(weight.variables)} variables"
            )
        expr = weight.expr.xreplace({weight.variables[0]: t})
    elif callable(weight):
        _check_arity(weight)
        try:
            expr = weight(t)
        except Exception as exc:  # the callable is the user's: any failure is a bad weight, reported as such
            raise ModelError(
                f"weight: calling it with a sympy Symbol failed ({type(exc).__name__}: {exc}); write h(t) with "
                "sympy operations (sympy.exp, sympy.log, ...), not numpy or comparisons"
            ) from None
    else:
        raise ModelError(
            f"weight must be a one-argument callable, a sympy Lambda or a formula in t, got {type(weight).__name__}"
        )
    if isinstance(expr, (int, float)) and not isinstance(expr, bool):
        expr = sp.Float(expr) if isinstance(expr, float) else sp.Integer(expr)
    if not isinstance(expr, sp.Expr):
        raise ModelError(f"weight must give a sympy expression h(t), got {type(expr).__name__}")
    if expr.has(sp.I, sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ModelError(f"weight must be real and finite, got h(t) = {expr}")
    others = expr.free_symbols - {t}
    if others:
        raise ModelError(f"weight must be a function of one variable: h(t) = {expr} also depends on {_names(others)}")
    if t not in expr.free_symbols:
        raise ModelError(
            f"weight h(t) = {expr} is constant; it must vary with t and vanish at 0 (e.g. t**2), or the boundary "
            "term h(0) p(0) ∂ᵢ log f(0) of the integration by parts does not vanish"
        )
    _check_smooth(expr, "weight")
    at_zero = _limit_at_zero(expr)
    if at_zero != 0:
        raise ModelError(
            f"weight must vanish at 0: h(t) = {expr} has h(0) = {at_zero}; the boundary term h(0) p(0) ∂ᵢ log f(0) "
            "of the integration by parts vanishes for every density only when h(0) = 0"
        )
    slope = _limit_at_zero(sp.diff(expr, t))
    if slope is None or not slope.is_finite:
        raise ModelError(
            f"weight h(t) = {expr} has h'(0) = {slope}: the objective uses h'(xᵢ) and data may lie at 0, so h must "
            "be differentiable at 0 (e.g. t**2, t, 1 - exp(-t), t**2/(1 + t**2))"
        )
    _check_positive_weight(expr)
    return expr


def _check_arity(fn: Any) -> None:
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins and sympy functions (sympy.tanh) have no signature: the call decides
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
    if not positional or len(required) > 1:
        raise ModelError(
            f"weight must be a function of one variable h(t); {getattr(fn, '__name__', 'it')} takes "
            f"{len(required) or 'no'} argument{'s' if len(required) != 1 else ''} ({sig})"
        )


def _limit_at_zero(expr: sp.Expr) -> sp.Expr | None:
    """The value of expr(t) at t = 0, as the limit from the right where direct substitution fails."""
    t = WEIGHT_VARIABLE
    value = expr.xreplace({t: sp.Integer(0)})
    if value.is_number and value.is_finite and not value.has(sp.nan, sp.zoo):
        return sp.nsimplify(value) if value.is_Float else sp.simplify(value)
    try:
        return sp.limit(expr, t, 0, "+")
    except Exception:  # sympy could not take the limit: nothing can be said
        return None


def _check_positive_weight(expr: sp.Expr) -> None:
    """h(t) > 0 for t > 0: decided by sympy where it can, else at `_WEIGHT_CHECK_POINTS` (exact evaluation)."""
    t = WEIGHT_VARIABLE
    tp = sp.Dummy("t", positive=True)
    positive = expr.xreplace({t: tp}).is_positive
    if positive is True:
        return
    for point in _WEIGHT_CHECK_POINTS:
        value = expr.xreplace({t: sp.Rational(repr(point))}).evalf(30)  # an exact point: evalf tracks cancellation
        if not (value.is_real and value.is_finite and value > 0):
            raise ModelError(
                f"weight must be positive for t > 0 (the weighted Fisher divergence is a divergence only then): "
                f"h(t) = {expr} is {value.evalf(6)} at t = {point:g}"
            )
    if positive is False:
        raise ModelError(f"weight must be positive for t > 0, but h(t) = {expr} is not")


def _as_finite_float(value: Any, label: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a real number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{label} must be finite, got {v}")
    return v


def _split_names(names: str | Iterable[str], what: str) -> list[str]:
    out = [n for n in re.split(r"[\s,]+", names.strip()) if n] if isinstance(names, str) else list(names)
    for n in out:
        if not isinstance(n, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) or n.startswith("__"):
            raise ModelError(f"{what}: {n!r} is not a valid name (letters, digits, underscores)")
    if not out and what != "positive":
        raise ModelError(f"{what} must name at least one symbol")
    dup = {n for n in out if out.count(n) > 1}
    if dup:
        raise ModelError(f"{what}: names repeated: {', '.join(sorted(dup))}")
    return out


def _param_specs(params: Any, positive: set[str]) -> list[dict[str, Any]]:
    if isinstance(params, str):
        raw: list[Any] = _split_names(params, "params")
    elif isinstance(params, Iterable):
        raw = list(params)
    else:
        raise ModelError("params must be a string of names or a sequence of names/specs")
    specs = []
    for item in raw:
        if isinstance(item, str):
            _split_names([item], "params")
            specs.append({"name": item, "positive": item in positive})
        elif isinstance(item, Mapping):
            spec = dict(item)
            unknown = set(spec) - {"name", "positive", "shape", "symmetric"}
            if unknown:
                raise ModelError(f"parameter spec has unknown keys: {', '.join(sorted(unknown))}")
            if "name" not in spec:
                raise ModelError(f"parameter spec needs a name: {item!r}")
            _split_names([spec["name"]], "params")
            spec["positive"] = bool(spec.get("positive", False)) or spec["name"] in positive
            specs.append(spec)
        else:
            raise ModelError(f"params entries must be names or specs, got {item!r}")
    names = [str(s["name"]) for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ModelError(f"params: names repeated: {', '.join(sorted(dup))}")
    return specs


def _symbols_for_spec(spec: Mapping[str, Any]) -> sp.Basic:
    assumptions = {"positive": True} if spec.get("positive") else {}
    shape = spec.get("shape")
    if shape is None:
        if spec.get("symmetric"):
            raise ModelError(f"parameter {spec['name']!r}: symmetric needs shape = [d, d]")
        return sp.Symbol(spec["name"], real=True, **assumptions)
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) not in (1, 2)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ModelError(f"parameter {spec['name']!r}: shape must be [n] or [rows, cols] of positive ints")
    if spec.get("symmetric"):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ModelError(f"parameter {spec['name']!r}: symmetric needs a square shape, got {list(shape)}")
        return symmetric(spec["name"], shape[0], **assumptions)
    if len(shape) == 1:
        return sp.ImmutableMatrix([sp.Symbol(f"{spec['name']}_{i}", real=True, **assumptions) for i in range(shape[0])])
    return matrix(spec["name"], shape[0], shape[1], **assumptions)
