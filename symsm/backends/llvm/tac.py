"""Three-address code: the printer that turns kernel IR assignments into instruction tables.

The LLVM CPU backend (symsm/backends/llvm/) builds machine code from these tables with llvmlite, so
numba's Python front end never sees the (possibly very long) straight-line kernel bodies. An instruction
is a tuple ``(dst, op, *operands)``; an operand is a name (str) or a float constant. Ops:

    add sub mul div      binary arithmetic
    neg sqrt             unary
    call <fn>            elementary function: exp log tanh sin ... (one operand); fmin fmax (two operands)
    step                 Heaviside step H(u): 1 for u > 0, 0 for u < 0, ½ at 0 (min's and max's derivatives)
    pow                  general power (two operands)
    copy                 dst = operand

Evaluation order is fixed by the printer (left to right over sympy's argument order), so the same IR always
gives the same table and the same results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sympy as sp
from sympy.printing.printer import Printer

from ...core.errors import CodegenError
from ...core.functions import BY_CLASS

__all__ = ["TAC_FUNCTIONS", "Instruction", "TacPrinter"]

Instruction = tuple[Any, ...]
#: `call` names: the C library's (double) name of each function of symsm/core/functions.py that has one
TAC_FUNCTIONS = frozenset(f.libm() for f in BY_CLASS.values() if f.scalar is not None)


class TacPrinter(Printer):
    """Flattens sympy expressions into instructions; `_print_X` returns the operand holding X's value."""

    printmethod = "_symsm_tac"

    def __init__(self, names: Mapping[sp.Symbol, str], prefix: str = "v") -> None:
        super().__init__()
        self.names = dict(names)
        self.code: list[Instruction] = []
        self._prefix = prefix
        self._count = 0

    # -- public API
    def assign(self, target: str, expr: sp.Expr) -> None:
        """Append the instructions computing `expr` into the variable `target`."""
        start = len(self.code)
        operand = self._print(expr)
        last = self.code[-1] if len(self.code) > start else None
        if last is not None and last[0] == operand:
            self.code[-1] = (target, *last[1:])  # the final temporary is the target itself
        else:
            self.code.append((target, "copy", operand))

    def operand(self, expr: sp.Expr) -> Any:
        """The operand for `expr`, appending whatever instructions it needs."""
        return self._print(expr)

    # -- emission
    def _new(self, op: str, *args: Any) -> str:
        dst = f"{self._prefix}{self._count}"
        self._count += 1
        self.code.append((dst, op, *args))
        return dst

    def _binary(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, float) and isinstance(b, float):  # fold constants (never changes results)
            return {"add": a + b, "sub": a - b, "mul": a * b}.get(op, self._new(op, a, b))
        return self._new(op, a, b)

    # -- leaves
    def _print_Symbol(self, expr: sp.Symbol) -> str:
        try:
            return self.names[expr]
        except KeyError:
            raise CodegenError(f"symbol {expr} has no name in the generated kernel") from None

    _print_Dummy = _print_Symbol

    def _print_Number(self, expr: sp.Number) -> float:
        return float(expr)

    _print_Integer = _print_Rational = _print_Float = _print_Number
    _print_One = _print_Zero = _print_NegativeOne = _print_Half = _print_Number

    def _print_NumberSymbol(self, expr: sp.NumberSymbol) -> float:
        return float(expr)

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_NumberSymbol

    # -- arithmetic
    def _print_Add(self, expr: sp.Add) -> Any:
        acc: Any = None
        for term in _ordered(expr.args):
            coeff = term.as_coeff_Mul()[0]
            negative = coeff.is_Number and coeff < 0
            value = self._print(-term if negative else term)
            if acc is None:
                acc = (
                    self._new("neg", value)
                    if negative and not isinstance(value, float)
                    else (-value if negative else value)
                )
            else:
                acc = self._binary("sub" if negative else "add", acc, value)
        return acc

    def _print_Mul(self, expr: sp.Mul) -> Any:
        coeff, rest = expr.as_coeff_Mul()
        numerator: list[Any] = []
        denominator: list[Any] = []
        for factor in sp.Mul.make_args(rest):
            base, exp = factor.as_base_exp()
            if exp.is_Integer and exp < 0:
                denominator.append(self._print(sp.Pow(base, -exp)))
            else:
                numerator.append(self._print(factor))
        value: Any = None
        if coeff != 1 and coeff != -1:
            numerator.insert(0, float(coeff))
        for f in numerator:
            value = f if value is None else self._binary("mul", value, f)
        if denominator:
            den = denominator[0]
            for f in denominator[1:]:
                den = self._binary("mul", den, f)
            value = self._binary("div", 1.0 if value is None else value, den)
        if value is None:
            value = 1.0
        if coeff == -1:
            value = -value if isinstance(value, float) else self._new("neg", value)
        return value

    def _print_Pow(self, expr: sp.Pow) -> Any:
        base, exp = expr.base, expr.exp
        if exp.is_Integer:
            n = int(exp)
            if n == 0:
                return 1.0
            if n < 0:
                return self._binary("div", 1.0, self._print(sp.Pow(base, -n, evaluate=False)))
            return self._power(self._print(base), n)
        if exp == sp.Rational(1, 2):
            return self._new("sqrt", self._print(base))
        if exp == sp.Rational(-1, 2):
            return self._binary("div", 1.0, self._new("sqrt", self._print(base)))
        if exp.is_Rational and exp.q == 2:  # b**(n/2) = b**((n−1)/2) · sqrt(b) for odd n > 0
            b = self._print(base)
            n = int(exp.p)
            root = self._new("sqrt", b)
            if n > 0:
                return self._binary("mul", self._power(b, (n - 1) // 2), root) if n > 1 else root
            return self._binary(
                "div", 1.0, self._binary("mul", self._power(b, (-n - 1) // 2), root) if n < -1 else root
            )
        return self._new("pow", self._print(base), self._print(exp))

    def _power(self, b: Any, n: int) -> Any:
        """b**n for n ≥ 1 by repeated squaring (fixed order)."""
        result: Any = None
        square = b
        while n:
            if n & 1:
                result = square if result is None else self._binary("mul", result, square)
            n >>= 1
            if n:
                square = self._binary("mul", square, square)
        return result

    def _print_Function(self, expr: sp.Function) -> Any:
        function = BY_CLASS.get(type(expr))
        if function is None or function.scalar is None or len(expr.args) != 1:
            raise CodegenError(f"function {type(expr).__name__} has no implementation in the CPU kernels")
        return self._new("call", function.libm(), self._print(expr.args[0]))

    def _print_MinMaxBase(self, expr: sp.Expr) -> Any:
        """min and max, two operands at a time, in sympy's argument order (fixed, so results are too)."""
        name = BY_CLASS[type(expr)].libm()
        acc = self._print(expr.args[0])
        for a in expr.args[1:]:
            acc = self._new("call", name, acc, self._print(a))
        return acc

    _print_Min = _print_Max = _print_MinMaxBase

    def _print_Heaviside(self, expr: sp.Heaviside) -> Any:
        if expr.args[1:] not in ((), (sp.S.Half,)):
            raise CodegenError(f"Heaviside with H(0) = {expr.args[1]} is not supported (symsm uses H(0) = 1/2)")
        return self._new("step", self._print(expr.args[0]))

    def emptyPrinter(self, expr: Any) -> Any:
        if isinstance(expr, sp.Function):
            return self._print_Function(expr)
        raise CodegenError(f"cannot generate code for {type(expr).__name__}: {expr}")


def _ordered(args: Sequence[sp.Expr]) -> list[sp.Expr]:
    """Positive terms first, so a sum starts with an addition rather than a negation where it can."""
    return sorted(args, key=lambda t: bool(t.as_coeff_Mul()[0].is_Number and t.as_coeff_Mul()[0] < 0))
