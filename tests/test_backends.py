"""The backend registry (symsm/backends/registry.py): the records, name resolution, the CLI's choices, and that
no code outside symsm/backends/ decides anything by comparing a backend name to a string."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symsm
from symsm.backends import DEFAULT_BACKEND, Backend, backend_names, backends, get_backend
from symsm.backends.registry import WHERE
from symsm.core.templates import template_dir
from symsm.ir.kernel_set import OUTPUTS, ROW_MATRIX, ROW_VECTOR, SUMS, Kernel, KernelSet
from symsm.ir.kernels import build_kernels
from symsm.runtime.compiled import CompiledLoss, loss_class

ROOT = Path(symsm.__file__).parent


# ---------------------------------------------------------------------------------------------- the records
@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
def test_every_record_is_valid(backend: Backend):
    assert re.fullmatch(r"[a-z][a-z0-9-]*", backend.name)
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", a) for a in backend.aliases)
    assert backend.description and "\n" not in backend.description and len(backend.description) < 120
    assert backend.package.startswith("symsm.backends.")
    assert (template_dir(backend.package)).is_dir() and any(template_dir(backend.package).glob("*.py.j2"))
    module, _, function = backend.generator.partition(":")
    assert module.startswith(backend.package + ".") and function
    assert callable(backend.generator_function())
    assert backend.where in WHERE
    assert issubclass(loss_class(backend.where), CompiledLoss)
    assert not (backend.dask and backend.where != "host")  # a dask worker runs CPU kernels
    fit = get_backend(backend.fit_backend)
    assert fit.name == backend.fit_backend and fit.where == "host"
    assert backend.machine_code
    assert callable(backend.require)


def test_names_and_aliases_are_unique_and_resolve():
    every = backend_names(aliases=True)
    assert len(every) == len(set(every))
    assert backend_names() == tuple(b.name for b in backends())
    assert backend_names()[0] == DEFAULT_BACKEND == "llvm"
    for b in backends():
        for name in b.names:
            assert get_backend(name) is b
    assert get_backend("numba") is get_backend("llvm")  # the old name of the llvmlite backend keeps working


@pytest.mark.parametrize("bad", ["fortran", "LLVM", "", None, 3, ("llvm",)])
def test_unknown_names_give_a_clear_error(bad):
    with pytest.raises(ValueError, match="backend must be one of") as info:
        get_backend(bad)
    message = str(info.value)
    assert all(repr(name) in message for name in backend_names(aliases=True)) and repr(bad) in message


def test_compile_resolves_aliases_and_keys_on_the_canonical_name():
    x, a = sp.symbols("x a", real=True)
    model = symsm.Model(a * x - x**4 / 4, [x], [a], name="registry_alias")
    old, new = model.compile(backend="numba"), model.compile(backend="llvm")
    assert old.backend == new.backend == "llvm" and old.key == new.key
    X = np.linspace(-1.0, 1.0, 7)[:, None]
    assert old.value([0.5], X) == new.value([0.5], X)
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'fortran'"):
        model.compile(backend="fortran")


def test_the_cli_choices_are_the_registry_names():
    from symsm.cli.main import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("codegen", "fit"):
        action = next(a for a in subparsers[command]._actions if a.dest == "backend")
        assert tuple(action.choices) == backend_names()
        assert action.default == DEFAULT_BACKEND
        assert all(b.name in action.help for b in backends())
    args = parser.parse_args(["codegen", "m.toml", "-o", "out", "--backend", "numba"])
    assert args.backend == "llvm"


# ---------------------------------------------------------------------------------------------- kernels
def test_kernels_describe_themselves():
    x, a = sp.symbols("x a", real=True)
    kernels = build_kernels(symsm.Model(a * x - x**4 / 4, [x], [a], name="registry_kernels").derive())
    outputs = {name: k.output for name, k in kernels.items()}
    assert outputs == {"value_and_grad": SUMS, "value": SUMS, "per_sample": ROW_VECTOR, "score": ROW_MATRIX}
    assert all(k.description.isascii() and '"""' not in k.description for _, k in kernels.items())
    assert set(kernels.all()) == set(outputs) and "value" in kernels and kernels["value"].reduces
    ir = kernels["per_sample"].ir
    with pytest.raises(ValueError, match="output must be one of"):
        Kernel(ir, "vector", "")
    with pytest.raises(ValueError, match="needs no per-row outputs"):
        Kernel(ir, SUMS, "")
    with pytest.raises(ValueError, match="already has"):
        KernelSet(dict(kernels.kernels)).add("value", ir, ROW_VECTOR, "")
    assert set(OUTPUTS) == {SUMS, ROW_VECTOR, ROW_MATRIX}


# ---------------------------------------------------------------------------------------------- no name tests
def _backend_literals(node: ast.AST) -> list[str]:
    names = set(backend_names(aliases=True))
    if isinstance(node, ast.Constant) and node.value in names:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in names]
    return []


def _violations(path: Path, root: Path = ROOT) -> list[tuple[str, int, str]]:
    """(file, line, what) for every comparison of a backend name to a literal, and every literal list or
    table of backend names, in the module at `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = str(path.relative_to(root))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):  # backend == "cuda", name in ("numba", "numba-python"), ...
            for side in (node.left, *node.comparators):
                found += [(where, node.lineno, f"compares to {v!r}") for v in _backend_literals(side)]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(_backend_literals(node)) >= 2:
            found.append((where, node.lineno, "a list of backend names"))
        elif isinstance(node, ast.Dict):  # {"numba": ..., "cuda": ...}[backend]
            keys = [k for k in node.keys if k is not None]
            if sum(len(_backend_literals(k)) for k in keys) >= 2:
                found.append((where, node.lineno, "a table keyed by backend names"))
    return found


def test_no_backend_names_are_tested_outside_the_backends():
    """Only the registry knows the names: everything else reads a record (get_backend(name).where, ...)."""
    sources = [p for p in ROOT.rglob("*.py") if "backends" not in p.relative_to(ROOT).parts[:1]]
    assert len(sources) > 20
    problems = [v for path in sources for v in _violations(path)]
    assert problems == []


def test_the_check_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        'if backend == "cuda":\n    pass\nok = name in ("numba", "numba-python")\n'
        'kept = {"numba": 1, "cuda": 2}\nCHOICES = ["llvm", "cuda"]\n'
    )
    assert {line for _, line, _ in _violations(bad, tmp_path)} == {1, 3, 4, 5}
