"""Rendering of the jinja2 templates in `templates/` (shipped in the wheel as `symsm.templates`)."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["TEMPLATE_NAMES", "render", "template_dir", "templates_digest"]

TEMPLATE_NAMES = ("numba_cpu.py.j2", "numba_cuda.py.j2", "derivation.tex.j2")

# LaTeX uses { } and % heavily, so the LaTeX template uses these delimiters instead of jinja's defaults.
LATEX_SYNTAX = {
    "block_start_string": "<%",
    "block_end_string": "%>",
    "variable_start_string": "<<",
    "variable_end_string": ">>",
    "comment_start_string": "<#",
    "comment_end_string": "#>",
    "line_statement_prefix": None,
}


@cache
def template_dir() -> Path:
    """The templates of the installed package (symsm.templates), else the repository's templates/."""
    try:
        installed = Path(str(resources.files("symsm.templates")))
        if (installed / "numba_cpu.py.j2").is_file():
            return installed
    except ModuleNotFoundError:
        pass
    source_tree = Path(__file__).resolve().parents[2] / "templates"
    if (source_tree / "numba_cpu.py.j2").is_file():
        return source_tree
    raise FileNotFoundError("symsm's templates are missing: neither symsm.templates nor ./templates exists")


@cache
def _environment(latex: bool) -> jinja2.Environment:
    options: dict[str, Any] = LATEX_SYNTAX if latex else {}
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        **options,
    )


def render(name: str, **context: Any) -> str:
    """Render template `name` with `context`; a missing variable raises (StrictUndefined)."""
    return _environment(name.endswith(".tex.j2")).get_template(name).render(**context)


@cache
def templates_digest() -> str:
    """sha256 over every template and the code generator's sources: part of each cache key.

    symsm/llvm/ is included: it shapes the machine code numba caches next to a generated module, so a change
    there must give new modules (numba's own cache only watches the module file).
    """
    h = hashlib.sha256()
    codegen = Path(__file__).resolve().parent
    # The LaTeX template does not shape any kernel: editing it must not invalidate compiled kernels.
    files = sorted(p for p in template_dir().glob("*.j2") if not p.name.endswith(".tex.j2")) + sorted(
        codegen.glob("*.py")
    )
    files += sorted((codegen.parent / "llvm").glob("*.py"))
    files += [codegen.parent / "derive.py", codegen.parent / "graph.py", codegen.parent / "objectives.py"]
    for path in files:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()
