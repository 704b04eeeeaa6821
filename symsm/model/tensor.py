"""Models written with vectors and matrices: tensor expressions that keep their structure.

``x = data_vector("x", d)``, ``W = param_matrix("W", k, d)``, ``b = param_vector("b", k)`` and
``sum(-2 * log(cosh(W @ x + b)))`` build a small tree of `TensorExpr` nodes in microseconds, whatever d is;
nothing is expanded into d² scalar products. The tree is what the structured derivation
(symsm/derive/structured.py) differentiates, block by block, with matrix products; its scalar sympy
expansion (`to_sympy`) is built only when something asks for it (small d, LaTeX, the scalar derivation
paths, CUDA).

Why our own small expression type and not sympy's MatrixExpr: MatrixSymbol products are cheap to build, but
elementwise functions of a vector (log cosh(Wx)) are awkward there (``applyfunc`` on an explicit matrix
expands it; ``ElementwiseApplyFunction`` differentiates poorly), ``.doit()``/``as_explicit`` are slow, and
the shapes, broadcasting rules and error messages of a sympy MatrixExpr are not numpy's. The users of symsm
write numpy: these nodes follow numpy's syntax (``@``, ``.T``, elementwise ``+ - * / **`` with scalars
broadcast, vectors 1-D so ``x.T @ M @ x`` is a scalar) and refuse everything else with a message that names
the expression and the shapes.

Shapes: ``()`` a scalar, ``(n,)`` a vector, ``(r, c)`` a matrix. Data are a vector (one row of X). Parameters
are scalars, vectors or matrices (optionally symmetric, optionally positive); their flat θ order and entry
names are the scalar spelling's (``W_0_0 … W_{r-1}_{c-1}`` row-major; a symmetric M contributes M_i_j for i ≤ j,
row by row; a vector b contributes b_0 …), so θ and results are interchangeable with a scalar model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from ..core.errors import ModelError
from ..core.functions import BY_NAME, PARSER_FUNCTIONS

__all__ = [
    "ELEMENTWISE",
    "TensorExpr",
    "as_tensor",
    "asinh",
    "atan",
    "atanh",
    "cos",
    "cosh",
    "data_vector",
    "dot",
    "erf",
    "erfc",
    "exp",
    "expm1",
    "log",
    "log1p",
    "param",
    "param_matrix",
    "param_scalar",
    "param_symmetric",
    "param_vector",
    "quad",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "tsum",
]

#: elementwise functions a tensor expression may apply: the formula language's (symsm/core/functions.py)
ELEMENTWISE = tuple(name for name, f in PARSER_FUNCTIONS.items() if f.smooth)

_BINARY = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
MAX_SIZE = 100_000  # entries of one data vector or parameter


@dataclass(frozen=True, eq=False)
class TensorExpr:
    """One node of a tensor expression: an operation, its operands and its shape.

    ``op`` is one of: "data", "param" (leaves, ``name`` set; a parameter may be ``symmetric``/``positive``),
    "const" (``value``, a sympy number), "add" "sub" "mul" "div" "pow" (elementwise, a scalar operand
    broadcast), "neg", "func" (``name`` an entry of ELEMENTWISE, elementwise), "matmul", "transpose" and
    "sum" (all entries, a scalar).
    """

    op: str
    args: tuple[TensorExpr, ...]
    shape: tuple[int, ...]
    name: str = ""
    value: Any = None
    symmetric: bool = False
    positive: bool = False

    # ------------------------------------------------------------------ structure
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def T(self) -> TensorExpr:
        if self.ndim < 2:
            return self  # a vector is 1-D (numpy): x.T @ M @ x is a scalar
        return _node("transpose", (self,), (self.shape[1], self.shape[0]))

    def leaves(self) -> list[TensorExpr]:
        """The data and parameter leaves, each once, in order of first appearance (left to right)."""
        seen: dict[int, TensorExpr] = {}
        for node in self.walk():
            if node.op in ("data", "param") and id(node) not in seen:
                seen[id(node)] = node
        return list(seen.values())

    def walk(self) -> list[TensorExpr]:
        """Every node once, operands before the nodes that use them."""
        order: list[TensorExpr] = []
        seen: set[int] = set()
        stack: list[tuple[TensorExpr, bool]] = [(self, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)
        return order

    @property
    def depends_on_data(self) -> bool:
        return any(n.op == "data" for n in self.walk())

    def canonical(self) -> str:
        """A text that identifies the expression (shared subexpressions written once: ``%k`` refers to line k)."""
        lines: list[str] = []
        index: dict[int, int] = {}
        for node in self.walk():
            refs = " ".join(f"%{index[id(a)]}" for a in node.args)
            if node.op in ("data", "param"):
                flags = "".join(f" {f}" for f in ("symmetric", "positive") if getattr(node, f))
                desc = f"{node.op} {node.name} {list(node.shape)}{flags}"
            elif node.op == "const":
                desc = f"const {sp.srepr(node.value)}"
            elif node.op == "func":
                desc = f"func {node.name} {refs}"
            else:
                desc = f"{node.op} {refs}"
            index[id(node)] = len(lines)
            lines.append(desc)
        return "\n".join(lines)

    def __str__(self) -> str:
        return _text(self)

    def __repr__(self) -> str:
        return f"TensorExpr({_text(self)!r}, shape={self.shape})"

    def __bool__(self) -> bool:
        raise TypeError("a tensor expression has no truth value (comparisons are not part of a model)")

    def __hash__(self) -> int:
        return id(self)

    # ------------------------------------------------------------------ operators
    def __add__(self, other: Any) -> TensorExpr:
        return _binary("add", self, other)

    def __radd__(self, other: Any) -> TensorExpr:
        return _binary("add", other, self)

    def __sub__(self, other: Any) -> TensorExpr:
        return _binary("sub", self, other)

    def __rsub__(self, other: Any) -> TensorExpr:
        return _binary("sub", other, self)

    def __mul__(self, other: Any) -> TensorExpr:
        return _binary("mul", self, other)

    def __rmul__(self, other: Any) -> TensorExpr:
        return _binary("mul", other, self)

    def __truediv__(self, other: Any) -> TensorExpr:
        return _binary("div", self, other)

    def __rtruediv__(self, other: Any) -> TensorExpr:
        return _binary("div", other, self)

    def __pow__(self, other: Any) -> TensorExpr:
        return _binary("pow", self, other)

    def __rpow__(self, other: Any) -> TensorExpr:
        return _binary("pow", other, self)

    def __neg__(self) -> TensorExpr:
        return _node("neg", (self,), self.shape)

    def __pos__(self) -> TensorExpr:
        return self

    def __matmul__(self, other: Any) -> TensorExpr:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> TensorExpr:
        return matmul(other, self)

    __array_ufunc__ = None  # numpy scalars on the left defer to these operators

    # ------------------------------------------------------------------ scalar expansion
    def to_sympy(self, symbols: dict[str, Any] | None = None) -> Any:
        """The scalar sympy expansion: a sympy expression (shape ()) or a numpy object array of them.

        `symbols` maps leaf names to their sympy values (numpy object arrays for vectors and matrices);
        missing leaves are made with the scalar spelling's names (see `leaf_symbols`).
        """
        values: dict[int, Any] = {}
        symbols = dict(symbols or {})
        for node in self.walk():
            if node.op in ("data", "param"):
                if node.name not in symbols:
                    symbols[node.name] = leaf_symbols(node)
                values[id(node)] = symbols[node.name]
            else:
                values[id(node)] = _expand(node, [values[id(a)] for a in node.args])
        return values[id(self)]


def _node(op: str, args: tuple[TensorExpr, ...], shape: tuple[int, ...], **kw: Any) -> TensorExpr:
    return TensorExpr(op, args, shape, **kw)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "scalar" if not shape else "×".join(str(n) for n in shape)


def _text(e: TensorExpr, depth: int = 0) -> str:
    """A readable formula for messages (clipped deep inside)."""
    if depth > 6:
        return "…"
    if e.op in ("data", "param"):
        return e.name
    if e.op == "const":
        return str(e.value)
    a = [_text(x, depth + 1) for x in e.args]
    if e.op in _BINARY:
        return f"({a[0]} {_BINARY[e.op]} {a[1]})"
    if e.op == "matmul":
        return f"({a[0]} @ {a[1]})"
    if e.op == "neg":
        return f"-{a[0]}"
    if e.op == "transpose":
        return f"{a[0]}.T"
    if e.op == "func":
        return f"{e.name}({a[0]})"
    return f"{e.op}({a[0]})"


def as_tensor(value: Any, what: str = "operand") -> TensorExpr:
    """A tensor expression for `value`: itself, or a constant for a finite real Python/numpy/sympy number."""
    if isinstance(value, TensorExpr):
        return value
    if isinstance(value, bool):
        raise ModelError(f"{what}: a boolean is not a number of a model")
    if isinstance(value, (int, np.integer)):
        return _node("const", (), (), value=sp.Integer(int(value)))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ModelError(f"{what}: constants must be finite, got {value!r}")
        v = float(value)
        return _node("const", (), (), value=sp.Integer(int(v)) if v.is_integer() else sp.Float(v))
    if isinstance(value, sp.Expr) and value.is_number and value.is_real and value.is_finite:
        return _node("const", (), (), value=value)
    raise ModelError(
        f"{what}: expected a tensor expression (symsm.data_vector, symsm.param_matrix, ...) or a real number, "
        f"got {type(value).__name__} {value!r}"[:300]
    )


def _binary(op: str, left: Any, right: Any) -> TensorExpr:
    a, b = as_tensor(left), as_tensor(right)
    if a.shape == b.shape or not b.shape:
        shape = a.shape
    elif not a.shape:
        shape = b.shape
    else:
        raise ModelError(
            f"elementwise '{_BINARY[op]}' needs equal shapes or a scalar operand: {_text(a)} has shape "
            f"{_shape_text(a.shape)} and {_text(b)} has shape {_shape_text(b.shape)}"
        )
    if op == "div" and b.op == "const" and b.value == 0:
        raise ModelError(f"division by zero: {_text(a)} / {_text(b)}")
    return _node(op, (a, b), shape)


def matmul(left: Any, right: Any) -> TensorExpr:
    """``left @ right`` with numpy's rules for 1-D and 2-D operands; mismatched shapes are refused by name."""
    a, b = as_tensor(left, "@"), as_tensor(right, "@")
    if not a.shape or not b.shape:
        raise ModelError(f"'@' needs vectors or matrices, not scalars: {_text(a)} @ {_text(b)} (use * for scalars)")
    inner_a = a.shape[-1]
    inner_b = b.shape[0]
    if inner_a != inner_b:
        raise ModelError(
            f"shapes do not match in {_text(a)} @ {_text(b)}: {_shape_text(a.shape)} @ {_shape_text(b.shape)} "
            f"({inner_a} ≠ {inner_b})"
        )
    shape = a.shape[:-1] + b.shape[1:]
    return _node("matmul", (a, b), shape)


def _func(name: str) -> Callable[[Any], TensorExpr]:
    def apply(u: Any) -> TensorExpr:
        e = as_tensor(u, f"{name}(...)")
        return _node("func", (e,), e.shape, name=name)

    apply.__name__ = name
    apply.__doc__ = f"{name} applied to every entry of a tensor expression."
    return apply


exp = _func("exp")
log = _func("log")
sqrt = _func("sqrt")
sin = _func("sin")
cos = _func("cos")
tan = _func("tan")
sinh = _func("sinh")
cosh = _func("cosh")
tanh = _func("tanh")
atan = _func("atan")
asinh = _func("asinh")
atanh = _func("atanh")
log1p = _func("log1p")
expm1 = _func("expm1")
erf = _func("erf")
erfc = _func("erfc")


def tsum(u: Any) -> TensorExpr:
    """The sum of every entry of a tensor expression: a scalar."""
    e = as_tensor(u, "sum(...)")
    if not e.shape:
        return e
    return _node("sum", (e,), ())


def dot(u: Any, v: Any) -> TensorExpr:
    """uᵀv for two vectors of the same length."""
    a, b = as_tensor(u, "dot"), as_tensor(v, "dot")
    if a.ndim != 1 or b.ndim != 1:
        raise ModelError(
            f"dot needs two vectors: {_text(a)} ({_shape_text(a.shape)}), {_text(b)} ({_shape_text(b.shape)})"
        )
    return matmul(a, b)


def quad(x: Any, M: Any) -> TensorExpr:
    """The quadratic form xᵀ M x (M square)."""
    a, m = as_tensor(x, "quad"), as_tensor(M, "quad")
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ModelError(f"quad(x, M) needs a square matrix M, got {_text(m)} of shape {_shape_text(m.shape)}")
    return matmul(matmul(a, m), a)


# ------------------------------------------------------------------------------------------ leaves
def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ModelError(f"a tensor name must be letters and digits starting with a letter, got {name!r}")
    return name


def _check_size(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ModelError(f"{what} must be a positive integer, got {n!r}")
    if n > MAX_SIZE:
        raise ModelError(f"{what} = {n} exceeds the limit {MAX_SIZE}")
    return int(n)


def data_vector(name: str, d: int) -> TensorExpr:
    """The data: one row x ∈ Rᵈ of X. Its coordinates are named ``{name}_0 … {name}_{d-1}``."""
    return _node("data", (), (_check_size(d, "d"),), name=_check_name(name))


def param_scalar(name: str, *, positive: bool = False) -> TensorExpr:
    """A scalar parameter."""
    return _node("param", (), (), name=_check_name(name), positive=bool(positive))


param = param_scalar


def param_vector(name: str, n: int, *, positive: bool = False) -> TensorExpr:
    """A vector parameter of n entries ``{name}_0 …`` (θ order: by index)."""
    return _node("param", (), (_check_size(n, "n"),), name=_check_name(name), positive=bool(positive))


def param_matrix(name: str, rows: int, cols: int, *, symmetric: bool = False, positive: bool = False) -> TensorExpr:
    """A matrix parameter with entries ``{name}_{i}_{j}`` in θ row by row (as `symsm.matrix`); `symmetric`: the
    d(d+1)/2 entries i ≤ j (as `symsm.symmetric`)."""
    r, c = _check_size(rows, "rows"), _check_size(cols, "cols")
    if r * c > MAX_SIZE:
        raise ModelError(f"matrix {name!r} of {r}×{c} entries exceeds the limit {MAX_SIZE}")
    if symmetric and r != c:
        raise ModelError(f"symmetric matrix {name!r} must be square, got {r}×{c}")
    return _node("param", (), (r, c), name=_check_name(name), symmetric=bool(symmetric), positive=bool(positive))


def param_symmetric(name: str, d: int, *, positive: bool = False) -> TensorExpr:
    """A symmetric d×d matrix parameter (θ holds M_i_j for i ≤ j, row by row)."""
    return param_matrix(name, d, d, symmetric=True, positive=positive)


def leaf_entry_names(node: TensorExpr) -> list[str]:
    """The scalar names of a leaf's θ entries (or data coordinates), in θ order."""
    n = node.name
    if not node.shape:
        return [n]
    if len(node.shape) == 1:
        return [f"{n}_{i}" for i in range(node.shape[0])]
    r, c = node.shape
    if node.symmetric:
        return [f"{n}_{i}_{j}" for i in range(r) for j in range(i, c)]
    return [f"{n}_{i}_{j}" for i in range(r) for j in range(c)]


def leaf_symbols(node: TensorExpr) -> Any:
    """The leaf as sympy Symbols with the scalar spelling's names and assumptions (numpy object array)."""
    kw = {"positive": True} if node.positive else {}
    if not node.shape:
        return sp.Symbol(node.name, real=True, **kw)
    if len(node.shape) == 1:
        return np.array([sp.Symbol(f"{node.name}_{i}", real=True, **kw) for i in range(node.shape[0])], dtype=object)
    r, c = node.shape
    out = np.empty((r, c), dtype=object)
    for i in range(r):
        for j in range(c):
            a, b = (min(i, j), max(i, j)) if node.symmetric else (i, j)
            out[i, j] = sp.Symbol(f"{node.name}_{a}_{b}", real=True, **kw)
    return out


def _sympy_function(name: str) -> Any:
    return BY_NAME[name].sympy


def _expand(node: TensorExpr, args: list[Any]) -> Any:
    op = node.op
    if op == "const":
        return node.value
    if op in _OPS:
        return _pairwise(_OPS[op], *args)
    if op == "neg":
        return _elementwise(lambda v: -v, args[0])
    if op == "func":
        return _elementwise(_sympy_function(node.name), args[0])
    if op == "transpose":
        return args[0].T
    if op == "sum":
        return sp.Add(*np.asarray(args[0]).ravel())
    if op == "matmul":
        a, b = args
        if a.ndim == 1 and b.ndim == 1:
            return sp.Add(*[p * q for p, q in zip(a, b, strict=True)])
        if a.ndim == 2 and b.ndim == 1:
            return np.array([sp.Add(*[p * q for p, q in zip(row, b, strict=True)]) for row in a], dtype=object)
        if a.ndim == 1 and b.ndim == 2:
            return np.array([sp.Add(*[p * q for p, q in zip(a, col, strict=True)]) for col in b.T], dtype=object)
        return np.array(
            [[sp.Add(*[p * q for p, q in zip(row, col, strict=True)]) for col in b.T] for row in a], dtype=object
        )
    raise ModelError(f"cannot expand the tensor operation {op!r}")


def _elementwise(fn: Any, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.array([fn(v) for v in value.ravel()] + [None], dtype=object)[:-1].reshape(value.shape)
    return fn(value)


_OPS = {
    "add": lambda p, q: p + q,
    "sub": lambda p, q: p - q,
    "mul": lambda p, q: p * q,
    "div": lambda p, q: p / q,
    "pow": sp.Pow,
}


def _pairwise(fn: Any, a: Any, b: Any) -> Any:
    """fn applied entry by entry (a scalar broadcast), on sympy scalars or numpy object arrays of them."""
    if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        return fn(a, b)
    a_, b_ = np.broadcast_arrays(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    flat = [fn(p, q) for p, q in zip(a_.ravel(), b_.ravel(), strict=True)]
    return np.array([*flat, None], dtype=object)[:-1].reshape(a_.shape)
