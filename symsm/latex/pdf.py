"""The LaTeX document of a derivation written to a ``.tex`` file (`write_latex`) and compiled with pdflatex
(`compile_pdf`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .derivation import _as_derivation, derivation_latex
from .printer import LatexError

if TYPE_CHECKING:
    from ..derive.derivation import Derivation
    from ..model.model import Model

__all__ = ["LatexFiles", "compile_pdf", "pdflatex_available", "write_latex"]


@dataclass(frozen=True)
class LatexFiles:
    """What `write_latex` wrote: the ``.tex`` file and, when asked for, the compiled ``.pdf``."""

    tex: Path
    pdf: Path | None = None


def pdflatex_available() -> bool:
    """True when a ``pdflatex`` executable is on PATH."""
    return shutil.which("pdflatex") is not None


def compile_pdf(tex_path: str | os.PathLike[str], *, timeout: float = 120.0, keep_log: bool = False) -> Path:
    """Compile `tex_path` with pdflatex (no shell escape) and put the ``.pdf`` next to it.

    pdflatex runs in a temporary directory, so its ``.aux`` and ``.log`` files do not litter the
    output folder (``keep_log=True`` keeps the ``.log`` next to the ``.pdf``, e.g. to look for overfull
    lines); on failure the error lines of the log are in the `LatexError`.
    """
    tex_path = Path(tex_path)
    if not tex_path.is_file():
        raise LatexError(f"tex_path: no such file {str(tex_path)!r}")
    exe = shutil.which("pdflatex")
    if exe is None:
        raise LatexError(
            "pdflatex was not found on PATH; install it (Debian/Ubuntu: "
            "apt-get install -y --no-install-recommends texlive-latex-base) or write the .tex only"
        )
    with tempfile.TemporaryDirectory(prefix="symsm-latex-") as work:
        cmd = [exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", f"-output-directory={work}"]
        try:
            proc = subprocess.run(
                [*cmd, str(tex_path.resolve())],
                cwd=work,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LatexError(f"pdflatex did not finish within {timeout} s on {tex_path}") from None
        produced = Path(work) / (tex_path.stem + ".pdf")
        if proc.returncode != 0 or not produced.is_file():
            log = Path(work) / (tex_path.stem + ".log")
            text = log.read_text(errors="replace") if log.is_file() else proc.stdout
            errors = [ln for ln in text.splitlines() if ln.startswith("!") or ln.startswith("l.")]
            detail = "\n".join(errors[:10]) or text[-2000:]
            raise LatexError(f"pdflatex failed on {tex_path} (exit {proc.returncode}):\n{detail}")
        target = tex_path.with_suffix(".pdf")
        shutil.move(str(produced), target)
        if keep_log:
            shutil.move(str(Path(work) / (tex_path.stem + ".log")), tex_path.with_suffix(".log"))
    return target


def write_latex(
    derivation: Derivation | Model,
    path: str | os.PathLike[str],
    pdf: bool = False,
    *,
    keep_log: bool = False,
    **options: Any,
) -> LatexFiles:
    """Write the full LaTeX document of the derivation to `path` (and compile it to PDF if `pdf`).

    `derivation` may also be a `Model`, which is derived first. Options are those of
    `derivation_latex`. The file is written to a temporary name and renamed, so a reader never sees
    half a file.
    """
    derivation = _as_derivation(derivation)
    path = Path(path)
    if path.suffix != ".tex":
        raise ValueError(f"path must end in .tex, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"path: the directory {str(path.parent)!r} does not exist")
    text = derivation_latex(derivation, full_document=True, **options)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return LatexFiles(tex=path, pdf=compile_pdf(path, keep_log=keep_log) if pdf else None)
