"""Models written with vectors and matrices, and the structured derivation path (block programs).

The structured path must agree with the scalar paths (the same model's lazy scalar expansion, compiled on the
expression graph) to 1e-10 relative, keep θ interchangeable with the scalar spelling, never expand the model
at large d, and refuse bad inputs with errors that name the expression and the shapes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symsm
from symsm.backends.blocks_numpy import BlockKernel
from symsm.core.errors import ModelError
from symsm.derive.objectives import Exact
from symsm.derive.structured import derive_structured
from symsm.ir.blocks import build_block_programs, flops_per_row, parse_program
from symsm.model.modelfile import load_model

D = 3


def _ica(d: int = D, bias: bool = False) -> symsm.Model:
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    u = W @ x
    params = [W]
    if bias:
        b = symsm.param_vector("b", d)
        u = u + b
        params.append(b)
    return symsm.Model(symsm.sum(-2 * symsm.log(symsm.cosh(u))), x, params, name="ica")


def _gaussian(d: int = D) -> symsm.Model:
    x = symsm.data_vector("x", d)
    P = symsm.param_symmetric("P", d)
    mu = symsm.param_vector("mu", d)
    return symsm.Model(-(x - mu).T @ P @ (x - mu) / 2, x, [P, mu], name="gaussian")


def _rbm() -> symsm.Model:
    x = symsm.data_vector("x", D)
    W = symsm.param_matrix("W", 2, D)
    b = symsm.param_vector("b", D)
    c = symsm.param_vector("c", 2)
    log_f = -symsm.sum(x**2) / 2 + b @ x + symsm.sum(symsm.log(1 + symsm.exp(c + W @ x)))
    return symsm.Model(log_f, x, [W, b, c], name="rbm")


def _nonsquare() -> symsm.Model:
    x = symsm.data_vector("x", D)
    W = symsm.param_matrix("W", 2, D)
    return symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))) - symsm.sum(x**2) / 2, x, [W], name="nonsquare")


def _student_t(d: int = D) -> symsm.Model:
    x = symsm.data_vector("x", d)
    mu = symsm.param_vector("mu", d)
    nu = symsm.param_scalar("nu", positive=True)
    log_f = -(nu + d) / 2 * symsm.log(1 + symsm.sum((x - mu) ** 2) / nu)
    return symsm.Model(log_f, x, [mu, nu], name="student_t", init={"nu": 3.0})


def _product() -> symsm.Model:
    x = symsm.data_vector("x", D)
    w = symsm.param_vector("w", D)
    v = symsm.param_vector("v", D)
    return symsm.Model((w @ x) * (v @ x) - x @ x / 2, x, [w, v], name="product")


def _mixed() -> symsm.Model:
    """Transposes, a positive scale vector, a scalar parameter, sqrt and a θ-only matrix product."""
    x = symsm.data_vector("x", D)
    A = symsm.param_matrix("A", D, D)
    s = symsm.param_vector("s", D, positive=True)
    a = symsm.param_scalar("a")
    y = A.T @ (x / s)
    log_f = -symsm.sum(symsm.sqrt(1 + y**2)) + a * symsm.sum(symsm.tanh(x @ A)) - symsm.sum((A @ A) @ x) ** 2 / 8
    return symsm.Model(log_f, x, [A, s, a], name="mixed", init={"s": np.ones(D)})


MODELS = {
    "ica": _ica,
    "ica_bias": lambda: _ica(bias=True),
    "gaussian": _gaussian,
    "rbm": _rbm,
    "nonsquare": _nonsquare,
    "student_t": _student_t,
    "product": _product,
    "mixed": _mixed,
}


@dataclass(frozen=True)
class _Custom(Exact):
    name = "custom"


def _theta(model: symsm.Model, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = rng.normal(scale=0.4, size=model.n_params)
    positive = model.positive_mask
    theta[positive] = rng.uniform(0.7, 2.0, size=int(positive.sum()))
    return theta


def _close(a, b) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * (np.abs(b).max() + 1.0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_structured_equals_scalar_path(name):
    model = MODELS[name]()
    X = np.random.default_rng(0).normal(size=(300, D))
    theta = _theta(model)
    structured = model.compile(path="structured")
    scalar = model.compile(path="graph")  # the lazy scalar expansion of the same model
    v1, g1 = structured.value_and_grad(theta, X)
    v2, g2 = scalar.value_and_grad(theta, X)
    _close(v1, v2)
    _close(g1, g2)
    _close(structured.value(theta, X), v2)
    _close(structured.per_sample(theta, X), scalar.per_sample(theta, X))
    _close(structured.score(theta, X), scalar.score(theta, X))
    assert "symsm-blocks 1" in structured.source and structured.derivation_path == "structured"


def test_scalar_spelling_is_interchangeable():
    """θ's names and order equal the scalar spelling (symsm.matrix, symsm.symmetric), and so do the results."""
    x = sp.symbols(f"x_0:{D}", real=True)
    W = symsm.matrix("W", D, D)
    b = sp.Matrix(sp.symbols(f"b_0:{D}", real=True))
    u = W * sp.Matrix(x) + b
    scalar = symsm.Model(sum(-2 * sp.log(sp.cosh(ui)) for ui in u), x, {"W": W, "b": list(b)}, name="ica")
    structured = _ica(bias=True)
    assert structured.param_names == scalar.param_names
    assert structured.data_names == scalar.data_names
    assert sp.simplify(structured.log_f - scalar.log_f) == 0
    X = np.random.default_rng(2).normal(size=(200, D))
    theta = _theta(structured)
    _close(
        structured.compile(path="structured").value_and_grad(theta, X)[1], scalar.compile().value_and_grad(theta, X)[1]
    )

    P = symsm.symmetric("P", D)
    gauss = _gaussian()
    assert gauss.param_names[: D * (D + 1) // 2] == [str(s) for s in dict.fromkeys(P)]
    values = {"P": np.array([[2.0, 0.3, 0.1], [0.3, 1.5, 0.2], [0.1, 0.2, 1.0]]), "mu": np.array([0.1, -0.2, 0.3])}
    theta = gauss.pack(values)
    unpacked = gauss.unpack(theta)
    np.testing.assert_array_equal(unpacked["P"], values["P"])
    with pytest.raises(ValueError, match="conflicting values"):
        gauss.pack({"P": np.arange(9.0).reshape(3, 3), "mu": np.zeros(3)})


def test_structured_gradient_central_differences_d64():
    d = 64
    model = _ica(d, bias=True)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, d))
    theta = np.concatenate([(np.eye(d) + 0.05 * rng.normal(size=(d, d))).ravel(), 0.1 * rng.normal(size=d)])
    loss = model.compile(path="structured")
    value, grad = loss.value_and_grad(theta, X)
    assert value == pytest.approx(loss.value(theta, X), rel=1e-12)
    assert not model.expanded and "params" not in model.__dict__  # θ checked and packed by shapes
    with pytest.raises(ValueError, match="declared positive"):
        symsm.Model(
            symsm.sum(symsm.param_vector("s", d, positive=True) * symsm.data_vector("x", d) ** 2) * -1,
            symsm.data_vector("x", d),
            [symsm.param_vector("s", d, positive=True)],
        ).compile(path="structured").value(-np.ones(d), X)
    names = model.param_names
    for name in ("W_0_0", "W_3_5", "W_63_1", "b_7"):
        k = names.index(name)
        h = 1e-5
        up, down = theta.copy(), theta.copy()
        up[k] += h
        down[k] -= h
        fd = (loss.value(up, X) - loss.value(down, X)) / (2 * h)
        assert grad[k] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_large_model_is_built_and_derived_without_expansion():
    d = 128
    start = time.perf_counter()
    model = _ica(d, bias=True)
    der = model.derive(path="structured")
    programs = build_block_programs(der.structured, model)
    elapsed = time.perf_counter() - start
    assert not model.expanded and "params" not in model.__dict__ and "groups" not in model.__dict__
    assert model.n_params == d * d + d and model.param_names[-1] == f"b_{d - 1}"
    vg = programs["value_and_grad"]
    # 4 matrix products per block: r1, e0·(W·Wᵀ), e7ᵀ·X, the Gram matrix of e0 (one triangle; block_passes.py)
    assert flops_per_row(vg)["matmul"] == 7 * d * d + d
    assert len(vg.matmuls()) == 4 and len(vg.block) < 30
    unrewritten = build_block_programs(der.structured, model, rewrite=False)["value_and_grad"]
    assert flops_per_row(unrewritten)["matmul"] == 10 * d * d and len(unrewritten.matmuls()) == 5
    assert elapsed < 10.0  # generous: the work above is a few hundred small sympy operations, not d² products
    assert len(model.canonical()) < 10 and model.hash == _ica(d, bias=True).hash


def test_block_program_text_round_trip_and_executor():
    model = _student_t()
    programs = build_block_programs(derive_structured(model), model)
    X = np.random.default_rng(4).normal(size=(50, D))
    theta = _theta(model)
    for name, program in programs.items():
        text = program.text()
        assert parse_program(text).text() == text, name
    kernel = BlockKernel(programs["per_sample"].text())
    out = np.empty(50)
    kernel.run(theta, X, per_sample=out)
    value, _ = BlockKernel(programs["value"].text()).run(theta, X)
    assert value == pytest.approx(out.mean(), rel=1e-12)


def test_results_do_not_depend_on_thread_count(monkeypatch):
    import symsm.core.threads as threads

    model = _ica(bias=True)
    loss = model.compile(path="structured")
    X = np.random.default_rng(5).normal(size=(40_000, D))
    theta = _theta(model)
    monkeypatch.setattr(threads, "threads", lambda: 1)
    one = loss.value_and_grad(theta, X)
    monkeypatch.setattr(threads, "threads", lambda: 3)
    three = loss.value_and_grad(theta, X)
    assert one[0] == three[0]
    np.testing.assert_array_equal(one[1], three[1])


def test_float32_and_fit():
    model = _gaussian()
    rng = np.random.default_rng(6)
    X = rng.normal(size=(2000, D)) @ np.diag([1.0, 2.0, 0.5]) + np.array([1.0, 0.0, -1.0])
    theta = model.pack({"P": np.eye(D), "mu": np.zeros(D)})
    l64 = model.compile(path="structured")
    l32 = model.compile(path="structured", dtype=np.float32)
    np.testing.assert_allclose(l32.value_and_grad(theta, X)[1], l64.value_and_grad(theta, X)[1], rtol=1e-4, atol=1e-4)
    result = symsm.fit(l64, X, theta)
    cov = np.linalg.inv(result.params["P"] if hasattr(result, "params") else model.unpack(result.theta)["P"])
    np.testing.assert_allclose(cov, np.cov(X.T, bias=True), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------- other forms
FORMULA = "sum(-2*log(cosh(W @ x + b)))"


def test_formula_string_and_model_file_equal_python_form(tmp_path):
    python = _ica(bias=True)
    from_string = symsm.Model.from_string(
        FORMULA,
        data={"name": "x", "size": D},
        params=[{"name": "W", "shape": [D, D]}, {"name": "b", "shape": [D]}],
        name="ica",
    )
    assert from_string.canonical() == python.canonical()
    path = tmp_path / "ica.toml"
    path.write_text(
        f'name = "ica"\ndata = {{ name = "x", size = {D} }}\n'
        f'params = [{{ name = "W", shape = [{D}, {D}] }}, {{ name = "b", shape = [{D}] }}]\n'
        f'log_f = "{FORMULA}"\n[init]\nW = {np.eye(D).tolist()}\n'
    )
    from_file = load_model(path)
    assert from_file.canonical() == python.canonical()
    np.testing.assert_array_equal(from_file.default_theta()[: D * D], np.eye(D).ravel())
    gauss = symsm.Model.from_string(
        "-(x - mu).T @ P @ (x - mu) / 2",
        data={"name": "x", "size": D},
        params=[{"name": "P", "shape": [D, D], "symmetric": True}, {"name": "mu", "shape": [D]}],
        name="gaussian",
    )
    assert gauss.canonical() == _gaussian().canonical()
    quad = symsm.Model.from_string(
        "-quad(x - mu, P)/2",
        data={"name": "x", "size": D},
        params=[{"name": "P", "shape": [D, D], "symmetric": True}, {"name": "mu", "shape": [D]}],
    )
    assert sp.simplify(quad.log_f - gauss.log_f) == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: symsm.param_matrix("W", 2, 3) @ symsm.data_vector("x", 4), r"shapes do not match in W @ x: 2×3 @ 4"),
        (lambda: symsm.param_matrix("M", 2, 3, symmetric=True), "must be square"),
        (lambda: symsm.quad(symsm.data_vector("x", 3), symsm.param_matrix("M", 3, 2)), "square matrix M"),
        (lambda: symsm.data_vector("x", 3) + symsm.param_vector("b", 2), "equal shapes or a scalar operand"),
        (
            lambda: symsm.Model(symsm.data_vector("x", 3), symsm.data_vector("x", 3), [symsm.param_scalar("a")]),
            "scalar",
        ),
        (
            lambda: symsm.Model(
                symsm.sum(symsm.data_vector("x", 3)) * symsm.param_scalar("a"),
                symsm.data_vector("y", 3),
                [symsm.param_scalar("a")],
            ),
            "undeclared names: x",
        ),
        (
            lambda: symsm.Model(
                symsm.sum(symsm.data_vector("x", 3)) + symsm.param_scalar("a"),
                symsm.data_vector("x", 3),
                [symsm.param_scalar("a")],
            ),
            "cannot be estimated",
        ),
        (
            lambda: symsm.Model.from_string(
                "sum(V @ x)", data={"name": "x", "size": 3}, params=[{"name": "W", "shape": [3, 3]}]
            ),
            "undeclared name 'V'",
        ),
        (
            lambda: symsm.Model.from_string(
                "sum(W @ x)", data={"name": "x", "size": 4}, params=[{"name": "W", "shape": [3, 3]}]
            ),
            r"3×3 @ 4",
        ),
        (
            lambda: symsm.Model.from_string("sum(x.U)", data={"name": "x", "size": 3}, params=["a"]),
            r"attribute \.U",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(make, message):
    with pytest.raises(ModelError, match=message):
        make()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{ name = "x", size = 0 }', "data.size: expected a positive integer"),
        ('{ name = "x", size = 3, kind = "real" }', "data.kind: unknown key"),
        ("{ size = 3 }", "data.name: is missing"),
    ],
)
def test_model_file_data_vector_errors(tmp_path, data, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'data = {data}\nparams = [{{ name = "W", shape = [3, 3] }}]\nlog_f = "sum(W @ x)"\n')
    with pytest.raises(ModelError, match=message):
        load_model(path)


def test_data_of_the_wrong_width_and_unsupported_models():
    model = _ica()
    loss = model.compile(path="structured")
    with pytest.raises(ValueError, match="got 4 columns"):
        loss.value(np.eye(D).ravel(), np.zeros((5, 4)))
    assert loss.backend == "llvm"  # llvm's block programs run on its block executor (symsm/backends/llvm/structured.py)
    with pytest.raises(ValueError, match="cannot run block programs"):
        model.compile(backend="cuda", path="structured")
    with pytest.raises(ValueError, match="not 'custom'"):  # an objective the structured derivation does not build
        model.compile(path="structured", objective=_Custom())
    x = symsm.data_vector("x", D)
    W = symsm.param_matrix("W", D, D)
    nonlinear = symsm.Model(symsm.sum(symsm.log(symsm.cosh(W @ symsm.tanh(x)))), x, [W])
    with pytest.raises(ModelError, match="not affine in the data"):
        nonlinear.derive(path="structured")
    assert nonlinear.derive(path="auto").score  # the scalar paths take it
    scalar = symsm.Model(
        -(sp.Symbol("y", real=True) ** 2) * sp.Symbol("a", positive=True),
        [sp.Symbol("y", real=True)],
        [sp.Symbol("a", positive=True)],
    )
    with pytest.raises(ModelError, match="written with scalars"):
        scalar.derive(path="structured")


# ---------------------------------------------------------------------------------------------- hypothesis
_x = symsm.data_vector("x", D)
_W = symsm.param_matrix("W", D, D)
_b = symsm.param_vector("b", D)
_mu = symsm.param_vector("mu", D)
_M = symsm.param_symmetric("M", D)
_a = symsm.param_scalar("a")
_AFFINE = [_x, _W @ _x, _W @ _x + _b, _x - _mu, _a * _x, _W.T @ _x, _x @ _W, _W @ (_x - _mu)]
_UNARY = [
    symsm.tanh,
    symsm.sin,
    symsm.atan,
    symsm.asinh,
    lambda u: symsm.log(symsm.cosh(u)),
    lambda u: symsm.sqrt(1 + u**2),
    lambda u: symsm.exp(-(u**2) / 2),
    lambda u: u**3,
]


def _vectors(depth: int):
    affine = st.sampled_from(_AFFINE)
    if depth == 0:
        return affine
    sub = _vectors(depth - 1)
    return st.one_of(
        affine,
        st.builds(lambda f, u: f(u), st.sampled_from(_UNARY), sub),
        st.builds(lambda u, v: u + v, sub, sub),
        st.builds(lambda u, v: u * v, sub, sub),
        st.builds(lambda u: u * _b, sub),
        st.builds(lambda u, v: u / (1 + v**2), sub, sub),
    )


def _scalars():
    vec = _vectors(2)
    base = st.one_of(
        st.builds(symsm.sum, vec),
        st.builds(lambda u: symsm.quad(u, _M), st.sampled_from(_AFFINE)),
        st.builds(lambda u: _b @ u, vec),
        st.builds(lambda u: symsm.log(1 + symsm.sum(u**2)), vec),
    )
    return st.one_of(
        base,
        st.builds(lambda s, t: s * t, base, base),
        st.builds(lambda s, t: s - t / 3, base, base),
        st.builds(lambda s: symsm.tanh(s) * _a, base),
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log_f=_scalars(), seed=st.integers(0, 2**16))
def test_hypothesis_formulas_match_scalar_expansion(log_f, seed):
    leaves = [leaf for leaf in log_f.leaves() if leaf.op == "param"]
    try:
        model = symsm.Model(log_f, _x, leaves)
    except ModelError:
        return  # e.g. a parameter that cancels from the score
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, D))
    theta = _theta(model, seed)
    programs = build_block_programs(derive_structured(model), model)
    score = np.empty((20, D))
    per_sample = np.empty(20)
    BlockKernel(programs["score"].text()).run(theta, X, score=score)
    BlockKernel(programs["per_sample"].text()).run(theta, X, per_sample=per_sample)
    value, grad = BlockKernel(programs["value_and_grad"].text()).run(theta, X)
    reference = model.compile(path="graph")  # automatic differentiation of the scalar expansion
    ref_value, ref_grad = reference.value_and_grad(theta, X)
    scale = np.abs(ref_grad).max() + 1
    np.testing.assert_allclose(score, reference.score(theta, X), rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(per_sample, reference.per_sample(theta, X), rtol=1e-9, atol=1e-9 * scale)
    assert value == pytest.approx(ref_value, rel=1e-9, abs=1e-9 * scale)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-8, atol=1e-9 * scale)


def test_function_table_is_followed():
    from symsm.backends.blocks_numpy.executor import _FUNCTIONS
    from symsm.core.functions import PARSER_FUNCTIONS
    from symsm.ir.blocks import TABLE_FUNCTIONS
    from symsm.model.tensor import ELEMENTWISE

    assert set(ELEMENTWISE) == {n for n, f in PARSER_FUNCTIONS.items() if f.smooth}
    assert all(callable(getattr(symsm, n)) for n in ELEMENTWISE)
    assert TABLE_FUNCTIONS.issubset(_FUNCTIONS)


def test_pickle_and_the_default_scalar_path():
    import pickle

    model = _student_t()
    again = pickle.loads(pickle.dumps(model))
    assert again.hash == model.hash and again.param_names == model.param_names and not again.expanded
    X = np.random.default_rng(7).normal(size=(100, D))
    theta = _theta(model)
    auto = model.compile()  # "auto" keeps the scalar paths (the lazy expansion) for now
    _close(auto.value_and_grad(theta, X)[1], again.compile(path="structured").value_and_grad(theta, X)[1])
    assert "\\log" in model._repr_latex_()


def test_command_line_fits_a_vector_model_file_on_the_structured_path(tmp_path, capsys):
    import json

    from symsm.cli.main import main

    path = tmp_path / "gauss.toml"
    path.write_text(
        f'name = "gauss"\ndata = {{ name = "x", size = {D} }}\n'
        f'params = [{{ name = "P", shape = [{D}, {D}], symmetric = true }}, {{ name = "mu", shape = [{D}] }}]\n'
        'log_f = "-quad(x - mu, P)/2"\n[init]\nP = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]\n'
    )
    X = np.random.default_rng(8).normal(size=(500, D)) + 1.0
    np.save(tmp_path / "x.npy", X)
    assert main(["fit", str(path), "--data", str(tmp_path / "x.npy"), "--path", "structured", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["converged"]
    assert main(["codegen", str(path), "--path", "structured", "-o", str(tmp_path / "out")]) == 0
    assert "symsm-blocks 1" in next((tmp_path / "out").iterdir()).read_text()
