"""Code printers: sympy `PythonCodePrinter` subclasses, one per backend family.

Each override differs from sympy's default for a reason given in its docstring; nothing is done by
post-processing strings. Unknown symbols and unsupported functions raise instead of printing code
that would not compile.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import sympy as sp
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pycode import PythonCodePrinter

from ..core.errors import CodegenError
from ..core.functions import BY_CLASS

__all__ = ["ScalarMathPrinter"]


class ScalarMathPrinter(PythonCodePrinter):
    """Scalar Python for numba kernels (`math.*` calls), in float64 or float32.

    `names` maps every Symbol that may appear to its identifier in the generated code. For float32,
    every numeric constant becomes a module-level `np.float32` constant (collected in `constants`), so no
    expression is silently promoted to float64.
    """

    printmethod = "_symsm_scalar"
    language = "Python (numba)"

    def __init__(self, names: Mapping[sp.Symbol, str], dtype: type = np.float64) -> None:
        super().__init__({"fully_qualified_modules": True, "strict": True, "standard": "python3"})
        self.names = dict(names)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise CodegenError(f"dtype must be float32 or float64, got {self.dtype}")
        self.constants: dict[str, str] = {}  # name → definition, float32 only

    # -- names and numbers
    def _print_Symbol(self, expr: sp.Symbol) -> str:
        """Symbols map to sanitised identifiers fixed by the kernel, never to their sympy names."""
        try:
            return self.names[expr]
        except KeyError:
            raise CodegenError(f"symbol {expr} has no name in the generated kernel") from None

    _print_Dummy = _print_Symbol

    def number(self, value: float) -> str:
        """A typed literal: plain for float64, a named np.float32 constant for float32."""
        value = float(value)
        if value < 0:
            return "-" + self.number(-value)
        text = repr(value)
        if self.dtype == np.float64:
            return text
        name = "F32_" + text.replace(".", "_").replace("-", "m").replace("+", "")
        self.constants.setdefault(name, f"np.float32({text})")
        return name

    def _print_Integer(self, expr: sp.Integer) -> str:
        """Integers print as floats of the kernel's dtype (no int64 × float32 → float64 promotion)."""
        return self.number(int(expr))

    _print_Zero = _print_One = _print_NegativeOne = _print_Integer

    def _print_Rational(self, expr: sp.Rational) -> str:
        """Rationals print as one float literal (1/3 → 0.3333333333333333), not a division."""
        return self.number(float(expr))

    _print_Half = _print_Rational

    def _print_Float(self, expr: sp.Float) -> str:
        """Full float64 precision (repr), independent of sympy's working precision."""
        return self.number(float(expr))

    def _print_NumberSymbol(self, expr: sp.NumberSymbol) -> str:
        """π, e, ... as float literals (math.pi is a float64 global)."""
        return self.number(float(expr))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_NumberSymbol

    # -- arithmetic
    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        """Small integer powers as products, ±1/2 as sqrt; always parenthesised so precedence is safe."""
        base, exp = expr.base, expr.exp
        b = self.parenthesize(base, PRECEDENCE["Mul"] + 1)
        if exp.is_Integer:
            n = int(exp)
            if n == 0:
                return self.number(1)
            if n == 1:
                return self._print(base)
            if n < 0:
                return f"({self.number(1)}/{self._print(sp.Pow(base, -n, evaluate=False)) if n != -1 else b})"
            if n <= 4 and base.is_Atom:
                return "(" + "*".join([b] * n) + ")"
            return f"({b}**{n})"
        if exp == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        if exp == sp.Rational(-1, 2):
            return f"({self.number(1)}/math.sqrt({self._print(base)}))"
        if exp == sp.Rational(3, 2) and base.is_Atom:
            return f"({b}*math.sqrt({b}))"
        return f"({b}**{self.parenthesize(exp, PRECEDENCE['Pow'] + 1)})"

    def _print_Mul(self, expr: sp.Mul) -> str:
        """-1·x prints as -(x): a negative literal coefficient never meets a power operator."""
        coeff, rest = expr.as_coeff_Mul()
        if coeff == -1:
            return f"-{self.parenthesize(rest, PRECEDENCE['Mul'])}"
        return super()._print_Mul(expr)

    def _print_Function(self, expr: sp.Function) -> str:
        """Only functions of the table with a scalar math.* equivalent are printable (strict); min and max
        print as the builtins (n-ary, typed by numba in the kernel's dtype)."""
        function = BY_CLASS.get(type(expr))
        if function is None or function.math is None:
            raise CodegenError(f"function {type(expr).__name__} has no scalar implementation for numba kernels")
        return f"{function.math}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Heaviside(self, expr: sp.Heaviside) -> str:
        """H(u) with H(0) = ½ (the function table's convention) as a conditional expression of typed literals."""
        if expr.args[1:] not in ((), (sp.S.Half,)):
            raise CodegenError(f"Heaviside with H(0) = {expr.args[1]} is not supported (symsm uses H(0) = 1/2)")
        u = self.parenthesize(expr.args[0], PRECEDENCE["Relational"] + 1)
        one, zero, half = self.number(1), self.number(0), self.number(0.5)
        return f"({one} if {u} > {zero} else ({zero} if {u} < {zero} else {half}))"


# sympy's PythonCodePrinter prints every function it knows (gamma, floor, ...) through its own methods;
# route them all through the strict `_print_Function` so only the supported ones reach generated code.
for _name in [*PythonCodePrinter._kf, *(cls.__name__ for cls in BY_CLASS if cls is not sp.Heaviside)]:
    setattr(ScalarMathPrinter, f"_print_{_name.split('.')[-1]}", ScalarMathPrinter._print_Function)
