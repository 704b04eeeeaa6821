"""symsm.graph and the graph-built kernels: automatic differentiation on expression graphs is exact."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from models import CASES, central_difference_gradient
from test_formulas import smooth_expr

from symsm.backends.llvm.generate import generate_llvm_source
from symsm.core import cache
from symsm.derive.graph import ExprGraph
from symsm.ir.graph_kernels import ModelGraph, build_graph_kernels


def _point(model):
    return {sym: sp.Rational(k + 2, 7) * (-1) ** k for k, sym in enumerate((*model.data, *model.params))}


def _numeric(g: ExprGraph, node: int, point) -> float:
    return float(g.expression(node).xreplace(point))


@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_derivatives_equal_sympy_diff(name):
    model = CASES[name]().model
    mg = ModelGraph(model)
    point = _point(model)
    for i, x in enumerate(model.data):
        d1 = sp.diff(model.log_f, x).xreplace(point)
        d2 = sp.diff(model.log_f, x, 2).xreplace(point)
        assert _numeric(mg.graph, mg.score[i], point) == pytest.approx(float(d1), rel=1e-12, abs=1e-14)
        assert _numeric(mg.graph, mg.hessian_diag[i], point) == pytest.approx(float(d2), rel=1e-12, abs=1e-14)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(smooth_expr())
def test_graph_derivatives_of_random_formulas(body):
    x0, x1, a, b = sp.symbols("x0 x1 a b", real=True)
    g = ExprGraph(2)
    leaves = [g.leaf(x0, "data", 0), g.leaf(x1, "data", 1)]
    g.leaf(a, "theta")
    g.leaf(b, "theta")
    f = g.from_sympy(body)
    score = g.reverse({f: g.ONE}, relevant=lambda n: bool(g.mask[n] & g.data_mask))
    point = {x0: sp.Rational(1, 3), x1: sp.Rational(-2, 5), a: sp.Rational(3, 4), b: sp.Rational(-1, 2)}
    for i, x in enumerate((x0, x1)):
        s = score.get(leaves[i], g.ZERO)
        h = g.tangent(s, i, {})
        assert _numeric(g, s, point) == pytest.approx(float(sp.diff(body, x).xreplace(point)), rel=1e-11, abs=1e-12)
        assert _numeric(g, h, point) == pytest.approx(float(sp.diff(body, x, 2).xreplace(point)), rel=1e-10, abs=1e-11)
    # the θ-gradient by a reverse sweep from the same graph
    grads = g.reverse({f: g.ONE}, relevant=lambda n: g.theta_dep[n])
    for sym in (a, b):
        got = _numeric(g, grads.get(g.leaves[sym], g.ZERO), point)
        assert got == pytest.approx(float(sp.diff(body, sym).xreplace(point)), rel=1e-11, abs=1e-12)


def test_construction_rewrites():
    x, u = sp.symbols("x u", real=True)
    g = ExprGraph(1)
    X = g.leaf(x, "data", 0)
    U = g.leaf(u, "theta")
    assert g.mul(g.fn("sinh", X), g.pow(g.fn("cosh", X), -1)) == g.fn("tanh", X)
    assert g.add(g.mul(U, X), g.mul(U, X)) == g.mul(g.const(2), U, X)
    assert g.add(X, g.neg(X)) == g.ZERO
    assert g.mul(g.pow(X, 2), g.pow(X, -2)) == g.ONE
    # Σ_j c_j·v with θ-only c_j is grouped into (Σ c_j)·v
    grouped = g.add(g.mul(U, g.fn("exp", X)), g.mul(g.pow(U, 2), g.fn("exp", X)))
    assert g.op[grouped] == "mul" and g.fn("exp", X) in g.args[grouped]
    # hash-consing: the same expression twice is the same node
    assert g.from_sympy(sp.exp(u * x) + x) == g.from_sympy(x + sp.exp(x * u))


@pytest.mark.parametrize("name", sorted(CASES))
def test_graph_kernels_end_to_end(name, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMSM_CACHE_DIR", str(tmp_path))
    case = CASES[name]()
    kernels = build_graph_kernels(case.model)
    key = cache.cache_key(test="graph-kernels", model=case.model.canonical())
    module, _, _ = cache.load_or_generate(
        key, lambda: generate_llvm_source(case.model.derive(), kernels, dtype=np.float64, cache_key=key)
    )
    X = np.ascontiguousarray(case.X[:123])
    result = module.value_and_grad(case.theta, X)
    assert result[0] == pytest.approx(case.objective(case.theta, X), rel=1e-10, abs=1e-12)
    fd = central_difference_gradient(lambda th: case.objective(th, X), case.theta)
    np.testing.assert_allclose(result[1:], fd, rtol=1e-6, atol=1e-7 * (np.abs(fd).max() + 1))
    out = np.empty(X.shape)
    module.score(case.theta, X, out)
    np.testing.assert_allclose(out, case.score(case.theta, X), rtol=1e-10, atol=1e-12)
