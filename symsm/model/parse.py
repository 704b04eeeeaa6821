"""Safe parsing of formula strings into sympy expressions.

The string is parsed with `ast.parse` and the tree is walked against an allow-list: numbers, declared
names, entries of declared matrix parameters (``W[0, 1]``), the operators + - * / **, unary signs and
calls to a fixed set of smooth functions. The sympy expression is built node by node from that tree; the
user's text is never `eval`'d, `exec`'d, `sympify`'d or given to `parse_expr`, so nothing in it can run.

Formulas come from files and command lines, so every resource is bounded and hostile input is refused
quickly instead of exhausting memory or time:

* the text: its length, and only printable ASCII (no control or bidirectional-override characters that
  would make the formula shown differ from the formula parsed, no Unicode look-alikes of declared names);
* the tree: nesting depth (chains of + and * are flattened, so long sums are not deep);
* numbers: literal size, exponent size, and the size of every exact number sympy computes while
  folding constants (``9**9**9``, ``2**1000 * 2**1000 * ...`` or ``(2**1000*x)**1000`` would otherwise
  make sympy multiply numbers with millions of digits);
* work: sympy re-flattens the operands of every sum and product it builds, so re-wrapping one large
  sum many times (``2*(1 + 2*(1 + ... big))``) costs size × depth; the total is bounded.
"""

from __future__ import annotations

import ast
import itertools
import keyword
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping

import sympy as sp

from ..core.errors import ModelError
from ..core.functions import PARSER_FUNCTIONS
from . import hints

__all__ = ["CONSTANTS", "FUNCTIONS", "parse_formula"]

#: name → (sympy constructor, number of arguments): the allow-list, from symsm/core/functions.py
FUNCTIONS: dict[str, tuple[Callable[..., sp.Expr], int | None]] = {
    f.name: (f.sympy, f.arity) for f in PARSER_FUNCTIONS.values()
}
CONSTANTS: dict[str, sp.Expr] = {"pi": sp.pi, "E": sp.E}

MAX_LENGTH = 1_000_000  # characters; a d = 128 ICA model written out is about 250k
MAX_DEPTH = 100  # nesting of non-associative operations (chains of + and * are flattened)
MAX_INT_DIGITS = 30  # digits of an integer literal
MAX_EXPONENT = 1000  # |n| in x**n with a constant n, also after sympy combines (x**a)**b or x**a * x**b
MAX_CONSTANT_LOG10 = 308  # a constant power may not exceed the float64 range
MAX_NUMBER_DIGITS = 400  # digits of the numerator or denominator of any exact number in the result
MAX_STEP_DIGITS = 10_000  # digits one constant-folding step may produce before the result is checked
CHUNK_TERMS = 100  # terms per piece when a sum too long for Python's parser is cut into pieces
# Operands sympy may touch while building (see `_Builder.charge`): a legitimate formula costs a small
# multiple of its length (each operand is flattened once into its sum or product and once more by a
# function around it); re-wrapping a large subexpression costs its size at every level and runs out.
WORK_PER_CHARACTER = 2
MIN_WORK = 5_000

_FORBIDDEN_CHARACTER = re.compile(r"[^\x20-\x7e\t\n\r]")


def parse_formula(
    text: str,
    symbols: Mapping[str, sp.Symbol],
    *,
    indexed: Mapping[str, sp.MatrixBase] | None = None,
    max_length: int = MAX_LENGTH,
) -> sp.Expr:
    """Parse `text` into a sympy expression over `symbols` (name → Symbol).

    `indexed` maps the names of matrix or vector parameters to their matrices, so that the formula may
    write ``W[0, 1]`` (or ``b[2]`` for a vector) for an entry; every other subscript is refused.
    Raises `ModelError` that shows the offending fragment for anything outside the allow-list.
    """
    if not isinstance(text, str):
        raise ModelError(f"formula must be a string, got {type(text).__name__}")
    if len(text) > max_length:
        raise ModelError(f"formula is {len(text)} characters long; the limit is {max_length}")
    _check_characters(text)
    if not text.strip():
        raise ModelError("formula is empty")
    indexed = dict(indexed or {})
    for name in [*symbols, *indexed]:
        if name in FUNCTIONS or name in CONSTANTS:
            raise ModelError(f"symbol name {name!r} clashes with a function or constant of the formula language")
    for name, mat in indexed.items():
        if not isinstance(mat, sp.MatrixBase):
            raise ModelError(f"indexed symbol {name!r} must be a sympy Matrix, got {type(mat).__name__}")
    if "#" in text:
        raise ModelError("formula contains '#': comments are not part of the formula language")
    # Line breaks are spaces, so a long formula can span lines (in a model file) without brackets. Safe
    # because there are no comments or strings that a line break would end.
    text = " ".join(text.split())
    builder = _Builder(symbols, indexed, budget=MIN_WORK + WORK_PER_CHARACTER * len(text))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ModelError(_syntax_message(exc, text)) from None
    except (RecursionError, MemoryError):
        # Python builds the tree of a + b + c + ... recursively, so a sum of more than ~3000 terms fails
        # even though it is flat. Split the top-level sum with a (flat) regular-expression scan and parse each
        # term on its own; whatever is still too deep is refused.
        return _parse_long_sum(text, builder)
    return builder.build_text(text, tree.body)


def _check_characters(text: str) -> None:
    if "\x00" in text:
        raise ModelError("formula contains a NUL character")
    bad = _FORBIDDEN_CHARACTER.search(text)
    if bad is not None:
        ch = bad.group()
        raise ModelError(
            f"formula contains the character {ch!r} (U+{ord(ch):04X}) at position {bad.start()}; "
            "formulas are written in printable ASCII"
        )


def _syntax_message(exc: SyntaxError, text: str) -> str:
    where = f" at character {exc.offset}" if exc.offset else ""  # a text position: counted from 1
    return f"formula is not valid syntax{where}: {exc.msg}: {_clip(text)}{hints.syntax_hint(text)}"


def _parse_long_sum(text: str, builder: _Builder) -> sp.Expr:
    too_deep = ModelError(
        "formula is too deeply nested for Python's parser (about 3000 levels: a chain of operators inside "
        "parentheses, a long product or repeated signs); write long sums at the top level or split them"
    )
    cuts = _top_level_operators(text)
    if not cuts:
        raise too_deep
    # Chunks of CHUNK_TERMS terms; a chunk after the first starts with its binary operator, which then
    # reads as a sign of the chunk's first term: a - b + c == (a) + (-b + c).
    bounds = [0, *cuts[CHUNK_TERMS - 1 :: CHUNK_TERMS], len(text)]
    parts = []
    for start, stop in itertools.pairwise(bounds):
        piece = text[start:stop].strip()
        try:
            tree = ast.parse(piece, mode="eval")
        except SyntaxError as exc:
            raise ModelError(_syntax_message(exc, piece)) from None
        except (RecursionError, MemoryError):
            raise too_deep from None
        parts.append((False, builder.build_text(piece, tree.body)))
    builder.text = text
    return builder.add(parts, _clip(text))


# Numbers (with the sign of an exponent, underscores, hex/octal/binary), names, operators, brackets.
_TOKEN = re.compile(
    r"0[xXoObB][0-9a-fA-F_]+"
    r"|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?[jJ]?"
    r"|[A-Za-z_]\w*"
    r"|\*\*|//|<<|>>|[<>=!:]=|->|\S"
)
_KEYWORDS = frozenset(keyword.kwlist)


def _top_level_operators(text: str) -> list[int]:
    """Offsets of the binary + and - of `text` that are outside any brackets (where a long sum can be cut).

    A + or - is binary when it follows an operand (a number, a name that is not a keyword, a closing
    bracket); every other + or - is a sign. Text with quotes or comments is not cut (returns []): the
    formula language has neither. Each piece is then parsed through the same allow-list, and every
    operator that binds more loosely than + and - (comparisons, bitwise and boolean operators,
    conditionals, lambda, commas) is outside that allow-list, so a misjudged cut can only turn a formula
    into one that is refused, never change what an accepted formula means.
    """
    if any(ch in text for ch in "'\"#\\"):
        return []
    cuts: list[int] = []
    depth = 0
    after_operand = False
    for match in _TOKEN.finditer(text):
        tok = match.group()
        if tok in ("(", "[", "{"):
            depth += 1
            after_operand = False
        elif tok in (")", "]", "}"):
            depth -= 1
            after_operand = True
        elif tok in ("+", "-") and depth == 0 and after_operand:
            cuts.append(match.start())
            after_operand = False
        else:
            after_operand = (tok[0].isalnum() or tok[0] in "_.") and tok not in _KEYWORDS
    return cuts


def _clip(fragment: str, limit: int = 80) -> str:
    fragment = " ".join(fragment.split())
    return fragment if len(fragment) <= limit else fragment[: limit - 3] + "..."


def _digits(n: int) -> int:
    """Decimal digits of |n| (an upper bound, computed from the bit length without converting to text)."""
    return int(abs(n).bit_length() * 0.30103) + 1


class _Builder:
    def __init__(self, symbols: Mapping[str, sp.Symbol], indexed: Mapping[str, sp.MatrixBase], *, budget: int) -> None:
        self.symbols = dict(symbols)
        self.budget = budget
        self.indexed = dict(indexed)
        self.text = ""
        self.work = 0
        self.verified: set[sp.Basic] = set()

    # ------------------------------------------------------------------ messages
    def fragment(self, node: ast.AST) -> str:
        seg = ast.get_source_segment(self.text, node) or ast.dump(node)[:80]
        return _clip(seg)

    def where(self, node: ast.AST | str) -> str:
        return node if isinstance(node, str) else self.fragment(node)

    def refuse(self, node: ast.AST, what: str) -> ModelError:
        return ModelError(f"{what} is not allowed in a formula: {self.fragment(node)!r}")

    # ------------------------------------------------------------------ budgets
    def charge(self, units: int, where: str) -> None:
        """Count the operands sympy is about to touch; refuse once the formula has cost more than its budget.

        sympy flattens and sorts the operands of every sum and product it builds, and distributes a number
        over a sum, so building an expression costs about the number of top-level operands of its
        arguments. Counting that keeps re-wrapped large sums from costing size × depth unnoticed.
        """
        self.work += units
        if self.work > self.budget:
            raise ModelError(
                f"formula is too expensive to build (more than {self.budget} operand operations for its length, "
                f"near {where}); "
                "it repeats a large subexpression — write it out once or build the model in Python"
            )

    @staticmethod
    def _width(expr: sp.Basic) -> int:
        return len(expr.args) + 1 if isinstance(expr, (sp.Add, sp.Mul)) else 1

    def check_result(self, expr: sp.Expr, node: ast.AST | str) -> sp.Expr:
        """Every exact number sympy created in `expr` is small and every constant exponent is bounded.

        Only nodes not seen before are visited (operands were checked when they were built), so the checks
        cost as much as the new nodes sympy made: a number distributed over a sum, powers combined.
        """
        stack = [expr]
        while stack:
            item = stack.pop()
            if item in self.verified:
                continue
            self.verified.add(item)
            if item.is_Rational:
                if max(_digits(item.p), _digits(item.q)) > MAX_NUMBER_DIGITS:
                    raise ModelError(
                        f"formula produces a number with more than {MAX_NUMBER_DIGITS} digits: {self.where(node)!r}"
                    )
            elif isinstance(item, sp.Pow) and item.exp.is_Number and abs(item.exp) > MAX_EXPONENT:
                raise ModelError(
                    f"formula produces the exponent {_clip(str(item.exp), 40)}, beyond the limit {MAX_EXPONENT}: "
                    f"{self.where(node)!r}"
                )
            stack.extend(item.args)
        return expr

    def check_step(self, estimate: float, node: ast.AST | str) -> None:
        if estimate > MAX_STEP_DIGITS:
            raise ModelError(
                f"formula folds constants into a number with more than {MAX_STEP_DIGITS} digits: {self.where(node)!r}"
            )

    # ------------------------------------------------------------------ building
    def build_text(self, text: str, node: ast.expr) -> sp.Expr:
        self.text = text
        return self.build(node)

    def build(self, node: ast.expr, depth: int = 0) -> sp.Expr:
        if depth > MAX_DEPTH:
            raise ModelError(f"formula is nested more than {MAX_DEPTH} levels deep near {self.fragment(node)!r}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            return self._sum(node, depth)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            return self._product(node, depth)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            return self._power(node, depth)
        if isinstance(node, ast.BinOp):
            raise ModelError(
                str(self.refuse(node, f"the operator {type(node.op).__name__}")) + hints.operator_hint(node.op)
            )
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                operand = self.build(node.operand, depth + 1)
                self.charge(self._width(operand), "a minus sign")
                return self.check_result(-operand, node)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, depth + 1)
            raise self.refuse(node, f"the unary operator {type(node.op).__name__}")
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
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

    def _sum(self, node: ast.BinOp, depth: int) -> sp.Expr:
        chain = self._chain(node, ast.Add, ast.Sub)
        terms = [(negated, self.build(t, depth + 1)) for negated, t in chain]
        return self.add(terms, node)

    def add(self, terms: list[tuple[bool, sp.Expr]], where: ast.AST | str) -> sp.Expr:
        """The sum of already built terms (each with a flag `negated`), within the budgets."""
        self.charge(sum(self._width(t) for _, t in terms), "a sum")
        # Adding fractions multiplies their distinct denominators; bound that before sympy does it.
        denominators: set[int] = set()
        largest = 0
        for _, term in terms:
            for num in _coefficients(term):
                denominators.add(num.q)
                largest = max(largest, _digits(num.p))
        self.check_step(largest + sum(_digits(q) for q in denominators if q != 1), where)
        return self.check_result(sp.Add(*[-t if negated else t for negated, t in terms]), where)

    def _product(self, node: ast.BinOp, depth: int) -> sp.Expr:
        chain = self._chain(node, ast.Mult, ast.Div)
        factors = [self.build(f, depth + 1) for _, f in chain]
        self.charge(sum(self._width(f) for f in factors), "a product")
        for (inverted, f_node), f in zip(chain, factors, strict=True):
            if inverted and f.is_zero:
                raise ModelError(
                    f"division by zero in the formula: {self.fragment(f_node)!r} in {self.fragment(node)!r}"
                )
        # The product's coefficient is the product of the factors' coefficients (a number times a sum is
        # distributed over the sum's terms, so those count too).
        self.check_step(sum(max((_size(c) for c in _coefficients(f)), default=0) for f in factors), node)
        return self.check_result(
            sp.Mul(*[1 / f if inverted else f for (inverted, _), f in zip(chain, factors, strict=True)]), node
        )

    def _power(self, node: ast.BinOp, depth: int) -> sp.Expr:
        base = self.build(node.left, depth + 1)
        exponent = self.build(node.right, depth + 1)
        self.charge(self._width(base) + self._width(exponent), "a power")
        if exponent.is_number:
            if not exponent.is_real:
                raise ModelError(f"exponent must be real: {self.fragment(node)!r}")
            magnitude = abs(_as_float(exponent))
            if magnitude > MAX_EXPONENT:
                raise ModelError(
                    f"exponent {_clip(str(exponent), 40)} exceeds the limit {MAX_EXPONENT}: {self.fragment(node)!r}"
                )
            if base.is_number:
                b = abs(_as_float(base))
                if b != 0 and magnitude * abs(math.log10(b)) > MAX_CONSTANT_LOG10:
                    raise ModelError(f"constant power is too large: {self.fragment(node)!r}")
            # (c·x)**n becomes c**n · x**n: bound the digits of c**n before sympy computes it.
            self.check_step(magnitude * _size(_coefficient(base)), node)
        elif base.is_number and base.is_real and abs(_as_float(base)) > 1e6:
            raise ModelError(f"base of a variable power is too large: {self.fragment(node)!r}")
        return self.check_result(sp.Pow(base, exponent), node)

    def _constant(self, node: ast.Constant) -> sp.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.refuse(node, f"a literal of type {type(value).__name__}")
        if isinstance(value, int):
            if _digits(value) > MAX_INT_DIGITS + 1 or len(str(abs(value))) > MAX_INT_DIGITS:
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
        if name in self.indexed:
            rows, cols = self.indexed[name].shape
            example = f"{name}[0]" if 1 in (rows, cols) else f"{name}[0, 1]"
            raise ModelError(
                f"{name!r} is a {rows}×{cols} matrix parameter; a formula uses its entries, e.g. {example}"
            )
        declared = sorted([*self.symbols, *(f"{n}[...]" for n in self.indexed)])
        raise ModelError(
            f"undeclared name {name!r} in the formula; declared symbols: {_clip(', '.join(declared), 400)}"
            + hints.name_hint(name)
        )

    def _subscript(self, node: ast.Subscript) -> sp.Expr:
        """An entry of a declared matrix or vector parameter: ``W[i, j]`` or ``b[i]`` with literal indices."""
        if not isinstance(node.value, ast.Name) or node.value.id not in self.indexed:
            what = repr(node.value.id) if isinstance(node.value, ast.Name) else "an expression"
            declared = ", ".join(sorted(self.indexed)) or "none"
            raise ModelError(
                f"subscripting {what} is not allowed in a formula (only matrix and vector parameters can be "
                f"indexed; declared: {declared}): {self.fragment(node)!r}"
            )
        name = node.value.id
        mat = self.indexed[name]
        parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        indices = []
        for part in parts:
            if not (isinstance(part, ast.Constant) and type(part.value) is int and part.value >= 0):
                raise ModelError(
                    f"indices of {name!r} must be non-negative integer literals, got {self.fragment(part)!r} "
                    f"in {self.fragment(node)!r}"
                )
            indices.append(part.value)
        rows, cols = mat.shape
        if len(indices) == 1 and 1 in (rows, cols):
            shape: tuple[int, ...] = (rows * cols,)
        elif len(indices) == 2:
            shape = (rows, cols)
        else:
            wanted = "one index" if 1 in (rows, cols) else "two indices"
            raise ModelError(f"{name!r} has shape {rows}×{cols} and takes {wanted}: {self.fragment(node)!r}")
        if any(i >= n for i, n in zip(indices, shape, strict=True)):
            raise ModelError(f"index out of range for {name!r} with shape {rows}×{cols}: {self.fragment(node)!r}")
        return mat[indices[0]] if len(indices) == 1 else mat[indices[0], indices[1]]

    def _call(self, node: ast.Call, depth: int) -> sp.Expr:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a plain function name")
        name = node.func.id
        if name not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise ModelError(
                f"call to {name!r} is not allowed in a formula (allowed: {allowed}): {self.fragment(node)!r}"
                + hints.call_hint(name, name in self.symbols or name in self.indexed)
            )
        if node.keywords:
            raise self.refuse(node, "a keyword argument")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.refuse(node, "a starred argument")
        fn, arity = FUNCTIONS[name]
        if arity is None and len(node.args) < 2:  # min, max: n-ary
            raise ModelError(f"{name} takes two or more arguments, got {len(node.args)}: {self.fragment(node)!r}")
        if arity is not None and len(node.args) != arity:
            raise ModelError(f"{name} takes {arity} argument(s), got {len(node.args)}: {self.fragment(node)!r}")
        args = [self.build(a, depth + 1) for a in node.args]
        self.charge(sum(self._width(a) for a in args), f"{name}(...)")
        return self.check_result(fn(*args), node)


def _size(num: sp.Rational) -> int:
    return (_digits(num.p) if abs(num.p) > 1 else 0) + (_digits(num.q) if num.q > 1 else 0)


def _coefficient(expr: sp.Expr) -> sp.Rational:
    """The exact number in front of `expr` (1 if none): what (c·x)**n raises to the power n."""
    if expr.is_Rational:
        return expr
    if isinstance(expr, sp.Mul) and expr.args[0].is_Rational:
        return expr.args[0]
    return sp.S.One


def _as_float(expr: sp.Expr) -> float:
    """|expr| as a float for size checks; inf where it does not fit (never an exception)."""
    try:
        return float(expr)
    except (OverflowError, TypeError, ValueError):
        return math.inf


def _coefficients(expr: sp.Expr) -> Iterator[sp.Rational]:
    """The exact numbers sympy may combine when `expr` is an operand: its coefficient, or its terms' ones."""
    terms: Iterable[sp.Expr] = expr.args if isinstance(expr, sp.Add) else (expr,)
    for term in terms:
        coeff = term if term.is_Rational else (term.args[0] if isinstance(term, sp.Mul) else None)
        if coeff is not None and coeff.is_Rational:
            yield coeff


def _describe(node: ast.AST) -> str:
    names = {
        ast.Attribute: "attribute access",
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
