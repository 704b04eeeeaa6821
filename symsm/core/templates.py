"""jinja2 rendering for every stage that writes text from templates (the backends, the LaTeX writer).

Templates live with the package that owns them (``symsm/backends/<name>/templates``,
``symsm/latex/templates``) and ship inside the wheel as that package's data. Every environment is strict
(``StrictUndefined``): a variable the caller forgot fails loudly instead of printing nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

__all__ = ["LATEX_SYNTAX", "package_digest", "render", "template_dir"]

# LaTeX uses { } and % heavily, so LaTeX templates (names ending .tex.j2) use these delimiters instead.
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
def template_dir(package: str) -> Path:
    """The `templates/` folder of `package` (e.g. ``"symsm.backends.llvm"``), installed or in the source tree."""
    folder = Path(str(resources.files(package))) / "templates"
    if not folder.is_dir():
        raise FileNotFoundError(f"symsm's templates are missing: {package} has no templates/ folder ({folder})")
    return folder


@cache
def _environment(package: str, latex: bool) -> jinja2.Environment:
    options: dict[str, Any] = LATEX_SYNTAX if latex else {}
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir(package))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        **options,
    )


def render(package: str, name: str, **context: Any) -> str:
    """Render template `name` of `package` with `context`; a missing variable raises (StrictUndefined)."""
    return _environment(package, name.endswith(".tex.j2")).get_template(name).render(**context)


def package_digest(packages: Iterable[str]) -> str:
    """sha256 over the Python sources and code templates of `packages` (dotted names, each with its
    subpackages): part of every cache key, so a change to any code that shapes a generated module gives new
    modules. LaTeX templates are left out: they shape no kernel."""
    return _digest(tuple(sorted(set(packages))))


@cache
def _digest(packages: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for package in packages:
        root = Path(str(resources.files(package)))
        files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".j2") and not p.name.endswith(".tex.j2"))
        for path in files:
            if "__pycache__" in path.parts:
                continue
            h.update(f"{package}/{path.relative_to(root).as_posix()}".encode())
            h.update(path.read_bytes())
    return h.hexdigest()
