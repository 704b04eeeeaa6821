"""Safe parsing of formulas written with vectors and matrices into tensor expressions (symsm/model/tensor.py).

The same discipline as symsm/model/parse.py, whose checks it reuses (printable ASCII only, bounded length
and nesting, literals bounded): the text is parsed with `ast.parse` and the tree is walked against an
allow-list, building `TensorExpr` nodes; nothing is `eval`'d or `sympify`'d. The language is the scalar
one (numbers, + - * / **, unary signs, the smooth functions of parse.FUNCTIONS applied elementwise, pi and
E) plus: declared vector and matrix names (the data vector and the parameters, by their group names),
``@`` (matrix products, numpy's rules), ``.T`` (transpose), ``sum(u)`` (all entries), ``dot(u, v)`` and
``quad(x, M)`` (xᵀMx). Shapes are checked as the tree is built; a mismatch names the fragment and the
shapes.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from typing import Any

import sympy as sp

from ..core.errors import ModelError
from . import tensor as T
from .parse import CONSTANTS, FUNCTIONS, MAX_DEPTH, MAX_INT_DIGITS, MAX_LENGTH, _check_characters, _clip

__all__ = ["parse_tensor_formula"]

_REDUCTIONS: dict[str, tuple[Callable[..., T.TensorExpr], int]] = {
    "sum": (T.tsum, 1),
    "dot": (T.dot, 2),
    "quad": (T.quad, 2),
}
MAX_NODES = 100_000


def parse_tensor_formula(text: str, names: Mapping[str, T.TensorExpr], *, max_length: int = MAX_LENGTH) -> T.TensorExpr:
    """Parse `text` into a tensor expression over `names` (name → data or parameter leaf)."""
    if not isinstance(text, str):
        raise ModelError(f"formula must be a string, got {type(text).__name__}")
    if len(text) > max_length:
        raise ModelError(f"formula is {len(text)} characters long; the limit is {max_length}")
    _check_characters(text)
    if not text.strip():
        raise ModelError("formula is empty")
    if "#" in text:
        raise ModelError("formula contains '#': comments are not part of the formula language")
    for name in names:
        if name in FUNCTIONS or name in CONSTANTS or name in _REDUCTIONS:
            raise ModelError(f"symbol name {name!r} clashes with a function or constant of the formula language")
    text = " ".join(text.split())
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ModelError(f"formula is not valid syntax{where}: {exc.msg}: {_clip(text)}") from None
    except (RecursionError, MemoryError):
        raise ModelError("formula is too deeply nested for Python's parser") from None
    return _Builder(text, names).build(tree.body, 0)


class _Builder:
    def __init__(self, text: str, names: Mapping[str, T.TensorExpr]) -> None:
        self.text = text
        self.names = dict(names)
        self.nodes = 0

    def fragment(self, node: ast.AST) -> str:
        return _clip(ast.get_source_segment(self.text, node) or ast.dump(node)[:80])

    def refuse(self, node: ast.AST, what: str) -> ModelError:
        return ModelError(f"{what} is not allowed in a formula: {self.fragment(node)!r}")

    def build(self, node: ast.expr, depth: int) -> T.TensorExpr:
        if depth > MAX_DEPTH:
            raise ModelError(f"formula is nested more than {MAX_DEPTH} levels deep near {self.fragment(node)!r}")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ModelError(f"formula has more than {MAX_NODES} operations")
        try:
            return self._build(node, depth)
        except ModelError as exc:
            if getattr(exc, "_located", False):
                raise
            located = ModelError(f"{exc} (in {self.fragment(node)!r})")
            located._located = True  # type: ignore[attr-defined]
            raise located from None

    def _build(self, node: ast.expr, depth: int) -> T.TensorExpr:
        if isinstance(node, ast.BinOp):
            ops = {ast.Add: "__add__", ast.Sub: "__sub__", ast.Mult: "__mul__", ast.Div: "__truediv__",
                   ast.Pow: "__pow__", ast.MatMult: "__matmul__"}  # fmt: skip
            method = ops.get(type(node.op))
            if method is None:
                raise self.refuse(node, f"the operator {type(node.op).__name__}")
            left = self.build(node.left, depth + 1)
            right = self.build(node.right, depth + 1)
            return getattr(left, method)(right)
        if isinstance(node, ast.UnaryOp):
            operand = self.build(node.operand, depth + 1)
            if isinstance(node.op, ast.USub):
                return T.as_tensor(-operand.value) if operand.op == "const" else -operand  # -2 is a number
            if isinstance(node.op, ast.UAdd):
                return operand
            raise self.refuse(node, f"the unary operator {type(node.op).__name__}")
        if isinstance(node, ast.Constant):
            return T.as_tensor(self._constant(node))
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Attribute):
            if node.attr != "T":
                raise self.refuse(node, f"the attribute .{node.attr} (only .T, the transpose, is)")
            return self.build(node.value, depth + 1).T
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise self.refuse(node, f"the syntax {type(node).__name__}")

    def _constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(node, f"a literal of type {type(value).__name__}")
        if isinstance(value, int):
            if len(str(abs(value))) > MAX_INT_DIGITS:
                raise ModelError(f"integer literal has more than {MAX_INT_DIGITS} digits: {self.fragment(node)!r}")
            return sp.Integer(value)
        if not math.isfinite(value):
            raise ModelError(f"number literal is not finite: {self.fragment(node)!r}")
        seg = ast.get_source_segment(self.text, node) or repr(value)
        if len(seg) <= 20 and "e" not in seg.lower():
            return sp.Rational(seg)  # as the scalar parser: short decimals are exact
        return sp.Float(value)

    def _name(self, node: ast.Name) -> T.TensorExpr:
        name = node.id
        if name.startswith("__"):
            raise ModelError(f"dunder names are not allowed in a formula: {name!r}")
        if name in self.names:
            return self.names[name]
        if name in CONSTANTS:
            return T.as_tensor(CONSTANTS[name])
        if name in FUNCTIONS or name in _REDUCTIONS:
            raise ModelError(f"function {name!r} must be called, e.g. {name}(x)")
        declared = ", ".join(f"{n} ({T._shape_text(e.shape)})" for n, e in self.names.items())
        raise ModelError(f"undeclared name {name!r} in the formula; declared: {_clip(declared, 400)}")

    def _call(self, node: ast.Call, depth: int) -> T.TensorExpr:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a plain function name")
        name = node.func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "a keyword or starred argument")
        fn: Callable[..., T.TensorExpr]
        if name in _REDUCTIONS:
            fn, arity = _REDUCTIONS[name]
        elif name in FUNCTIONS and name in T.ELEMENTWISE:
            fn, arity = getattr(T, name), 1
        else:
            allowed = ", ".join(sorted([*(f for f in FUNCTIONS if f in T.ELEMENTWISE), *_REDUCTIONS]))
            raise ModelError(
                f"call to {name!r} is not allowed in a formula (allowed: {allowed}): {self.fragment(node)!r}"
            )
        if len(node.args) != arity:
            raise ModelError(f"{name} takes {arity} argument(s), got {len(node.args)}: {self.fragment(node)!r}")
        args: list[Any] = [self.build(a, depth + 1) for a in node.args]
        return fn(*args)
