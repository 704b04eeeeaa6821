"""Safe parsing of formula strings into sympy expressions.

The string is parsed with `ast.parse` and the tree is walked against an allow-list: numbers, declared
names, the operators + - * / **, unary signs and calls to a fixed set of smooth functions. The sympy
expression is built node by node from that tree; the user's text is never `eval`'d, `exec`'d,
`sympify`'d or given to `parse_expr`. Sizes are bounded (formula length, nesting depth, literal size,
exponents, sizes of constant powers) so hostile input is refused quickly instead of exhausting memory.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .errors import ModelError

__all__ = ["CONSTANTS", "FUNCTIONS", "parse_formula"]

FUNCTIONS: dict[str, tuple[Callable[..., sp.Expr], int]] = {
    "exp": (sp.exp, 1),
    "log": (sp.log, 1),
    "sqrt": (sp.sqrt, 1),
    "sin": (sp.sin, 1),
    "cos": (sp.cos, 1),
    "tan": (sp.tan, 1),
    "sinh": (sp.sinh, 1),
    "cosh": (sp.cosh, 1),
    "tanh": (sp.tanh, 1),
    "atan": (sp.atan, 1),
    "asinh": (sp.asinh, 1),
    "atanh": (sp.atanh, 1),
    "log1p": (log1p, 1),
    "expm1": (expm1, 1),
    "erf": (sp.erf, 1),
    "erfc": (sp.erfc, 1),
}
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}

MAX_LENGTH = 1_000_000  # characters; a d = 128 ICA model written out is about 250k
MAX_DEPTH = 100  # nesting of non-associative operations (chains of + and * are flattened)
MAX_INT_DIGITS = 30
MAX_EXPONENT = 1000  # |n| in x**n with a constant n
MAX_CONSTANT_LOG10 = 308  # a constant power may not exceed the float64 range


def parse_formula(text: str, symbols: Mapping[str, sp.Symbol], *, max_length: int = MAX_LENGTH) -> sp.Expr:
    """Parse `text` into a sympy expression over `symbols` (name → Symbol).

    Raises `ModelError` that shows the offending fragment for anything outside the allow-list.
    """
    if not isinstance(text, str):
        raise ModelError(f"formula must be a string, got {type(text).__name__}")
    if len(text) > max_length:
        raise ModelError(f"formula is {len(text)} characters long; the limit is {max_length}")
    if "\x00" in text:
        raise ModelError("formula contains a NUL character")
    if not text.strip():
        raise ModelError("formula is empty")
    for name in symbols:
        if name in FUNCTIONS or name in CONSTANTS:
            raise ModelError(f"symbol name {name!r} clashes with a function or constant of the formula language")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ModelError(f"formula is not valid syntax{where}: {exc.msg}: {_clip(text)}") from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ModelError(f"formula is too deeply nested or too large to parse: {type(exc).__name__}") from None
    return _Builder(text.strip(), symbols).build(tree.body)


def _clip(fragment: str, limit: int = 80) -> str:
    fragment = fragment.strip()
    return fragment if len(fragment) <= limit else fragment[: limit - 3] + "..."


class _Builder:
    def __init__(self, text: str, symbols: Mapping[str, sp.Symbol]) -> None:
        self.text = text
        self.symbols = dict(symbols)

    def fragment(self, node: ast.AST) -> str:
        seg = ast.get_source_segment(self.text, node) or ast.dump(node)[:80]
        return _clip(seg)

    def refuse(self, node: ast.AST, what: str) -> ModelError:
        return ModelError(f"{what} is not allowed in a formula: {self.fragment(node)!r}")

    def build(self, node: ast.expr, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise ModelError(f"formula is nested more than {MAX_DEPTH} levels deep near {self.fragment(node)!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            chain = self._chain(node, ast.Add, ast.Sub)
            return sp.Add(*[self.build(t, depth + 1) * (-1 if neg else 1) for neg, t in chain])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            chain = self._chain(node, ast.Mult, ast.Div)
            factors = [self.build(f, depth + 1) for _, f in chain]
            for (inverted, f_node), f in zip(chain, factors, strict=True):
                if inverted and f.is_zero:
                    raise ModelError(f"division by zero in the formula: {self.fragment(f_node)!r}")
            return sp.Mul(*[1 / f if inverted else f for (inverted, _), f in zip(chain, factors, strict=True)])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self._power(node, depth)
        if isinstance(node, ast.BinOp):
            raise self.refuse(node, f"the operator {type(node.op).__name__}")
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return -self.build(node.operand, depth + 1)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, depth + 1)
            raise self.refuse(node, f"the unary operator {type(node.op).__name__}")
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise self.refuse(node, _describe(node))

    # Chains like a + b - c + ... are left-nested BinOps as deep as they are long; walk them iteratively.
    @staticmethod
    def _chain(node: ast.expr, keep: type, flip: type) -> list[tuple[bool, ast.expr]]:
        """Operands of a left-nested chain of `keep`/`flip` operators, each with a flag `flipped`."""
        items: list[tuple[bool, ast.expr]] = []
        while isinstance(node, ast.BinOp) and isinstance(node.op, (keep, flip)):
            items.append((isinstance(node.op, flip), node.right))
            node = node.left
        items.append((False, node))
        return items[::-1]

    def _power(self, node: ast.BinOp, depth: int) -> sp.Expr:
        base = self.build(node.left, depth + 1)
        exponent = self.build(node.right, depth + 1)
        if exponent.is_number:
            if not exponent.is_real:
                raise ModelError(f"exponent must be real: {self.fragment(node)!r}")
            if abs(float(exponent)) > MAX_EXPONENT:
                raise ModelError(f"exponent {exponent} exceeds the limit {MAX_EXPONENT}: {self.fragment(node)!r}")
            if base.is_number:
                b = abs(float(base))
                if b != 0 and abs(float(exponent)) * abs(math.log10(b)) > MAX_CONSTANT_LOG10:
                    raise ModelError(f"constant power is too large: {self.fragment(node)!r}")
        elif base.is_number and base.is_real and abs(float(base)) > 1e6:
            raise ModelError(f"base of a variable power is too large: {self.fragment(node)!r}")
        return sp.Pow(base, exponent)

    def _constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(node, f"a {type(value).__name__} literal")
        if isinstance(value, int):
            if len(str(abs(value))) > MAX_INT_DIGITS:
                raise ModelError(f"integer literal has more than {MAX_INT_DIGITS} digits: {self.fragment(node)!r}")
            return sp.Integer(value)
        if not math.isfinite(value):
            raise ModelError(f"number literal is not finite: {self.fragment(node)!r}")
        # Decimal literals become exact rationals where they are short ("0.5" → 1/2), keeping derivations exact.
        seg = ast.get_source_segment(self.text, node) or repr(value)
        if len(seg) <= 20 and "e" not in seg.lower():
            return sp.Rational(seg)
        return sp.Float(value)

    def _name(self, node: ast.Name) -> sp.Expr:
        name = node.id
        if name.startswith("__") or name.endswith("__"):
            raise ModelError(f"dunder names are not allowed in a formula: {name!r}")
        if name in self.symbols:
            return self.symbols[name]
        if name in CONSTANTS:
            return CONSTANTS[name]
        if name in FUNCTIONS:
            raise ModelError(f"function {name!r} must be called, e.g. {name}(x)")
        raise ModelError(
            f"undeclared name {name!r} in the formula; declared symbols: {', '.join(sorted(self.symbols))}"
        )

    def _call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a plain function name")
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ModelError(
                f"call to {name!r} is not allowed in a formula (allowed: {allowed}): {self.fragment(node)!r}"
            )
        if node.keywords:
            raise self.refuse(node, "keyword arguments")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "starred arguments")
        fn, arity = FUNCTIONS[name]
        if len(node.args) != arity:
            raise ModelError(f"{name} takes {arity} argument(s), got {len(node.args)}: {self.fragment(node)!r}")
        return fn(*[self.build(a, depth + 1) for a in node.args])


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
        ast.Subscript: "subscripting",
        ast.Lambda: "a lambda",
        ast.ListComp: "a comprehension",
        ast.SetComp: "a comprehension",
        ast.DictComp: "a comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.Starred: "a starred expression",
        ast.JoinedStr: "an f-string",
        ast.FormattedValue: "an f-string",
        ast.IfExp: "a conditional expression",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operation",
        ast.NamedExpr: "an assignment expression",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.Slice: "a slice",
    }
    return names.get(type(node), f"the syntax {type(node).__name__}")
