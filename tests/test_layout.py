"""The package layout: one subpackage per stage, imported one way (import-linter's contract in
pyproject.toml), and no module that depends on the order of lines in symsm/__init__.py."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "symsm"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of_the_root_package(path: Path) -> list[str]:
    """Imports in `path` that load names from the package `symsm` itself (its __init__), not a submodule."""
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "symsm":
                found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ...")
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name == "symsm"]
    return found


def test_no_module_imports_the_root_package():
    """`from . import __version__` in nine modules made `import symsm` depend on the order of the lines of
    symsm/__init__.py (a circular import once __version__ moved below the imports)."""
    offenders = {
        str(p.relative_to(ROOT)): found
        for p in _modules()
        if p != PACKAGE / "__init__.py" and (found := _imports_of_the_root_package(p))
    }
    assert not offenders, offenders


# Every stage's package and the public facades (any module import runs symsm/__init__.py first anyway).
ENTRY_POINTS = sorted(
    {_dotted(p) for p in _modules() if (p.name == "__init__.py" or p.parent == PACKAGE) and p.name != "__main__.py"}
    - {"symsm", "symsm._version"}
)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_stage_imports_first_in_a_fresh_interpreter(module):
    """Each stage imports as the first thing a process does (no hidden dependence on import order)."""
    if module.startswith(("symsm.backends.cuda", "symsm.runtime.device", "symsm.cuda")):
        pytest.importorskip("numba_cuda")
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT)


def test_layers_contract_holds():
    lint = shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency (pip install -e '.[test]')"
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_no_import_cycles_apart_from_the_convenience_methods():
    """Every import that runs (module level or in a function) counts; only the documented convenience methods'
    lazy imports (benchmarks/import_graph.py CONVENIENCE, the contract's ignore_imports) may close a cycle."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.import_graph import measure
    finally:
        sys.path.remove(str(ROOT))
    result = measure(allow_convenience=True)
    assert result["cycles"] == [], result["cycles"]
