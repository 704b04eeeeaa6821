"""symsm.codegen: the IR passes, reverse accumulation, printers and templates."""

from __future__ import annotations

import jinja2
import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from symsm.backends.printers import ScalarMathPrinter
from symsm.core.errors import CodegenError
from symsm.core.templates import render, template_dir
from symsm.ir.ir import Tape, build_forward_ir, build_value_and_grad_ir, hoist_invariants

x0, x1 = sp.symbols("x0 x1", real=True)
a, b, c = sp.symbols("a b c", real=True)


def test_hoist_groups_invariant_operands():
    hoisted, (e,) = hoist_invariants([a * b * x0 + sp.exp(a) + x1 * sp.sin(b)], {x0, x1}, sp.numbered_symbols("h"))
    targets = {h.target: h.expr for h in hoisted}
    assert a * b in targets.values() and sp.sin(b) in targets.values()
    assert e.free_symbols <= {x0, x1} | set(targets)


def _evaluate_ir(ir, theta_vals, rows):
    """Run a KernelIR with sympy substitution (an independent interpreter of the IR)."""
    env = dict(zip(ir.theta, theta_vals, strict=True))
    for assign in ir.prologue:
        env[assign.target] = assign.expr.xreplace(env)
    sums = [sp.Integer(0)] * len(ir.sums)
    outputs = []
    for row in rows:
        local = dict(env)
        local.update(zip(ir.data, row, strict=True))
        for assign in ir.body:
            local[assign.target] = assign.expr.xreplace(local)
        sums = [s + e.xreplace(local) for s, e in zip(sums, ir.sums, strict=True)]
        outputs.append([e.xreplace(local) for e in ir.outputs])
    env.update(zip(ir.sum_symbols, sums, strict=True))
    env[ir.n_symbol] = len(rows)
    for assign in ir.epilogue:
        env[assign.target] = assign.expr.xreplace(env)
    return [sp.N(r.xreplace(env)) for r in ir.results], outputs


def test_reverse_accumulation_equals_symbolic_gradient():
    integrand = sp.tanh(a * x0 + b * x1) ** 2 * c + sp.exp(-c * x0**2) / (1 + a**2) + a * b * x1**3
    theta, data = (a, b, c), (x0, x1)
    ir = build_value_and_grad_ir(integrand, theta, data)
    rows = [(sp.Rational(1, 3), sp.Rational(-1, 2)), (sp.Rational(2, 5), sp.Rational(7, 4))]
    vals = (sp.Rational(3, 10), sp.Rational(-6, 5), sp.Rational(1, 2))
    results, _ = _evaluate_ir(ir, vals, rows)
    subs_theta = dict(zip(theta, vals, strict=True))
    expected_value = sum(integrand.xreplace({**subs_theta, x0: r[0], x1: r[1]}) for r in rows)
    assert results[0] == pytest.approx(float(expected_value), rel=1e-13)
    for k, p in enumerate(theta):
        g = sp.diff(integrand, p)
        expected = sum(g.xreplace({**subs_theta, x0: r[0], x1: r[1]}) for r in rows)
        assert results[1 + k] == pytest.approx(float(expected), rel=1e-12, abs=1e-14)


def test_theta_only_work_leaves_the_loop():
    integrand = (x0 - a) ** 2 / (b**2 + c**2) + sp.exp(a * b)
    ir = build_value_and_grad_ir(integrand, (a, b, c), (x0,))
    for assign in ir.body:
        assert assign.expr.free_symbols & ({x0} | {s.target for s in ir.body}), assign
    assert not any(assign.expr.has(sp.exp) for assign in ir.body)  # exp(a·b) is computed once per call
    assert len(ir.sums) <= 1 + 3  # the value and one accumulator per parameter at most


def test_forward_ir_per_sample_outputs():
    ir = build_forward_ir([x0 * a, sp.exp(b) + x1], (a, b), (x0, x1), mode="per_sample")
    _, outs = _evaluate_ir(ir, (2, 0), [(3, 4)])
    assert [float(v) for v in outs[0]] == [6.0, 5.0]
    with pytest.raises(ValueError, match="mode"):
        build_forward_ir([x0], (a,), (x0,), mode="other")


def test_tape_hash_conses_and_refuses_unknown_nodes():
    tape = Tape("t")
    first = tape.emit(sp.exp(a * x0) + sp.exp(a * x0) * x1)
    n = len(tape.ops)
    assert tape.emit(sp.exp(a * x0)) in tape.defs and len(tape.ops) == n
    assert first in tape.defs
    with pytest.raises(CodegenError):
        tape.emit(sp.Integral(x0, x0))


@settings(max_examples=60, deadline=None)
@given(st.integers(-6, 6).filter(lambda n: n != 0), st.floats(0.1, 3.0))
def test_printer_powers_evaluate_correctly(n, value):
    printer = ScalarMathPrinter({a: "a", b: "b"})
    for expr in (a**n, (a + b) ** n, 3 * a / b**n, a ** sp.Rational(n, 2)):
        code = printer.doprint(expr)
        got = eval(code, {"math": __import__("math")}, {"a": value, "b": 1.25})  # generated text, not user input
        assert got == pytest.approx(float(expr.subs({a: value, b: 1.25})), rel=1e-13)


def test_printer_float32_constants_and_strictness():
    printer = ScalarMathPrinter({a: "a"}, np.float32)
    code = printer.doprint(2 * a + sp.Rational(1, 3))
    assert "F32_" in code and all(v.startswith("np.float32(") for v in printer.constants.values())
    with pytest.raises(CodegenError, match="has no name"):
        ScalarMathPrinter({}).doprint(a)
    with pytest.raises(CodegenError, match="no scalar implementation"):
        ScalarMathPrinter({a: "a"}).doprint(sp.gamma(a))
    with pytest.raises(CodegenError, match="float32 or float64"):
        ScalarMathPrinter({a: "a"}, np.int32)


def test_templates_are_strict():
    with pytest.raises(jinja2.UndefinedError):
        render("symsm.backends.numba_python", "numba_python.py.j2")
    assert (template_dir("symsm.backends.numba_python") / "numba_python.py.j2").is_file()
