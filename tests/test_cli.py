"""The console script, run for real in subprocesses: every command, success and failure, exit codes 0/1/2.

Exit status 0 is success, 1 an error in a model or data file (exactly one line on stderr, no traceback
unless --debug), 2 a usage error (argparse's usage and message).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.model.parse import parse_formula

COMMANDS = ("derive", "codegen", "fit", "latex", "demo", "cache")


def run(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    exe = shutil.which("symsm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "symsm.cli", *args]
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600, **kw)


def assert_one_line_error(out: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 1, a single line on stderr starting with "symsm: error:", no traceback, nothing on stdout."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symsm: error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_usage_error(out: subprocess.CompletedProcess, fragment: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("usage: symsm") and fragment in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_console_script_is_installed():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("symsm") == "symsm.cli:main"
    assert shutil.which("symsm"), "the symsm console script is not on PATH (pip install -e .)"


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"symsm {symsm.__version__}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_for_every_command(command):
    out = run(*([command] if command else []), "--help")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith(f"usage: symsm{' ' + command if command else ''}")
    if command is None:
        assert all(c in out.stdout for c in COMMANDS) and "Exit status" in out.stdout
    if command in ("derive", "codegen", "fit", "latex"):
        assert "student_t_2d" in out.stdout  # the bundled examples are named in MODEL's help


@pytest.mark.parametrize(
    "args, fragment",
    [
        ((), "the following arguments are required: COMMAND"),
        (("no-such-command",), "invalid choice: 'no-such-command'"),
        (("derive",), "the following arguments are required: MODEL"),
        (("fit", "student_t_2d"), "the following arguments are required: --data"),
        (("fit", "student_t_2d", "--data", "x.npy", "--method", "magic"), "invalid choice: 'magic'"),
        (("latex", "student_t_2d", "--pdf"), "latex --pdf needs -o FILE.tex"),
        (("codegen", "student_t_2d", "-o", "out", "--backend", "fortran"), "invalid choice: 'fortran'"),
        (("latex", "student_t_2d", "-o", "derivation.pdf"), "must end in .tex"),
        (("cache", "purge"), "invalid choice: 'purge'"),
        (("demo", "--n", "many"), "invalid int value: 'many'"),
        (("derive", "student_t_2d", "--colour"), "unrecognized arguments: --colour"),
    ],
)
def test_usage_errors_exit_2(args, fragment, tmp_path):
    assert_usage_error(run(*args, cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- derive
def test_derive_prints_score_second_derivatives_objective_and_gradient():
    out = run("derive", "student_t_2d")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    text = out.stdout
    for heading in ("score ∂ᵢ log f", "second derivatives ∂ᵢ² log f", "per-sample objective", "gradient"):
        assert heading in text
    for name in ("x0", "x1"):
        assert f"∂/∂{name} log f = " in text and f"∂²/∂{name}² log f = " in text
    for name in ("m0", "m1", "s", "nu"):
        assert f"∂/∂{name} = " in text
    assert "quadratic in θ: no" in text


def test_derive_json_gives_the_exact_score():
    out = run("derive", "student_t_2d", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["model"] == "student_t_2d" and data["params"] == ["m0", "m1", "s", "nu"]
    assert data["quadratic_in_theta"] is False and len(data["gradient"]) == 4
    # Hand-derived score of the bivariate t: ∂ᵢ log f = -(ν + 2)(xᵢ - mᵢ) / (ν s² + r²), r² = Σ (xⱼ - mⱼ)².
    x0, x1, m0, m1 = sp.symbols("x0 x1 m0 m1", real=True)
    s, nu = sp.symbols("s nu", positive=True)
    names = {"x0": x0, "x1": x1, "m0": m0, "m1": m1, "s": s, "nu": nu}
    r2 = (x0 - m0) ** 2 + (x1 - m1) ** 2
    for text, xi, mi in zip(data["score"], (x0, x1), (m0, m1), strict=True):
        assert sp.simplify(parse_formula(text, names) + (nu + 2) * (xi - mi) / (nu * s**2 + r2)) == 0


def test_derive_pretty_and_without_gradient():
    out = run("derive", "gaussian_2d", "--pretty", "--no-gradient")
    assert out.returncode == 0, out.stderr
    assert "gradient" not in out.stdout and "quadratic in θ: yes" in out.stdout
    assert "P₀" in out.stdout or "P_0_0" in out.stdout


def test_derive_does_not_form_a_huge_gradient_unasked(tmp_path):
    nested = "exp(m*x*" * 8 + "x" + ")" * 8  # short, but its symbolic θ-gradient has ~35 000 nodes
    model = tmp_path / "nested.toml"
    model.write_text(f'data = ["x"]\nparams = ["m"]\nlog_f = "-x**2 + {nested}"\n')
    out = run("derive", str(model))
    assert out.returncode == 0, out.stderr
    assert "the θ-gradient is not printed" in out.stdout and "∂/∂m = " not in out.stdout
    out = run("derive", str(model), "--no-gradient", "--json")
    assert out.returncode == 0 and "gradient" not in json.loads(out.stdout)
    assert_usage_error(run("derive", str(model), "--gradient", "--no-gradient"), "not allowed with argument")


def test_model_file_errors_exit_1_with_one_line(tmp_path):
    missing = assert_one_line_error(run("derive", str(tmp_path / "nope.toml")), "no such model file")
    assert "student_t_2d" in missing  # says which bundled examples exist
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("name = \n")
    assert_one_line_error(run("derive", str(bad_toml)), f"{bad_toml}: is not valid TOML")
    typo = tmp_path / "typo.toml"
    typo.write_text('data = ["x"]\nparms = ["m"]\nlog_f = "-(x - m)**2"\n')
    assert_one_line_error(run("derive", str(typo)), f"{typo}: parms: unknown key")
    undeclared = tmp_path / "undeclared.toml"
    undeclared.write_text('data = ["x"]\nparams = ["m"]\nlog_f = "-(x - m)**2 + y"\n')
    assert_one_line_error(run("derive", str(undeclared)), f"{undeclared}: log_f: undeclared name 'y'")


def test_debug_shows_the_traceback(tmp_path):
    for args in (("derive", "nope.toml", "--debug"), ("--debug", "derive", "nope.toml")):
        out = run(*args, cwd=tmp_path)
        assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
        assert "ModelFileError: nope.toml: no such model file" in out.stderr


HOSTILE_FORMULAS = [
    "__import__('os').system('touch pwned')",
    "open('pwned', 'w').write('x')",
    "().__class__.__bases__[0].__subclasses__()",
    "exp.__globals__['__builtins__']['exec']('open(\"pwned\", \"w\")')",
    "9**9**9",
    "x**99999999",
    "(2**1000*x)**1000",
    "x" + "*x" * 300_000,
]


@pytest.mark.parametrize("formula", HOSTILE_FORMULAS, ids=lambda f: f[:25])
def test_hostile_formulas_through_the_cli_are_refused_without_side_effects(tmp_path, formula):
    model = tmp_path / "hostile.toml"
    model.write_text(f"data = ['x']\nparams = ['m']\nlog_f = {json.dumps(formula)}\n")
    # derive for every formula; codegen (which would write files and compile) for the code-execution ones
    commands = [("derive", str(model))]
    if "pwned" in formula:
        commands.append(("codegen", str(model), "-o", "out"))
    for command in commands:
        line = assert_one_line_error(run(*command, cwd=tmp_path), f"{model}: log_f: ")
        assert len(line) < 700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.toml"]


def test_hostile_model_name_is_refused(tmp_path):
    model = tmp_path / "named.toml"
    model.write_text('name = "x\\"\\"\\"\\nimport os"\ndata = ["x"]\nparams = ["m"]\nlog_f = "-(x - m)**2"\n')
    assert_one_line_error(run("codegen", str(model), "-o", "out", cwd=tmp_path), f"{model}: name: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.toml"]


# ---------------------------------------------------------------------------------------------- codegen
@pytest.mark.parametrize("backend, canonical", [("numba", "llvm"), ("cuda", "cuda")])  # "numba": the old name
def test_codegen_writes_the_generated_module(tmp_path, backend, canonical):
    out = run("codegen", "ica_3d", "--backend", backend, "-o", str(tmp_path / "gen"))
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path / "gen" and path.name == f"ica_3d_{canonical}_float64.py"
    source = path.read_text()
    assert source.startswith("# generated by symsm") and "do not edit" in source.splitlines()[0]
    assert "# model: ica_3d" in source and "W_2_2" in source
    ast.parse(source)  # a complete Python module
    if backend == "cuda":
        assert "cuda" in source
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_codegen_into_a_file_is_an_error(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    assert_one_line_error(run("codegen", "gaussian_2d", "-o", str(target)), "is a file")
    assert target.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------- fit
@pytest.fixture(scope="module")
def gaussian_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    X = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 1.0]], size=4000)
    np.save(folder / "X.npy", X)
    rows = ["x1,x0"] + [f"{float(b)!r},{float(a)!r}" for a, b in X]  # named columns, in another order
    (folder / "X.csv").write_text("\n".join(rows) + "\n")
    return folder, X


def _gaussian_reference(X):
    """Score matching for a Gaussian in natural parameters is exact: P = (sample covariance)⁻¹, h = P·mean."""
    mean = X.mean(axis=0)
    P = np.linalg.inv((X - mean).T @ (X - mean) / len(X))
    return {"P_0_0": P[0, 0], "P_0_1": P[0, 1], "P_1_1": P[1, 1], "h_0": (P @ mean)[0], "h_1": (P @ mean)[1]}


@pytest.mark.parametrize("data_file", ["X.npy", "X.csv"])
def test_fit_json_matches_the_closed_form_answer(gaussian_data, data_file):
    folder, X = gaussian_data
    out = run("fit", "gaussian_2d", "--data", str(folder / data_file), "--json")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    res = json.loads(out.stdout)
    assert res["method"] == "closed_form" and res["converged"] is True and res["n_samples"] == len(X)
    reference = _gaussian_reference(X)
    got = dict(zip(res["param_names"], res["theta"], strict=True))
    for name, value in reference.items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert all(se > 0 for se in res["se"]) and len(res["cov"]) == 5


def test_fit_prints_estimates_standard_errors_and_convergence(gaussian_data):
    folder, _ = gaussian_data
    out = run("fit", "gaussian_2d", "--data", str(folder / "X.npy"))
    assert out.returncode == 0, out.stderr
    assert "method closed_form" in out.stdout and "converged" in out.stdout
    assert re.search(r"P_0_0\s+\S+\s+±\s+\S+", out.stdout)


@pytest.mark.slow
def test_fit_iterative_model_from_csv(tmp_path):
    from symsm.cli.demo import TRUE_THETA, demo_data

    np.savetxt(tmp_path / "t.csv", demo_data(20_000), delimiter=",", header="x0,x1", comments="")
    out = run("fit", "student_t_2d", "--data", str(tmp_path / "t.csv"), "--method", "lbfgs", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["method"] == "lbfgs" and res["converged"] is True
    for name, value, se in zip(res["param_names"], res["theta"], res["se"], strict=True):
        assert abs(value - TRUE_THETA[name]) < 5 * se, (name, value, se)


def test_fit_data_errors_exit_1(tmp_path, gaussian_data):
    folder, _ = gaussian_data
    assert_one_line_error(run("fit", "gaussian_2d", "--data", str(tmp_path / "none.npy")), "no such data file")
    three = tmp_path / "three.csv"
    three.write_text("1,2,3\n4,5,6\n")
    assert_one_line_error(run("fit", "gaussian_2d", "--data", str(three)), "has 3 columns; the model has d = 2")
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2\nnan,4\n")
    assert_one_line_error(run("fit", "gaussian_2d", "--data", str(nan)), "is not finite")
    txt = tmp_path / "X.txt"
    txt.write_text("1,2\n")
    assert_one_line_error(run("fit", "gaussian_2d", "--data", str(txt)), "unknown data format '.txt'")
    assert_one_line_error(
        run("fit", "student_t_2d", "--data", str(folder / "X.npy"), "--method", "closed_form"),
        "needs an objective quadratic in θ",
    )


# ---------------------------------------------------------------------------------------------- latex
def test_latex_writes_a_document(tmp_path):
    out = run("latex", "gaussian_2d", "-o", str(tmp_path / "derivation.tex"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path / "derivation.tex")
    tex = (tmp_path / "derivation.tex").read_text()
    assert r"\documentclass" in tex and r"\begin{document}" in tex and tex.rstrip().endswith(r"\end{document}")
    assert_one_line_error(run("latex", "gaussian_2d", "-o", str(tmp_path / "missing" / "d.tex")), "does not exist")


def test_latex_escapes_text_from_the_model_file(tmp_path):
    model = tmp_path / "evil.toml"
    model.write_text(
        "name = 'evil_{model}$^'\n"
        "description = '\\input{/etc/passwd} \\immediate\\write18{touch pwned} $x$ % # & ~'\n"
        "data = ['x']\nparams = ['m']\nlog_f = '-(x - m)**2/2'\n"
    )
    out = run("latex", str(model), "-o", str(tmp_path / "evil.tex"))
    assert out.returncode == 0, out.stderr
    tex = (tmp_path / "evil.tex").read_text()
    assert "\\input{" not in tex and "\\write18" not in tex and "\\immediate" not in tex
    assert r"\textbackslash{}input\{/etc/passwd\}" in tex  # shown as text, not executed by LaTeX


@pytest.mark.pdflatex
@pytest.mark.slow
def test_latex_pdf(tmp_path):
    out = run("latex", "student_t_2d", "-o", str(tmp_path / "t.tex"), "--pdf")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(tmp_path / "t.tex"), str(tmp_path / "t.pdf")]
    assert (tmp_path / "t.pdf").read_bytes().startswith(b"%PDF")


# ---------------------------------------------------------------------------------------------- cache
def test_cache_info_and_clear(tmp_path):
    env = {"SYMSM_CACHE_DIR": str(tmp_path / "cache")}
    info = json.loads(run("cache", "info", "--json", env=env).stdout)
    assert info["directory"] == str(tmp_path / "cache") and info["modules"] == 0 and info["status"] == "ok"
    assert run("codegen", "gaussian_2d", "-o", str(tmp_path / "gen"), env=env).returncode == 0
    out = run("cache", "info", env=env)
    assert out.returncode == 0 and "modules: 1" in out.stdout and "status: ok" in out.stdout
    out = run("cache", "clear", env=env)
    assert out.returncode == 0 and re.match(r"removed [1-9]\d* file\(s\) from ", out.stdout)
    assert json.loads(run("cache", "info", "--json", env=env).stdout)["modules"] == 0


def test_unsafe_cache_directory_is_an_error(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    env = {"SYMSM_CACHE_DIR": str(shared)}
    assert_one_line_error(run("codegen", "gaussian_2d", "-o", str(tmp_path / "gen"), env=env), "writable by others")
    assert_one_line_error(run("cache", "clear", env=env), "writable by others")
    info = json.loads(run("cache", "info", "--json", env=env).stdout)
    assert info["status"].startswith("refused: cache directory")
    assert not (tmp_path / "gen").exists()


def test_unwritable_cache_location_warns_in_one_line_and_works(tmp_path):
    (tmp_path / "file").write_text("a regular file")
    env = {"SYMSM_CACHE_DIR": str(tmp_path / "file" / "cache")}
    out = run("codegen", "gaussian_2d", "-o", str(tmp_path / "gen"), env=env)
    assert out.returncode == 0
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symsm: warning: symsm cache location")
    assert "private temporary directory" in lines[0]
    assert Path(out.stdout.strip()).is_file()


# ---------------------------------------------------------------------------------------------- demo
@pytest.mark.slow
def test_demo_derives_compiles_and_evaluates(tmp_path):
    out = run("demo", "--n", "5000", "--repeat", "3", env={"SYMSM_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "∂0 log f" in text and "∂1² log f" in text
    path = re.search(r"generated source \((\w+)\): (\S+)", text)
    assert path and path.group(1) == "generated" and os.path.isfile(path.group(2))
    value = float(re.search(r"J̃\(θ₀\) = (\S+)", text).group(1))
    from symsm.cli.demo import demo_data, demo_model

    model = demo_model()
    loss = model.compile()
    assert value == pytest.approx(loss.value(model.default_theta(), demo_data(5000)), rel=1e-9)
    assert "steady value_and_grad" in text
