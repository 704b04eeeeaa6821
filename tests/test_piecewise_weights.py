"""min and max in coordinate weights (capped and kinked h), through the whole pipeline.

What is checked, and against what:

* the function table's rules for min and max (one per argument, with the Heaviside step H(0) = ½) against
  sympy's `diff` away from ties, and the step's value at 0;
* the expression graph: n-ary min/max nested two at a time, its values against numpy and its forward
  tangents against central differences away from the kinks; constants fold;
* the printers: the numba Python printer's min/max/step code evaluated with plain Python against numpy
  (±, 0 and ties included), the three-address code's nested fmin/fmax calls and `step`;
* whole losses with capped weights (min(t², 1), genscore's min_log_pow, t²/max(1, t³)) on the LLVM and
  numba-python backends and both derivation paths: values, per-row values and θ-gradients against the
  hand-written numpy integrand of tests/domain_models.py and central differences; the weighted estimator
  recovers a truncated normal within 3 standard errors;
* refusals: min/max in log f (score matching needs log f smooth), a discontinuous weight, a weight that does
  not vanish at 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from domain_models import CAPPED, nonnegative_ggm, truncated_normal, truncated_normal_sample
from models import central_difference_gradient

import symsm
from symsm.backends.llvm.tac import TacPrinter
from symsm.backends.printers import ScalarMathPrinter
from symsm.core.errors import ModelError
from symsm.core.functions import BY_NAME, X2, X, Y, derivatives
from symsm.derive.graph import ExprGraph

a, b, c = sp.symbols("a b c", real=True)


@pytest.mark.parametrize("name", ["min", "max"])
def test_min_max_rules_equal_sympy_diff_off_ties(name):
    f = BY_NAME[name]
    assert f.arity is None and not f.smooth and f.continuous
    assert all(r.free_symbols <= {X, X2, Y} for r in f.derivative)
    value = f.sympy(a, b)
    rules = derivatives(f, a, b, value)
    for point in ({a: 0.3, b: 1.7}, {a: 2.5, b: -1.0}):
        for rule, wrt in zip(rules, (a, b), strict=True):
            assert float(rule.subs(point)) == float(sp.diff(value, wrt).subs(point))
    # at a tie each argument takes half: the derivative of min(u, u) along u is still 1
    tie = {a: 1.0, b: 1.0}
    assert float(sum(r.subs(tie) for r in rules)) == 1.0
    assert float(sp.Heaviside(0)) == 0.5 and not BY_NAME["heaviside"].continuous


def _graph(expr: sp.Expr):
    g = ExprGraph(3)
    leaves = [g.leaf(s, "data", i) for i, s in enumerate((a, b, c))]
    return g, leaves, g.from_sympy(expr)


def _numpy(expr: sp.Expr):
    return sp.lambdify((a, b, c), expr, modules=[{"Heaviside": lambda u, h0=0.5: np.heaviside(u, h0)}, "numpy"])


EXPRESSIONS = [
    sp.Min(a**2, 1),
    sp.Max(a, b * c, sp.Integer(-1)),
    sp.Min(sp.log(1 + a**2), b) ** 2 + sp.Max(a - b, b - c),
    (a**2) / sp.Max(1, a**3),
]


@pytest.mark.parametrize("expr", EXPRESSIONS, ids=str)
def test_graph_values_and_tangents_match_numpy_and_central_differences(expr):
    g, _, node = _graph(expr)
    rng = np.random.default_rng(7)
    points = rng.uniform(-2, 2, size=(40, 3))
    value = _numpy(g.expression(node))
    reference = _numpy(expr)
    np.testing.assert_allclose(value(*points.T), reference(*points.T), rtol=1e-13, atol=1e-14)
    for i in range(3):
        tangent = _numpy(g.expression(g.tangent(node, i, {})) + 0 * a)  # (a constant still broadcasts)
        step = np.zeros(3)
        step[i] = 1e-6
        fd = (reference(*(points + step).T) - reference(*(points - step).T)) / 2e-6
        got = np.broadcast_to(tangent(*points.T), fd.shape)
        np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-6)


def test_graph_folds_and_shares_min_max_nodes():
    g, (na, nb, _), _ = _graph(a)
    assert g.fn("min", na, nb) == g.fn("min", nb, na)  # symmetric: one node
    assert g.fn("max", na, na) == na
    assert g.value(g.fn("min", g.const(3), g.const(-2))) == -2
    assert g.value(g.fn("max", g.const(3), g.const(-2))) == 3
    assert [g.value(g.fn("heaviside", g.const(v))) for v in (-1, 0, 2)] == [0, 0.5, 1]
    assert g.tangent(g.fn("heaviside", na), 0, {}) == g.ZERO  # its derivative is 0 a.e.


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_python_printer_min_max_step_evaluate_like_numpy(dtype):
    exprs = [sp.Min(a, b, c), sp.Max(a, b), sp.Heaviside(a - b), sp.Heaviside(a) * sp.Min(a, 1)]
    printer = ScalarMathPrinter({a: "a", b: "b", c: "c"}, dtype)
    code = [printer.doprint(e) for e in exprs]
    assert code[0] == "min(a, b, c)" and code[1] == "max(a, b)"
    namespace = {"math": math, "np": np}
    for name, definition in printer.constants.items():
        namespace[name] = eval(definition, {"np": np})  # the printer's own float32 constants (trusted text)
    for point in [(0.5, 0.5, -1.0), (-2.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1.5, -0.5, 2.0)]:
        env = dict(zip("abc", map(dtype, point), strict=True))
        for expr, text in zip(exprs, code, strict=True):
            got = eval(text, namespace, env)  # generated code, not user input
            want = _numpy(expr)(*point)
            assert got == pytest.approx(float(want), abs=1e-7), (text, point)


def test_tac_nests_min_max_and_emits_step():
    tac = TacPrinter({a: "a", b: "b", c: "c"})
    tac.assign("out", sp.Min(a, b, c))
    assert [ins[1:3] for ins in tac.code] == [("call", "fmin"), ("call", "fmin")]
    assert all(len(ins) == 5 for ins in tac.code)  # two operands each
    tac = TacPrinter({a: "a"})
    tac.assign("out", sp.Heaviside(a))
    assert tac.code == [("out", "step", "a")]


# ------------------------------------------------------------------------------------------- whole losses


@pytest.mark.parametrize(
    ("weight", "backend", "path"),
    [
        ("min_t2", "llvm", "sympy"),
        ("min_t2", "llvm", "graph"),
        ("min_t2", "numba-python", "graph"),
        ("min_log_pow", "llvm", "graph"),
        ("min_log_pow", "numba-python", "sympy"),
        ("t2_over_max", "llvm", "sympy"),
        ("t2_over_max", "numba-python", "graph"),
    ],
)
def test_capped_weight_losses_match_numpy_and_finite_differences(weight, backend, path):
    case = truncated_normal(weight)
    loss = case.model.compile(backend=backend, path=path)
    X = truncated_normal_sample(0.5, 1.0, 300, 3) * 1.3  # rows on both sides of every kink
    X[0, :] = 0.0
    for theta in (case.theta, np.array([0.9, 0.7])):
        J, g = loss.value_and_grad(theta, X)
        assert pytest.approx(case.objective(theta, X), rel=1e-12, abs=1e-12) == J
        np.testing.assert_allclose(loss.per_sample(theta, X), case.integrand(theta, X), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(g, central_difference_gradient(lambda th: case.objective(th, X), theta), rtol=1e-6)


def test_capped_weight_on_a_graphical_model_and_its_closed_form():
    case = nonnegative_ggm("min_t2")
    loss = case.model.compile()
    X = case.X[:200]
    J, g = loss.value_and_grad(case.theta, X)
    assert pytest.approx(case.objective(case.theta, X), rel=1e-12) == J
    np.testing.assert_allclose(g, central_difference_gradient(lambda th: case.objective(th, X), case.theta), rtol=1e-6)
    A, bvec, c0 = loss.quadratic_form(X)
    theta = case.theta
    assert 0.5 * theta @ A @ theta + bvec @ theta + c0 == pytest.approx(J, rel=1e-10)


@pytest.mark.parametrize("weight", sorted(CAPPED))
def test_truncated_normal_is_recovered_with_a_capped_weight(weight):
    X = truncated_normal_sample(0.5, 1.0, 1000, 2024)
    case = truncated_normal(weight)
    res = symsm.fit(case.model, X)
    assert res.converged
    assert np.all(np.abs(res.theta - np.array([0.5, 1.0])) < 3 * res.se), (weight, res.theta, res.se)
    # a stationary point of the hand-written objective (h′ piecewise)
    assert np.all(np.abs(central_difference_gradient(lambda th: case.objective(th, X), res.theta)) < 1e-6)


# ------------------------------------------------------------------------------------------- refusals


def test_min_in_log_f_is_refused_with_the_reason():
    with pytest.raises(ModelError, match=r"non-smooth function Min.*allowed in weights only"):
        symsm.Model.from_string("-min(x**2, 1) * s", "x", "s")


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        (lambda t: t * sp.Heaviside(t - 1), "non-smooth function Heaviside.*continuous and piecewise smooth"),
        (lambda t: sp.Piecewise((t, t < 1), (2, True)), "non-smooth function Piecewise"),
        ("heaviside(t)", "not allowed in a formula"),
        ("max(t**2, 1)", "must vanish at 0"),
        ("min(t, 1) + 1", "must vanish at 0"),
        ("min(t, -1) + 1", "positive for t > 0"),
        ("min(t, 1 - t)", "positive for t > 0"),
    ],
)
def test_discontinuous_or_non_vanishing_weights_are_refused(weight, message):
    with pytest.raises(ModelError, match=message):
        symsm.Model.from_string("-x**2 * s", "x", "s", domain="nonnegative", weight=weight)


def test_latex_shows_the_capped_weight_and_its_piecewise_derivative():
    from symsm.latex import derivation_latex

    model = truncated_normal("min_t2").model
    tex = derivation_latex(model.derive())
    assert r"\min\left(1, x^{2}\right)" in tex
    assert r"h'(x) &= 2 x \mathbf{1}\left[1 - x^{2} > 0\right]" in tex
    assert "piece by piece" in tex and r"\theta\left(" not in tex  # the step is never printed as θ(u)
    smooth = derivation_latex(truncated_normal("t2").model.derive())
    assert "piece by piece" not in smooth
