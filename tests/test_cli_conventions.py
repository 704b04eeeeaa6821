"""Conventions of the command line (in-process, for speed; tests/test_cli.py runs the console script itself):
-o optional where one output can go to standard output, --verbose on long commands, a missing optional
dependency as one line with the install command, hints for common formula mistakes, CSV headers that must name
the model's coordinates, and positions counted one way (data rows and columns from 0, file lines from 1)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import symsm
from symsm.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 1 and out == "", (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symsm: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_codegen_and_latex_write_to_standard_output_without_o(capsys):
    code, out, _ = _run(capsys, "codegen", "gaussian_2d")
    assert code == 0 and out == symsm.load_model("gaussian_2d").compile().source
    code, out, _ = _run(capsys, "latex", "gaussian_2d")
    assert code == 0 and out.lstrip().startswith("%") and "\\begin{document}" in out and "\\end{document}" in out
    with pytest.raises(SystemExit) as info:
        main(["latex", "gaussian_2d", "--pdf"])
    assert info.value.code == 2 and "latex --pdf needs -o" in capsys.readouterr().err


def test_verbose_on_derive_and_latex(capsys):
    code, _, err = _run(capsys, "derive", "gaussian_2d", "--verbose", "--no-gradient")
    assert code == 0 and "score and ∂ᵢ² log f (d = 2) done in" in err
    code, _, err = _run(capsys, "latex", "gaussian_2d", "--verbose")
    assert code == 0 and "derivation and LaTeX done in" in err


def test_missing_optional_dependency_is_one_line_with_the_install_command(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    _one_line_error(*_run(capsys, "codegen", "gaussian_2d", "--backend", "cuda"), "pip install 'symsm[cuda]'")

    def missing() -> None:
        raise ModuleNotFoundError("No module named 'dask'", name="dask")

    monkeypatch.setattr(sys.modules["symsm.cli.main"], "_model", lambda args: missing())
    _one_line_error(*_run(capsys, "derive", "gaussian_2d"), "install it with: pip install 'symsm[distributed]'")


@pytest.mark.parametrize(
    ("formula", "hint"),
    [
        ("-x0^2", "write x**2"),
        ("-2x0**2", "2*x, not 2x"),
        ("-ln(1 + x0**2)*s", "write log(x)"),
        ("-e**x0 * s", "write E for Euler's number"),
        ("-(x0)(x0)*s", "(a)*(b)"),
    ],
)
def test_formula_mistakes_get_a_hint(capsys, tmp_path, formula, hint):
    path = tmp_path / "m.toml"
    path.write_text(f'data = ["x0"]\nparams = ["s"]\nlog_f = "{formula} * s"\n')
    _one_line_error(*_run(capsys, "derive", str(path)), hint)


def test_csv_header_must_name_the_coordinates_and_positions_count_rows_from_zero(capsys, tmp_path):
    X = np.random.default_rng(0).normal(size=(30, 2))
    wrong = tmp_path / "wrong.csv"
    np.savetxt(wrong, X, delimiter=",", header="a,b", comments="")
    _one_line_error(*_run(capsys, "fit", "gaussian_2d", "--data", str(wrong)), "'a', 'b' that are not the model's")
    bad = tmp_path / "bad.csv"
    bad.write_text("x0,x1\n1,2\n3,4\n5,oops\n")
    _one_line_error(
        *_run(capsys, "fit", "gaussian_2d", "--data", str(bad)), "line 4: row 2, column 1 (x1) is 'oops', not a number"
    )
    nan = tmp_path / "nan.npy"
    X[5, 0] = np.nan
    np.save(nan, X)
    _one_line_error(*_run(capsys, "fit", "gaussian_2d", "--data", str(nan)), "row 5, column 0")
