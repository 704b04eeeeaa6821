"""The shipped sphere and simplex model files (symsm/model/models/), the model-file keys domain, weight,
transform and a_c, the command line on them (`symsm fit`, `symsm latex`) and their LaTeX derivations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_sphere import sphere_points

from symsm.model.modelfile import ModelFileError, load_model

SHIPPED = ["vmf_3d", "bingham_3d", "fisher_bingham_3d", "dirichlet_3d", "ppi_5d"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_files_load_and_derive(name) -> None:
    model = load_model(name)
    assert model.domain in ("sphere", "simplex") and model.description
    tex = model.derive().to_latex(full_document=True)
    assert r"\end{document}" in tex
    if model.domain == "sphere":
        assert "Laplace--Beltrami" in tex and r"\nabla_S g = P \nabla g" in tex
    else:
        assert "Jacobian" in tex
    text = str(model.derive())
    assert "domain:" in text


def test_bingham_trace_zero_is_identified() -> None:
    """With trace M = 0 written in, the Bingham's A is non-singular (xᵀ(M + cI)x = xᵀMx + c on the sphere would
    make it singular): the closed form recovers M from a sample near the truth."""
    import symsm

    rng = np.random.default_rng(3)
    Y = rng.normal(size=(20000, 3)) * np.array([1.0, 0.6, 0.3])
    X = Y / np.linalg.norm(Y, axis=1, keepdims=True)  # angular Gaussian: Bingham-like, not Bingham
    res = symsm.fit(load_model("bingham_3d"), X)
    assert res.method == "closed_form" and np.all(np.isfinite(res.se)) and np.all(res.se < 0.2)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


BASE = 'data = ["x0", "x1", "x2"]\nparams = ["k0"]\nlog_f = "k0*x0"\n'


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('domain = "sphere"\ntransform = "sqrt"\n', "transform", 'applies to domain = "simplex" only'),
        ('domain = "real"\na_c = 0.1\n', "a_c", 'applies to domain = "sphere" or "simplex" only'),
        ('domain = "simplex"\ntransform = "clr"\n', "transform", "must be one of"),
        ('domain = "simplex"\nweight = "minsq"\na_c = 2.0\n', "a_c", "a_c must be a number in"),
        ('domain = "simplex"\na_c = "x"\n', "a_c", "expected a number"),
    ],
)
def test_model_file_keys_are_checked(tmp_path, extra, key, problem) -> None:
    with pytest.raises(ModelFileError, match=rf"m\.toml: {key}: .*{problem}"):
        load_model(_write(tmp_path, BASE + extra))


def test_model_file_simplex_keys(tmp_path) -> None:
    model = load_model(
        _write(tmp_path, BASE + 'domain = "simplex"\ntransform = "sqrt"\nweight = "prodsq"\na_c = 0.2\n')
    )
    assert (model.geometry.transform, model.geometry.weight_name, model.geometry.a_c) == ("sqrt", "prodsq", 0.2)


def test_cli_fit_on_the_sphere(tmp_path) -> None:
    """`symsm fit vmf_3d --data X.npy --json` gives the closed form k̂ = 2(I − S)⁻¹x̄ (numpy, here)."""
    X = sphere_points(3000, 21)
    np.save(tmp_path / "X.npy", X)
    out = subprocess.run(
        [sys.executable, "-m", "symsm.cli", "fit", "vmf_3d", "--data", str(tmp_path / "X.npy"), "--json"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    fit = json.loads(out.stdout)
    S, xbar = X.T @ X / len(X), X.mean(0)
    np.testing.assert_allclose(fit["theta"], np.linalg.solve(np.eye(3) - S, 2 * xbar), rtol=1e-10)
    bad = X.copy()
    bad[5] *= 3
    np.save(tmp_path / "bad.npy", bad)
    out = subprocess.run(
        [sys.executable, "-m", "symsm.cli", "fit", "vmf_3d", "--data", str(tmp_path / "bad.npy")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 1 and "row 5, with norm 3.0" in out.stderr


def test_penalized_fits_refuse_the_sphere() -> None:
    """The sparse quadratic form is per coordinate (A = Σᵢ mean hᵢ aᵢaᵢᵀ); the sphere's A = mean h FᵀPF is not:
    a penalized fit says so instead of using the wrong A."""
    from symsm.ir.sparse_kernels import sparse_parts

    with pytest.raises(ValueError, match="sparse quadratic form"):
        sparse_parts(load_model("vmf_3d").derive())


def test_cli_derive_json_names_the_map_and_the_weight() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "symsm.cli", "derive", "ppi_5d", "--json", "--no-gradient"],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert (info["domain"], info["transform"], info["weight"], info["a_c"]) == ("simplex", "sqrt", "minsq", 0.01)
    assert len(info["score"]) == 5


@pytest.mark.parametrize("name", ["fisher_bingham_3d"])
def test_cuda_kernels_compile_to_ptx(name) -> None:
    """The sphere's CUDA kernels compile to PTX without a GPU (their numbers, and the sqrt-mapped PPI's, are
    checked under the simulator in tests/cuda/test_cuda_manifold.py; min and its steps in PTX by wip-box's tests)."""
    pytest.importorskip("numba_cuda", reason="the CUDA backend's extra is not installed: pip install 'symsm[cuda]'")
    from symsm.runtime.device import simulator_enabled

    if simulator_enabled():
        pytest.skip("PTX needs numba-cuda's real compiler (NUMBA_ENABLE_CUDASIM is set)")
    ptx = load_model(name).compile(backend="cuda").ptx(cc=(8, 0))
    assert ptx and all(".entry" in text for text in ptx.values())
