"""symsm.modelfile: TOML model files and data files, every key checked, errors naming file, key and problem."""

from __future__ import annotations

import ast
import io
import pickle
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from bounds import bounded_work

import symsm
from symsm.model.modelfile import ModelFileError, example_models, load_data, load_model

FULL = """
name = "full_example"
description = "every key of the format"
data = ["x0", "x1"]
params = ["a", {name = "s", positive = true}, {name = "W", shape = [2, 2]},
          {name = "M", shape = [2, 2], symmetric = true}, {name = "b", shape = [2]}]
log_f = \"\"\"
  -(W[0, 0]*x0 + W_0_1*x1)**2/(2*s**2) - (W[1, 0]*x0 + W[1, 1]*x1)**2/2
  - M[0, 0]*x0**4 - M[1, 0]*x0**2*x1**2 - M[1, 1]*x1**4 + b[0]*x0 + b[1]*x1 + a*x0*x1
\"\"\"
domain = "real"

[init]
s = 2.0
W = [[1.0, 0.5], [0.0, 1.0]]
M = [[0.1, 0.2], [0.2, 0.3]]
"""


def write(tmp_path: Path, text: str, name: str = "model.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_key_of_the_format(tmp_path):
    model = load_model(write(tmp_path, FULL))
    assert model.name == "full_example" and model.description == "every key of the format"
    assert model.data_names == ["x0", "x1"]
    assert model.param_names == [
        "a", "s", "W_0_0", "W_0_1", "W_1_0", "W_1_1", "M_0_0", "M_0_1", "M_1_1", "b_0", "b_1",
    ]  # fmt: skip
    names = {str(p): p for p in model.params}
    assert names["s"].is_positive and not names["a"].is_positive
    x0, x1 = model.data
    assert sp.expand(model.log_f).coeff(x0**2 * x1**2) == -names["M_0_1"]  # M[1, 0] is M[0, 1]
    theta = model.unpack(model.default_theta())
    assert theta["s"] == 2.0 and theta["a"] == 0.0
    np.testing.assert_array_equal(theta["W"], [[1.0, 0.5], [0.0, 1.0]])
    np.testing.assert_array_equal(theta["M"], [[0.1, 0.2], [0.2, 0.3]])
    np.testing.assert_array_equal(np.ravel(theta["b"]), [0.0, 0.0])  # Model unpacks shape [2] as (2, 1)


def test_name_defaults_to_the_file_name(tmp_path):
    path = write(tmp_path, 'data = ["x"]\nparams = ["m"]\nlog_f = "-(x - m)**2/2"\n', "my_model.toml")
    assert load_model(path).name == "my_model"


@pytest.mark.parametrize("name", ["student_t_2d", "gaussian_2d", "ica_3d"])
def test_bundled_examples_load_by_name_and_by_path(name):
    by_name = load_model(name)
    by_path = load_model(example_models()[name])
    assert by_name.hash == by_path.hash and by_name.name == name
    assert by_name.description


# (file text, key the error names, regex for the problem)
BAD = [
    ('parms = ["m"]\ndata = ["x"]\nlog_f = "x"', "parms", "unknown key"),
    ('data = ["x"]\nparams = ["m"]', "log_f", "is missing"),
    ('data = 3\nparams = ["m"]\nlog_f = "x*m"', "data", "expected an array of names, got an integer"),
    ('data = ["x-0"]\nparams = ["m"]\nlog_f = "x*m"', "data", "not a valid name"),
    ('data = ["x", "x"]\nparams = ["m"]\nlog_f = "x*m"', "data", "repeated"),
    ('data = ["x"]\nparams = []\nlog_f = "x"', "params", "non-empty array"),
    ('data = ["x"]\nparams = ["m", 3]\nlog_f = "x*m"', "params[1]", "expected a name or a table"),
    ('data = ["x"]\nparams = [{name = "W", shape = [0, 2]}]\nlog_f = "x"', "params[0].shape", "positive integers"),
    ('data = ["x"]\nparams = [{name = "W", shape = "2x2"}]\nlog_f = "x"', "params[0].shape", "positive integers"),
    ('data = ["x"]\nparams = [{name = "s", positive = "yes"}]\nlog_f = "x"', "params[0].positive", "true or false"),
    (
        'data = ["x"]\nparams = [{name = "M", shape = [2, 3], symmetric = true}]\nlog_f = "x"',
        "params[0].symmetric",
        "square shape",
    ),
    ('data = ["x"]\nparams = [{name = "M", symmetric = true}]\nlog_f = "x"', "params[0].symmetric", "needs shape"),
    ('data = ["x"]\nparams = [{name = "m", colour = "red"}]\nlog_f = "x"', "params[0].colour", "unknown key"),
    ('data = ["x"]\nparams = ["m", {shape = [2]}]\nlog_f = "x"', "params[1].name", "is missing"),
    ('data = ["x"]\nparams = ["m", "m"]\nlog_f = "x*m"', "params[1].name", "declared twice"),
    ('data = ["x"]\nparams = ["x"]\nlog_f = "x"', "params[0]", "already a data name"),
    ('data = ["x"]\nparams = [{name = "W", shape = [2, 2]}, "W_0_1"]\nlog_f = "x"', "params[1]", "already a parameter"),
    (
        'data = ["x"]\nparams = [{name = "W", shape = [100000, 100000]}]\nlog_f = "x"',
        "params[0]",
        "above the limit 100000",
    ),
    ('data = ["x"]\nparams = ["m"]\nlog_f = 3', "log_f", "expected a formula string"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m + y"', "log_f", "undeclared name 'y'"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "m**2"', "log_f", "does not depend on the data"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m + abs(x)"', "log_f", "call to 'abs' is not allowed"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\ndomain = "complex"', "domain", "expected one of 'real'"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\ninit = 3', "init", "expected a table"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\n[init]\nm = "one"', "init.m", "expected a number, got a string"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\n[init]\nm = inf', "init.m", "finite"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\n[init]\nm = 1' + "0" * 400, "init.m", "finite"),
    ('data = ["x"]\nparams = ["m"]\nlog_f = "x*m"\n[init]\nq = 1.0', "init", "unknown parameter 'q'"),
    (
        'data = ["x"]\nparams = [{name = "s", positive = true}]\nlog_f = "-x**2/s"\n[init]\ns = -1.0',
        "init",
        "non-positive",
    ),
    (
        'data = ["x"]\nparams = [{name = "W", shape = [2, 2]}]\nlog_f = "-(W[0,0]*x)**2 - W[0,1]*x - W[1,0]*x**3'
        ' - W[1,1]*x**4"\n[init]\nW = [1.0, 2.0]',
        "init",
        r"must have shape \(2, 2\)",
    ),
    ('name = "a\\nimport os"\ndata = ["x"]\nparams = ["m"]\nlog_f = "x*m"', "name", "printable text"),
    ('name = \'x"""; import os; """\'\ndata = ["x"]\nparams = ["m"]\nlog_f = "x*m"', "name", "without quotes"),
    ('name = 3\ndata = ["x"]\nparams = ["m"]\nlog_f = "x*m"', "name", "expected a string"),
    ('description = "\\u001b[2J"\ndata = ["x"]\nparams = ["m"]\nlog_f = "x*m"', "description", "non-printable"),
]


@pytest.mark.parametrize("text, key, problem", BAD, ids=[f"{k}-{p[:20]}" for _, k, p in BAD])
def test_errors_name_the_file_the_key_and_the_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with bounded_work(max_operands=5_000, max_peak_bytes=32 * 2**20), pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert info.value.key == key and info.value.path == str(path)
    assert "\n" not in message
    assert re.search(problem, info.value.problem), message


def test_errors_about_the_file_itself(tmp_path):
    with pytest.raises(ModelFileError, match=r"no such model file \(bundled examples: .*student_t_2d"):
        load_model(tmp_path / "missing.toml")
    with pytest.raises(ModelFileError, match="is not a regular file"):
        load_model(tmp_path)
    with pytest.raises(ModelFileError, match=r"is not valid TOML: .*line 1"):
        load_model(write(tmp_path, "name = \n"))
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ModelFileError, match="is not UTF-8"):
        load_model(bad)
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as fh:
        fh.truncate(50_000_000)  # sparse: 50 MB of zeros, refused from its size without being read
    # refused from its size: nothing like the 50 MB is read (a bound on memory, not on time)
    with (
        bounded_work(max_operands=0, max_peak_bytes=2**20),
        pytest.raises(ModelFileError, match="the limit is 4000000"),
    ):
        load_model(huge)


HOSTILE_FORMULAS = [
    "__import__('os').system('touch pwned')",
    "open('pwned', 'w').write('x')",
    "x.__class__.__mro__[1].__subclasses__()",
    "(lambda: __import__('os').system('touch pwned'))()",
    "9**9**9",
    "x**99999999",
    "x" + "*x" * 200_000,
]


@pytest.mark.parametrize("formula", HOSTILE_FORMULAS, ids=lambda f: f[:25])
def test_hostile_formulas_in_a_model_file_are_refused_without_side_effects(tmp_path, monkeypatch, formula):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hostile.toml"
    path.write_text(f'data = ["x"]\nparams = ["m"]\nlog_f = {formula!r}\n'.replace("\\'", "'"))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert info.value.key == "log_f"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.toml"]


def test_a_model_name_cannot_inject_code_into_generated_modules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ['x"""\nimport os; os.system("touch pwned")\n"""', "a\rimport os", "a\\", "x\u2028y"]:
        with pytest.raises(symsm.ModelError, match="name must be printable text"):
            symsm.Model.from_string("-x**2*m", data="x", params="m", name=name)
    # Allowed but awkward characters stay inside the comment and the docstring of the generated module.
    from symsm.backends.numba_python.generate import generate_numba_source
    from symsm.ir.kernels import build_kernels

    def module_tree(name: str) -> str:
        der = symsm.Model.from_string("-x**2*m + m*x", data="x", params="m", name=name).derive()
        source = generate_numba_source(der, build_kernels(der), dtype=np.float64, cache_key="0" * 64)
        tree = ast.parse(source)
        doc = tree.body[0]
        assert isinstance(doc, ast.Expr) and name in doc.value.value  # the docstring holds the name
        return ast.dump(ast.Module(tree.body[1:], []))

    tricky = "x''' ) # ( ; import os ; '' # ν"
    assert module_tree(tricky) == module_tree("plain")  # the same code: nothing in the name became code
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- data files
@pytest.fixture
def model2():
    return symsm.Model.from_string("-(x0 - m)**2/2 - x1**2*s", data="x0 x1", params="m s", positive="s")


def test_npy_and_csv_data(tmp_path, model2):
    X = np.random.default_rng(0).normal(size=(50, 2))
    np.save(tmp_path / "X.npy", X)
    np.testing.assert_array_equal(load_data(tmp_path / "X.npy", model2), X)
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",", fmt="%.17g")
    np.testing.assert_array_equal(load_data(tmp_path / "plain.csv", model2), X)
    # a header naming the coordinates in another order, with an extra column: columns chosen by name
    rows = ["id,x1,x0"] + [f"{k},{float(b)!r},{float(a)!r}" for k, (a, b) in enumerate(X)]
    (tmp_path / "named.csv").write_text("\n".join(rows) + "\n")
    np.testing.assert_array_equal(load_data(tmp_path / "named.csv", model2), X)
    # a byte-order mark (spreadsheet exports) is not part of the first name
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfx1,x0\n2,1\n\n4, 3\n")
    np.testing.assert_array_equal(load_data(tmp_path / "bom.csv", model2), [[1, 2], [3, 4]])
    # a header with other names is an error naming them, even with d columns (never read by position)
    (tmp_path / "other.csv").write_text("u,v\n1,2\n3,4.5\n")
    with pytest.raises(ModelFileError, match=r"line 1: the header names columns 'u', 'v' that are not the model's"):
        load_data(tmp_path / "other.csv", model2)
    # without a header the columns are read by position
    (tmp_path / "plain.csv").write_text("1,2\n3,4.5\n")
    np.testing.assert_array_equal(load_data(tmp_path / "plain.csv", model2), [[1, 2], [3, 4.5]])
    # one coordinate: a 1-D array is a column
    m1 = symsm.Model.from_string("-(x - m)**2/2", data="x", params="m")
    np.save(tmp_path / "x.npy", X[:, 0])
    assert load_data(tmp_path / "x.npy", m1).shape == (50, 1)


def test_bad_data_files_name_the_file_and_the_problem(tmp_path, model2):
    cases = {
        "three.csv": ("1,2,3\n4,5,6\n", "has 3 columns; the model has d = 2"),
        # positions: file lines counted from 1, data rows and columns (indices into X) from 0
        "text.csv": ("1,2\n3,abc\n", r"line 2: row 1, column 1 \(x1\) is 'abc', not a number"),
        "text_header.csv": ("x0,x1\n1,2\n\n3,abc\n", r"line 4: row 1, column 1 \(x1\) is 'abc', not a number"),
        "nan.csv": ("1,2\nnan,4\n", r"line 2: data value at row 1, column 0 \(x0\) is not finite \(nan\)"),
        "header.csv": ("a,b,c\n1,2,3\n", r"the header names columns 'a', 'b', 'c' that are not the model's coord"),
        "empty.csv": ("", "data file is empty"),
        "X.txt": ("1,2\n", "unknown data format '.txt'"),
    }
    for name, (text, problem) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ModelFileError, match=problem) as info:
            load_data(path, model2)
        assert str(info.value).startswith(f"{path}: ")
    with pytest.raises(ModelFileError, match="no such data file"):
        load_data(tmp_path / "missing.npy", model2)
    np.save(tmp_path / "three_d.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ModelFileError, match=r"2-D array \(N, d\), got shape \(2, 2, 2\)"):
        load_data(tmp_path / "three_d.npy", model2)
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(ModelFileError, match="no rows"):
        load_data(tmp_path / "empty.npy", model2)
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    with pytest.raises(ModelFileError, match="array of real numbers"):
        load_data(tmp_path / "strings.npy", model2)


class _Payload:
    """Unpickling this object would create the file `pwned` in the working directory."""

    def __reduce__(self):
        return (Path.touch, (Path("pwned"),))


def test_npy_with_pickled_objects_is_refused_and_never_unpickled(tmp_path, monkeypatch, model2):
    monkeypatch.chdir(tmp_path)
    arr = np.empty((1, 2), dtype=object)
    arr[0, 0] = _Payload()
    arr[0, 1] = 1.0
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    assert pickle.dumps(arr)  # the payload really is picklable
    with pytest.raises(ModelFileError, match="array of real numbers, got dtype object"):
        load_data(tmp_path / "evil.npy", model2)
    assert not (tmp_path / "pwned").exists()


def test_npy_header_claiming_more_than_the_file_holds_is_refused_before_allocating(tmp_path, model2):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 2)})
    (tmp_path / "liar.npy").write_bytes(header.getvalue() + bytes(64))  # 16 TB claimed, 64 bytes present
    with (
        bounded_work(max_operands=0, max_peak_bytes=2**20),
        pytest.raises(ModelFileError, match=r"header claims shape \(1000000000000, 2\) .* holds 64 bytes"),
    ):
        load_data(tmp_path / "liar.npy", model2)
    (tmp_path / "garbage.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(ModelFileError, match=r"cannot be read as a \.npy array"):
        load_data(tmp_path / "garbage.npy", model2)


@pytest.mark.slow
def test_names_that_shadow_generated_code_give_the_same_loss(tmp_path):
    """Parameter and data names from a file never clash with the names the generated module uses."""
    path = write(
        tmp_path,
        """
        data = ["X", "theta"]
        params = ["np", "math", "exec", {name = "out", positive = true}]
        log_f = "-(X - np)**2/(2*out**2) - (theta - math)**2/2 + exec*X*theta"
        """,
    )
    shadowing = load_model(path)
    plain = symsm.Model.from_string(
        "-(a - p)**2/(2*q**2) - (b - r)**2/2 + t*a*b", data="a b", params="p r t q", positive="q"
    )
    X = np.random.default_rng(0).normal(size=(100, 2))
    theta = np.array([0.3, -0.2, 0.1, 1.3])
    value, grad = shadowing.compile().value_and_grad(theta, X)
    ref_value, ref_grad = plain.compile().value_and_grad(theta, X)
    assert value == pytest.approx(ref_value, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)
