"""symsm.model: construction, flat θ order, packing, validation errors."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm import ModelError

x0, x1 = sp.symbols("x0 x1", real=True)
a, b = sp.symbols("a b", real=True)
s = sp.Symbol("s", positive=True)


def test_flat_order_and_groups():
    W = symsm.matrix("W", 2, 3)
    M = symsm.symmetric("M", 3)
    m = symsm.Model(x0 * a + sum(W) * x1 + sum(M) * x0, [x0, x1], {"a": a, "W": W, "M": M})
    assert m.param_names[:1] == ["a"]
    assert m.param_names[1:7] == ["W_0_0", "W_0_1", "W_0_2", "W_1_0", "W_1_1", "W_1_2"]
    assert m.param_names[7:] == ["M_0_0", "M_0_1", "M_0_2", "M_1_1", "M_1_2", "M_2_2"]
    assert (m.dim, m.n_params) == (2, 13)
    assert M[1, 0] is M[0, 1]


def test_triangular_matrix_contributes_its_symbols_only():
    L = sp.ImmutableMatrix([[a, 0], [b, s]])
    m = symsm.Model(-((L * sp.Matrix([x0, x1])).norm() ** 2), [x0, x1], {"L": L})
    assert m.param_names == ["a", "b", "s"]
    out = m.unpack(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(out["L"], [[1.0, 0.0], [2.0, 3.0]])
    with pytest.raises(ValueError, match=r"L\[0, 1\] is fixed at 0.0"):
        m.pack({"L": [[1, 5], [2, 3]]})


def test_pack_unpack_roundtrip_and_errors():
    M = symsm.symmetric("M", 2)
    m = symsm.Model(
        -(x0**2 * M[0, 0] + 2 * x0 * x1 * M[0, 1] + x1**2 * M[1, 1]) / 2 + a * x0, [x0, x1], {"M": M, "a": a}
    )
    theta = m.pack({"M": [[2.0, 0.5], [0.5, 1.0]], "a": 3.0})
    np.testing.assert_array_equal(theta, [2.0, 0.5, 1.0, 3.0])
    back = m.unpack(theta)
    np.testing.assert_array_equal(back["M"], [[2.0, 0.5], [0.5, 1.0]])
    assert back["a"] == 3.0
    assert np.array_equal(m.pack({"M_0_0": 2, "M_0_1": 0.5, "M_1_1": 1, "a": 3}), theta)
    with pytest.raises(ValueError, match="conflicting values"):
        m.pack({"M": [[2.0, 0.5], [0.7, 1.0]], "a": 3.0})
    with pytest.raises(ValueError, match="missing parameters: a"):
        m.pack({"M": np.eye(2)})
    with pytest.raises(ValueError, match="unknown parameter 'zz'"):
        m.pack({"M": np.eye(2), "a": 1, "zz": 2})
    with pytest.raises(ValueError, match=r"M must have shape \(2, 2\)"):
        m.pack({"M": np.eye(3), "a": 1})
    with pytest.raises(ValueError, match="must be finite"):
        m.pack({"M": np.eye(2), "a": np.nan})


def test_init_and_default_theta():
    m = symsm.Model(-((x0 - a) ** 2) / (2 * s**2), [x0], [a, s])
    np.testing.assert_array_equal(m.default_theta(), [0.0, 1.0])
    m2 = symsm.Model(-((x0 - a) ** 2) / (2 * s**2), [x0], [a, s], init={"a": 2.5})
    np.testing.assert_array_equal(m2.default_theta(), [2.5, 1.0])
    with pytest.raises(ModelError, match="non-positive values to positive parameters: s"):
        symsm.Model(-((x0 - a) ** 2) / (2 * s**2), [x0], [a, s], init={"s": -1})
    with pytest.raises(ModelError, match="init: unknown parameter"):
        symsm.Model(-((x0 - a) ** 2) / (2 * s**2), [x0], [a, s], init={"q": 1})


@pytest.mark.parametrize(
    "log_f, match",
    [
        (a * x0 + b * x1, "undeclared symbols: b"),
        (a**2 + sp.exp(a), "does not depend on the data"),
        (sp.Abs(x0 - a), "non-smooth function Abs"),
        (sp.sign(x0) * a, "non-smooth function sign"),
        (sp.floor(x0) * a, "non-smooth function floor"),
        (sp.ceiling(x0) * a, "non-smooth function ceiling"),
        (sp.Max(x0, a), "non-smooth function Max"),
        (sp.Min(x0, a), "non-smooth function Min"),
        (sp.Heaviside(x0 - a), "non-smooth function Heaviside"),
        (sp.Piecewise((x0 * a, x0 > 0), (0, True)), "non-smooth function Piecewise"),
        (sp.Function("g")(x0) * a, "function g, which symsm does not support"),
        (sp.gamma(x0) * a, "function gamma"),
        (sp.I * x0 * a, "must be real"),
    ],
)
def test_validation_errors(log_f, match):
    with pytest.raises(ModelError, match=match):
        symsm.Model(log_f, [x0], [a])


def test_structural_errors():
    with pytest.raises(ModelError, match="both data and parameters: x0"):
        symsm.Model(a * x0, [x0], [a, x0])
    with pytest.raises(ModelError, match="appear only in terms free of the data"):
        symsm.Model(a * x0 + sp.log(s), [x0], [a, s])
    with pytest.raises(ModelError, match="do not appear in log_f"):
        symsm.Model(a * x0, [x0], [a, b])
    with pytest.raises(ModelError, match="data symbols repeated"):
        symsm.Model(a * x0, [x0, x0], [a])
    with pytest.raises(ModelError, match="appears in groups"):
        symsm.Model(a * x0, [x0], {"p": a, "q": [a]})
    with pytest.raises(ModelError, match=r"use Model\.from_string"):
        symsm.Model("a*x0", [x0], [a])
    with pytest.raises(ModelError, match="shape"):
        symsm.Model(sp.Matrix([[a * x0, 0]]), [x0], [a])
    with pytest.raises(ModelError, match="positive integer"):
        symsm.matrix("W", 0, 2)


def test_theta_only_non_smooth_term_is_allowed_since_it_drops_out():
    W = symsm.matrix("W", 2, 2)
    y = W * sp.Matrix([x0, x1])
    log_f = -sp.log(sp.cosh(y[0])) - sp.log(sp.cosh(y[1])) + sp.log(sp.Abs(W.det()))
    m = symsm.Model(log_f, [x0, x1], {"W": W})
    assert not m.derive().objective.has(sp.Abs)


def test_matrix_log_f_and_hash_identity():
    mu = sp.Matrix([a, b])
    xv = sp.Matrix([x0, x1])
    m1 = symsm.Model(-((xv - mu).T * (xv - mu)) / 2, list(xv), {"mu": mu})
    m2 = symsm.Model(-((xv - mu).T * (xv - mu)) / 2, list(xv), {"mu": mu})
    m3 = symsm.Model(-((xv - mu).T * (xv - mu)) / 3, list(xv), {"mu": mu})
    assert m1.hash == m2.hash != m3.hash
    assert len(m1.hash) == 64


def test_from_string():
    m = symsm.Model.from_string("-(x - mu)**2 / (2*s**2)", data="x", params="mu s", positive="s", name="g")
    assert m.param_names == ["mu", "s"] and m.data_names == ["x"]
    assert m.params[1].is_positive and m.name == "g"
    W = symsm.Model.from_string(
        "-log(cosh(W_0_0*x0 + W_0_1*x1)) - log(cosh(W_1_0*x0 + W_1_1*x1))",
        data=["x0", "x1"],
        params=[{"name": "W", "shape": [2, 2]}],
    )
    assert W.param_names == ["W_0_0", "W_0_1", "W_1_0", "W_1_1"]
    S = symsm.Model.from_string(
        "-(M_0_0*x0**2 + 2*M_0_1*x0*x1 + M_1_1*x1**2)/2", "x0 x1", [{"name": "M", "shape": [2, 2], "symmetric": True}]
    )
    assert S.n_params == 3
    with pytest.raises(ModelError, match="positive names unknown parameters: q"):
        symsm.Model.from_string("mu*x", "x", "mu", positive="q")
    with pytest.raises(ModelError, match="undeclared name 'nu'"):
        symsm.Model.from_string("nu*x", "x", "mu")
    with pytest.raises(ModelError, match="not a valid name"):
        symsm.Model.from_string("mu*x", "x", "mu __class__")


def test_canonical_of_a_long_log_f_is_order_free_and_distinguishes_formulas():
    """A log f of more than CANONICAL_ORDERED_TERMS terms is keyed in sympy's argument order (srepr's sort by
    monomials costs terms × symbols): the same formula built in another order gives the same key, another
    formula another key, and a short formula keeps srepr's form."""
    import sympy as sp

    from symsm.model.model import CANONICAL_ORDERED_TERMS

    x, y = sp.symbols("x y", real=True)
    a = sp.symbols(f"a0:{CANONICAL_ORDERED_TERMS + 5}", real=True)
    terms = [a[k] * x ** (k % 3 + 1) * y for k in range(len(a))]
    one = symsm.Model(sp.Add(*terms), [x, y], list(a), name="long")
    two = symsm.Model(sp.Add(*reversed(terms)), [x, y], list(a), name="long")
    other = symsm.Model(sp.Add(*terms[:-1], 2 * terms[-1]), [x, y], list(a), name="long")
    assert one.canonical()[3].startswith("args-order:")  # the linear-time form, not srepr's sorted one
    assert one.canonical() == two.canonical() and one.hash == two.hash
    assert one.hash != other.hash
    short = symsm.Model(a[0] * x + a[1] * y, [x, y], [a[0], a[1]], name="short")
    assert short.canonical()[3] == sp.srepr(short.log_f)
