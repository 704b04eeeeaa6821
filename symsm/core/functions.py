"""The elementary functions of symsm: one table, one record per function.

Every stage reads this table instead of keeping a list of its own:

* the formula parser's allow-list (symsm/model/parse.py: `Function.parser`);
* the model's check that data-dependent terms are smooth (symsm/model/model.py: `Function.smooth`,
  `NON_SMOOTH_FUNCTIONS`);
* the expression graph's function nodes and their derivatives (symsm/derive/graph.py) and the reverse-mode
  rules of the sympy path's tape (symsm/ir/ir.py): both use `Function.derivative`, one set of rules;
* the printers: `math.<scalar>` in the numba Python printer (symsm/backends/printers.py), which the
  numba-cuda printer inherits (numba-cuda lowers `math.*` to libdevice), and the C library's `<scalar>`
  (`<scalar>f` in float32) that the LLVM backend calls (symsm/backends/llvm/tac.py, kernels.py);
* the vectorised implementations of the LLVM backend (symsm/backends/llvm/vecmath.py: `Function.vector`).

A derivative rule is a sympy expression in `X`, the argument, and `Y`, the function's own value f(X): d f/d X,
written in terms of Y where that is cheaper (exp: Y; tanh: 1 − Y²), so a kernel reuses the value it has
already computed instead of calling a second function; elsewhere in the form sympy's `diff` gives.
tests/test_functions.py checks every rule against `sympy.diff`.

Genuinely special, so not function records: powers (x**y is sympy's Pow, an operator with its own rules
in every stage; `sqrt` is a record only because formulas call it, and builds a Pow).

Piecewise-smooth functions (`smooth=False`): `min` and `max` (n-ary; the graph and the kernels take them two
arguments at a time) are continuous, so they are allowed in a coordinate weight h (a capped weight
min(h(t), c), the distance min(x − a, b − x) to the ends of an interval), never in log f. Their derivative
rules, one per argument, use `heaviside` (H(0) = ½, sympy's convention: at a tie each argument takes half,
so the derivative of min(u, u) is still u′); `heaviside` itself is discontinuous, so no formula may call it,
and its derivative is 0 almost everywhere, which is what the objective's h′ needs (a.e., as in genscore).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.function import FunctionClass

__all__ = [
    "BY_CLASS",
    "BY_NAME",
    "FUNCTIONS",
    "NON_SMOOTH_FUNCTIONS",
    "PARSER_FUNCTIONS",
    "SMOOTH_FUNCTIONS",
    "WEIGHT_FUNCTIONS",
    "X2",
    "Function",
    "X",
    "Y",
    "derivative",
    "derivatives",
]

#: The argument and the value of a function in the derivative rules (plain Dummies: no assumptions, so
#: substituting a kernel's temporaries gives exactly the expression sympy's `diff` would).
X = sp.Dummy("X")
Y = sp.Dummy("Y")
#: the second argument of a two-argument function (min, max) in its derivative rules
X2 = sp.Dummy("X2")


@dataclass(frozen=True)
class Function:
    """One elementary function.

    name       : its name in formulas, in graph nodes ("fn" payload) and in `call` instructions
    sympy      : the sympy class (or, for sqrt, the constructor: it builds a Pow)
    derivative : d f/dX as a sympy expression in `X` and `Y` = f(X); None where f is not a function node;
                 for a two-argument function a tuple (∂f/∂X, ∂f/∂X2) in `X`, `X2` (its arguments) and `Y`
    scalar     : the scalar implementation's name: `math.<scalar>` in the Python and numba-cuda printers,
                 `<scalar>` / `<scalar>f` in the C library (LLVM backend); None: none exists
    vector     : the vectorised implementation in symsm/backends/llvm/vecmath.py, if there is one
    parser     : formulas may call it (the parser's allow-list)
    smooth     : allowed in data-dependent terms of log f (smooth on the interior of its domain)
    arity      : number of arguments; None: any number from two on (min, max)
    continuous : allowed in a coordinate weight h (continuous, piecewise smooth: h′ exists a.e.)
    python     : its name in generated Python when that is not `math.<scalar>` (the builtins min, max)
    """

    name: str
    sympy: Callable[..., sp.Expr]
    derivative: sp.Expr | tuple[sp.Expr, sp.Expr] | None
    scalar: str | None
    vector: str | None = None
    parser: bool = True
    smooth: bool = True
    arity: int | None = 1
    continuous: bool = True
    python: str | None = None

    @property
    def cls(self) -> FunctionClass | None:
        """The sympy class of the function's nodes (None for sqrt, which builds a Pow)."""
        return self.sympy if isinstance(self.sympy, FunctionClass) else None

    @property
    def math(self) -> str | None:
        """The name in generated Python (numba CPU and numba-cuda kernels)."""
        if self.python is not None:
            return self.python
        return None if self.scalar is None else f"math.{self.scalar}"

    def libm(self, single: bool = False) -> str | None:
        """The C library's symbol for this function in double (or, `single`, float) precision."""
        return None if self.scalar is None else (f"{self.scalar}f" if single else self.scalar)


_TWO_OVER_SQRT_PI = 2 / sp.sqrt(sp.pi)  # d erf/dx = 2/√π · exp(−x²)

FUNCTIONS: tuple[Function, ...] = (
    Function("exp", sp.exp, Y, "exp", vector="exp"),
    Function("log", sp.log, 1 / X, "log", vector="log"),
    # sqrt(x) is sympy's Pow(x, 1/2): differentiated and printed as a power, not as a function node
    Function("sqrt", sp.sqrt, None, "sqrt"),
    Function("sin", sp.sin, sp.cos(X), "sin"),
    Function("cos", sp.cos, -sp.sin(X), "cos"),
    Function("tan", sp.tan, 1 + Y**2, "tan"),
    Function("sinh", sp.sinh, sp.cosh(X), "sinh"),
    Function("cosh", sp.cosh, sp.sinh(X), "cosh"),
    Function("tanh", sp.tanh, 1 - Y**2, "tanh", vector="tanh"),
    Function("asin", sp.asin, 1 / sp.sqrt(1 - X**2), "asin", parser=False),
    Function("acos", sp.acos, -1 / sp.sqrt(1 - X**2), "acos", parser=False),
    Function("atan", sp.atan, 1 / (1 + X**2), "atan"),
    Function("asinh", sp.asinh, 1 / sp.sqrt(1 + X**2), "asinh"),
    # (X² − 1)^(−1/2), not sympy's 1/(√(X − 1)·√(X + 1)) (equal for X > 1, the domain): one root, and the graph's
    # second derivatives stay one power (the other form makes a graph-path kernel about 1.5 times as long)
    Function("acosh", sp.acosh, 1 / sp.sqrt(X**2 - 1), "acosh", parser=False),
    Function("atanh", sp.atanh, 1 / (1 - X**2), "atanh"),
    Function("log1p", log1p, 1 / (1 + X), "log1p", vector="log1p"),
    Function("expm1", expm1, Y + 1, "expm1", vector="expm1"),
    Function("erf", sp.erf, _TWO_OVER_SQRT_PI * sp.exp(-(X**2)), "erf"),
    Function("erfc", sp.erfc, -_TWO_OVER_SQRT_PI * sp.exp(-(X**2)), "erfc"),
    # piecewise smooth (see the module docstring): in weights only; libm's fmin/fmax (LLVM's minnum/maxnum)
    Function(
        "min", sp.Min, (sp.Heaviside(X2 - X), sp.Heaviside(X - X2)), "fmin",
        smooth=False, arity=None, python="min",
    ),
    Function(
        "max", sp.Max, (sp.Heaviside(X - X2), sp.Heaviside(X2 - X)), "fmax",
        smooth=False, arity=None, python="max",
    ),
    # the step in min's and max's derivatives: H(0) = ½; printed as a comparison by each printer
    Function("heaviside", sp.Heaviside, sp.Integer(0), None, parser=False, smooth=False, continuous=False),
)  # fmt: skip

BY_NAME: dict[str, Function] = {f.name: f for f in FUNCTIONS}
#: sympy class → record, for the functions that are nodes of an expression (all but sqrt)
BY_CLASS: dict[type, Function] = {f.cls: f for f in FUNCTIONS if f.cls is not None}
#: the formula language's functions, in the table's order
PARSER_FUNCTIONS: dict[str, Function] = {f.name: f for f in FUNCTIONS if f.parser}
#: classes allowed in data-dependent terms of log f (isinstance checks)
SMOOTH_FUNCTIONS: tuple[type, ...] = tuple(f.cls for f in FUNCTIONS if f.smooth and f.cls is not None)
#: classes allowed in a coordinate weight h besides the smooth ones (continuous, piecewise smooth: min, max)
WEIGHT_FUNCTIONS: tuple[type, ...] = tuple(
    f.cls for f in FUNCTIONS if not f.smooth and f.continuous and f.parser and f.cls is not None
)
#: classes refused in data-dependent terms because they are not differentiable everywhere
NON_SMOOTH_FUNCTIONS: tuple[type, ...] = (
    sp.Abs, sp.sign, sp.floor, sp.ceiling, sp.Piecewise, sp.Max, sp.Min, sp.Heaviside,
    sp.Mod, sp.frac, sp.DiracDelta, sp.re, sp.im, sp.arg, sp.conjugate,
)  # fmt: skip


def derivative(function: Function, argument: sp.Expr, value: sp.Expr) -> sp.Expr:
    """d f/d argument as a sympy expression of `argument` and `value` (= f(argument)), from the table's rule."""
    if function.derivative is None:
        raise ValueError(f"{function.name} has no derivative rule of its own (it is a power)")
    if isinstance(function.derivative, tuple):
        raise ValueError(f"{function.name} takes two arguments: use derivatives()")
    return function.derivative.xreplace({X: argument, Y: value})


def derivatives(function: Function, first: sp.Expr, second: sp.Expr, value: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(∂f/∂first, ∂f/∂second) of a two-argument function (min, max) at f(first, second) = `value`."""
    if not isinstance(function.derivative, tuple):
        raise ValueError(f"{function.name} is not a two-argument function")
    mapping = {X: first, X2: second, Y: value}
    d_first, d_second = function.derivative
    return d_first.xreplace(mapping), d_second.xreplace(mapping)
