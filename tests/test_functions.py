"""The function table (symsm/core/functions.py) is consistent, and every consumer agrees with it.

* every derivative rule equals sympy's `diff` of the function at a few points inside its domain;
* the graph AD and the sympy path's tape both differentiate by the table's rules;
* the parser's allow-list is the table's parser functions (and its error text lists them);
* every printer prints every function in the table, or the record says there is no scalar implementation;
* the LLVM backend's vector implementations are the ones the table names.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

from symsm.backends.llvm.tac import TAC_FUNCTIONS, TacPrinter
from symsm.backends.llvm.vecmath import VECTOR_FUNCTIONS
from symsm.backends.printers import ScalarMathPrinter
from symsm.core.errors import CodegenError, ModelError
from symsm.core.functions import (
    BY_CLASS,
    BY_NAME,
    FUNCTIONS,
    NON_SMOOTH_FUNCTIONS,
    PARSER_FUNCTIONS,
    SMOOTH_FUNCTIONS,
    X,
    Y,
    derivative,
)
from symsm.derive.graph import ExprGraph
from symsm.ir.ir import _function_derivative
from symsm.model import parse
from symsm.model.parse import parse_formula

# points inside each function's (real) domain where the rule is checked
POINTS = {"log": (0.3, 1.0, 7.5), "acosh": (1.2, 2.0, 9.0), "asin": (-0.7, 0.1, 0.6), "acos": (-0.7, 0.1, 0.6)}
POINTS["atanh"] = POINTS["asin"]
POINTS["log1p"] = (-0.6, 0.2, 4.0)
DEFAULT_POINTS = (-1.3, 0.2, 0.9)
NODES = [f for f in FUNCTIONS if f.cls is not None and f.smooth]
#: piecewise smooth records (min, max: weights only) and the step in their derivatives
PIECEWISE = [f for f in FUNCTIONS if not f.smooth]


def test_names_are_unique_and_the_lookups_cover_the_table():
    assert len(BY_NAME) == len(FUNCTIONS)
    assert set(BY_CLASS.values()) == set(NODES) | set(PIECEWISE)
    assert {f.name for f in PIECEWISE} == {"min", "max", "heaviside"}
    assert all(BY_CLASS[f.cls] is f for f in NODES + PIECEWISE)
    assert set(SMOOTH_FUNCTIONS) == {f.cls for f in NODES if f.smooth}
    assert not set(SMOOTH_FUNCTIONS) & set(NON_SMOOTH_FUNCTIONS)


@pytest.mark.parametrize("function", NODES, ids=lambda f: f.name)
def test_derivative_rule_equals_sympy_diff(function):
    assert function.derivative is not None, f"{function.name} is a function node without a derivative rule"
    assert function.derivative.free_symbols <= {X, Y}
    u = sp.Symbol("u")
    rule = derivative(function, u, function.sympy(u))
    reference = sp.diff(function.sympy(u), u)
    for point in POINTS.get(function.name, DEFAULT_POINTS):
        exact = sp.Rational(str(point))
        difference = abs(complex((rule - reference).subs(u, exact).evalf(40)))
        assert difference <= 1e-30 * max(1.0, abs(complex(reference.subs(u, exact).evalf()))), (function.name, point)


def test_sqrt_is_a_power_and_no_node():
    sqrt = BY_NAME["sqrt"]
    assert sqrt.cls is None and sqrt.derivative is None
    assert isinstance(sqrt.sympy(X), sp.Pow)
    with pytest.raises(ValueError, match="power"):
        derivative(sqrt, X, Y)


@pytest.mark.parametrize("function", NODES, ids=lambda f: f.name)
def test_graph_and_tape_use_the_table_rule(function):
    u, value = sp.Symbol("u"), sp.Symbol("value")
    expected = derivative(function, u, value)
    assert _function_derivative(function.sympy(u), value) == expected
    g = ExprGraph(1)
    a = g.leaf(u, "data", 0)
    n = g.fn(function.name, a)
    ((arg, local),) = g.local_derivatives(n)
    assert arg == a
    got = g.expression(local)
    point = POINTS.get(function.name, DEFAULT_POINTS)[1]
    want = expected.xreplace({value: function.sympy(u)})
    assert abs(float(got.subs(u, point)) - float(want.subs(u, point))) <= 1e-14 * max(
        1.0, abs(float(want.subs(u, point)))
    )


def test_graph_folds_constants_with_the_scalar_implementation():
    g = ExprGraph(0)
    for f in NODES:
        point = POINTS.get(f.name, DEFAULT_POINTS)[1]
        folded = g.fn(f.name, g.const(point))
        assert g.is_const(folded)
        assert float(g.value(folded)) == getattr(math, f.scalar)(point)
    assert g.fn("sin", g.ZERO) == g.ZERO and g.fn("exp", g.ZERO) == g.ONE and g.fn("log", g.ONE) == g.ZERO


def test_the_parser_allows_exactly_the_table_parser_functions():
    assert set(parse.FUNCTIONS) == set(PARSER_FUNCTIONS)
    for name, (constructor, arity) in parse.FUNCTIONS.items():
        assert BY_NAME[name].sympy is constructor and BY_NAME[name].arity == arity
    x = sp.Symbol("x", real=True)
    for name, f in PARSER_FUNCTIONS.items():
        if f.arity is None:  # min, max: two arguments or more
            assert parse_formula(f"{name}(x, 1, x**2)", {"x": x}) == f.sympy(x, 1, x**2)
            with pytest.raises(ModelError, match="two or more arguments"):
                parse_formula(f"{name}(x)", {"x": x})
        else:
            assert parse_formula(f"{name}(x)", {"x": x}) == f.sympy(x)
    with pytest.raises(ModelError, match=r"allowed: " + ", ".join(sorted(PARSER_FUNCTIONS))):
        parse_formula("gamma(x)", {"x": x})
    for f in FUNCTIONS:
        if not f.parser:
            with pytest.raises(ModelError, match="is not allowed in a formula"):
                parse_formula(f"{f.name}(x)", {"x": x})


@pytest.mark.parametrize("function", [f for f in FUNCTIONS if f.arity == 1], ids=lambda f: f.name)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_printer_prints_every_function(function, dtype):
    x = sp.Symbol("x")
    expr = function.sympy(x)
    python = ScalarMathPrinter({x: "x"}, dtype).doprint(expr)
    tac = TacPrinter({x: "x"})
    tac.assign("out", expr)
    if function.scalar is None:
        return
    assert python == f"{function.math}(x)"
    from symsm.backends.cuda.generate import CudaMathPrinter

    assert CudaMathPrinter({x: "x"}, dtype).doprint(expr) == python
    if function.cls is not None:
        assert tac.code == [("out", "call", function.libm(), "x")]
        assert function.libm() in TAC_FUNCTIONS and function.libm(single=True) == function.libm() + "f"
    else:
        assert tac.code == [("out", function.name, "x")]  # sqrt: the power's own instruction


def test_printers_refuse_functions_outside_the_table():
    x = sp.Symbol("x")
    with pytest.raises(CodegenError, match="gamma has no scalar implementation"):
        ScalarMathPrinter({x: "x"}).doprint(sp.gamma(x))
    with pytest.raises(CodegenError, match="gamma has no implementation in the CPU kernels"):
        TacPrinter({x: "x"}).assign("out", sp.gamma(x))


def test_vector_implementations_are_the_ones_the_table_names():
    assert {f.vector for f in FUNCTIONS if f.vector is not None} == set(VECTOR_FUNCTIONS)
