"""The structured path on the LLVM block executor (symsm/backends/llvm/structured.py): equal to the numpy reference
executor and to the scalar path, in float64 and float32, at odd d; per-row outputs; block objects cached on disk
(a second process loads them, a bad file is rebuilt); "auto" picks the structured path where it wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_structured import MODELS, _close, _ica, _theta

import symsm
from symsm.backends.llvm.structured import translate
from symsm.core.errors import ModelError
from symsm.derive.derivation import Derivation
from symsm.ir.blocks import build_block_programs, data_degree
from symsm.runtime.compiled import STRUCTURED_AUTO_MIN_DIM

ROOT = Path(__file__).resolve().parents[1]


def _rel(a, b, tol):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (np.abs(b).max() + 1.0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_llvm_equals_numpy_executor_and_scalar_path(name):
    model = MODELS[name]()
    X = np.random.default_rng(0).normal(size=(1000, model.dim))
    theta = _theta(model)
    llvm = model.compile(path="structured")
    ref = model.compile(path="structured", backend="numba-python")
    scalar = model.compile(path="graph")
    assert "llvm-blocks" in llvm.source and "blocks-numpy" in ref.source
    v1, g1 = llvm.value_and_grad(theta, X)
    v2, g2 = ref.value_and_grad(theta, X)
    v3, g3 = scalar.value_and_grad(theta, X)
    _close(v1, v2)
    _close(g1, g2)
    _close(v1, v3)
    _close(g1, g3)
    _close(llvm.value(theta, X), v3)
    _close(llvm.per_sample(theta, X), scalar.per_sample(theta, X))
    _close(llvm.score(theta, X), scalar.score(theta, X))
    l32 = model.compile(path="structured", dtype=np.float32)
    r32 = model.compile(path="structured", dtype=np.float32, backend="numba-python")
    v4, g4 = l32.value_and_grad(theta, X)
    _rel(v4, v1, 1e-4)
    _rel(g4, g1, 1e-4)
    _rel(g4, r32.value_and_grad(theta, X)[1], 1e-4)
    _rel(l32.score(theta, X), scalar.score(theta, X), 1e-4)


@pytest.mark.parametrize("d", [1, 5, 7, 13, 17])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_odd_dimensions(d, dtype):
    model = _ica(d, bias=True)
    rng = np.random.default_rng(d)
    X = rng.normal(size=(777, d))
    theta = _theta(model, seed=d) * 0.5
    got = model.compile(path="structured", dtype=dtype).value_and_grad(theta, X)
    ref = model.compile(path="structured", backend="numba-python").value_and_grad(theta, X)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    _rel(got[0], ref[0], tol)
    _rel(got[1], ref[1], tol)


def test_translation_covers_every_program_and_kernel():
    for name in sorted(MODELS):
        model = MODELS[name]()
        programs = build_block_programs(Derivation(model, path="structured").structured, model)
        for kernel, program in programs.items():
            translated = translate(program)
            assert translated.dim == model.dim, (name, kernel)


def test_data_degree_flags_quadratic_integrands():
    assert MODELS["gaussian"]().compile(path="structured")._module.QUADRATIC_IN_DATA
    assert not MODELS["ica"]().compile(path="structured")._module.QUADRATIC_IN_DATA
    model = MODELS["rbm"]()
    programs = build_block_programs(Derivation(model, path="structured").structured, model)
    assert data_degree(programs["per_sample"]) == float("inf")


def _vector_ica(d: int) -> symsm.Model:
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    return symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name=f"ica_auto_{d}")


def test_auto_picks_the_structured_path_where_it_wins():
    big = _vector_ica(STRUCTURED_AUTO_MIN_DIM)
    small = _vector_ica(4)
    assert big.compile().derivation_path == "structured"
    assert small.compile().derivation_path == "auto"  # below the measured crossover: the scalar kernels
    assert big.compile(backend="numba-python").derivation_path == "auto"  # only a compiled block executor
    assert big.compile(path="graph").derivation_path == "graph"
    X = np.random.default_rng(3).normal(size=(500, STRUCTURED_AUTO_MIN_DIM))
    theta = np.eye(STRUCTURED_AUTO_MIN_DIM).ravel() * 0.7
    _close(big.compile().value_and_grad(theta, X)[1], big.compile(path="graph").value_and_grad(theta, X)[1])


def test_auto_falls_back_to_the_scalar_path_for_unsupported_vector_models():
    d = STRUCTURED_AUTO_MIN_DIM
    x = symsm.data_vector("x", d)
    W = symsm.param_matrix("W", d, d)
    model = symsm.Model(symsm.sum(symsm.log(symsm.cosh(W @ symsm.tanh(x)))), x, [W], name="unsupported_auto")
    with pytest.raises(ModelError, match="not affine in the data"):
        model.compile(path="structured")
    assert model.compile().derivation_path == "auto"


PROBE = textwrap.dedent(
    """
    import json
    import numpy as np
    import symsm
    from symsm.core import cache
    x = symsm.data_vector("x", 9)
    W = symsm.param_matrix("W", 9, 9)
    model = symsm.Model(symsm.sum(-symsm.log(symsm.cosh(W @ x))), x, [W], name="blocks_cache_probe")
    loss = model.compile(path="structured")
    X = np.linspace(-2, 2, 9 * 301).reshape(301, 9)
    value, grad = loss.value_and_grad(np.eye(9).ravel() * 0.8, X)
    print(json.dumps({
        "events": [e.kind for e in cache.events() if "/" not in e.key],
        "code_events": [e.kind for e in cache.events() if "/blocks-" in e.key],
        "objects": sorted(p.name for p in loss.path.parent.glob(loss.path.stem + ".blocks-*.o")),
        "value": value,
        "grad": grad.tolist(),
    }))
    """
)


def _probe(cache_dir: Path) -> dict:
    env = {**os.environ, "SYMSM_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_block_objects_are_cached_and_verified(tmp_path):
    first = _probe(tmp_path)
    assert first["events"] == ["generated"] and first["code_events"] == ["machine code compiled"]
    assert len(first["objects"]) == 1
    second = _probe(tmp_path)
    assert second["events"] == ["loaded"] and second["code_events"] == ["machine code loaded"]
    assert second["value"] == first["value"] and second["grad"] == first["grad"]
    obj = tmp_path / first["objects"][0]
    data = bytearray(obj.read_bytes())
    data[-10] ^= 0xFF  # a corrupt object is rebuilt, never loaded
    obj.write_bytes(bytes(data))
    again = _probe(tmp_path)
    assert again["code_events"] == ["machine code compiled"] and again["value"] == first["value"]
    obj.write_bytes(obj.read_bytes().replace(b"symsm-object-v1", b"symsm-object-v0", 1))  # foreign header
    assert _probe(tmp_path)["code_events"] == ["machine code compiled"]


def test_fit_on_the_structured_path_skips_standard_errors_for_large_models_clearly():
    from symsm.fitting.fit import STRUCTURED_SE_MAX_PARAMS

    d = 65
    assert d * d > STRUCTURED_SE_MAX_PARAMS
    model = _vector_ica(d)
    rng = np.random.default_rng(11)
    X = rng.laplace(size=(1000, d))
    loss = model.compile()
    assert loss.derivation_path == "structured"
    result = symsm.fit(loss, X, np.eye(d).ravel(), options={"maxiter": 10})
    assert np.all(np.isnan(result.se))
    assert "no Newton steps or standard errors" in result.message
    assert loss.value(result.theta, X) < loss.value(np.eye(d).ravel(), X)


def test_dask_runs_structured_losses():
    da = pytest.importorskip("dask.array")
    model = _vector_ica(STRUCTURED_AUTO_MIN_DIM)
    loss = model.compile()
    assert loss.derivation_path == "structured"
    X = np.random.default_rng(12).normal(size=(2000, STRUCTURED_AUTO_MIN_DIM))
    theta = np.eye(STRUCTURED_AUTO_MIN_DIM).ravel() * 0.9
    v1, g1 = loss.value_and_grad(theta, da.from_array(X, chunks=(700, STRUCTURED_AUTO_MIN_DIM)))
    v2, g2 = loss.value_and_grad(theta, X)
    _close(v1, v2)
    _close(g1, g2)


@pytest.mark.parametrize("name", ["ica", "gaussian"])
def test_non_finite_data_tested_by_the_kernel(name):
    """The value kernels test X as they read it (the host's own pass over X is left out): a NaN or ±inf entry still
    gives X's error naming its row and column, for value and value_and_grad, in float64 and float32 (where a float64
    entry beyond float32's range becomes inf); huge finite rows whose column sums overflow are no error."""
    model = MODELS[name]()
    theta = _theta(model)
    X = np.random.default_rng(3).normal(size=(700, model.dim))
    for dtype in (np.float64, np.float32):
        loss = model.compile(path="structured", dtype=dtype)
        assert "CHECKS_FINITE_DATA = True" in loss.source
        for bad in (np.nan, np.inf, -np.inf):
            Y = X.copy()
            Y[611, 1] = bad
            for call in (loss.value_and_grad, loss.value):
                with pytest.raises(ValueError, match=r"non-finite values .*row 611, column 1"):
                    call(theta, Y)
        if dtype == np.float32:
            Y = X.copy()
            Y[5, 0] = 1e39
            with pytest.raises(ValueError, match=r"non-finite values .*row 5, column 0"):
                loss.value_and_grad(theta, Y)
    if name == "ica":  # column sums of 1e307 overflow; the rows are finite, tanh saturates: a finite result
        Y = X.copy()
        Y[:, 0] = 1e307
        loss = model.compile(path="structured")
        ref = model.compile(path="structured", backend="numba-python")
        v, g = loss.value_and_grad(theta, Y)
        v_ref, g_ref = ref.value_and_grad(theta, Y)
        assert np.isfinite(v) and np.isfinite(g).all()
        _close(v, v_ref)
        _close(g, g_ref)


def test_float32_loss_reads_float64_rows():
    """A float32 loss given float64 rows rounds them in the kernel (no float32 copy of X): the same bits as the
    rows converted by numpy first, for value and value_and_grad; per-row outputs too."""
    model = MODELS["ica_bias"]()
    theta = _theta(model)
    X = np.random.default_rng(4).normal(size=(1001, model.dim))
    loss = model.compile(path="structured", dtype=np.float32)
    assert "FLOAT64_ROWS = True" in loss.source
    X32 = X.astype(np.float32)
    v64, g64 = loss.value_and_grad(theta, X)
    v32, g32 = loss.value_and_grad(theta, X32)
    assert v64 == v32 and np.array_equal(g64, g32)
    assert set(loss._module._kernel("value_and_grad").natives) == {"float32", "float64"}
    assert loss.value(theta, X) == loss.value(theta, X32)
    assert np.array_equal(loss.per_sample(theta, X), loss.per_sample(theta, X32))
    assert np.array_equal(loss.score(theta, X), loss.score(theta, X32))
