"""Sphinx configuration of symsm's documentation: ``python -m sphinx -W -b html docs docs/_build/html``.

The pages are assembled here, before Sphinx reads its sources, from what the repository already holds, so
nothing is written twice:

* ``generated/guide/`` — the README, one page per section (its "## " headings);
* ``generated/notebooks/`` — copies of ``notebooks/*.ipynb``, executed by myst-nb during the build (their
  derivations, printed results and plots land in the pages; an error in a notebook fails the build);
* ``generated/gallery/`` — one page per shipped model (``symsm/model/models/*.toml``): the file, the
  derivation as ``symsm derive`` prints it, and its score, ∂ᵢ² log f and objective typeset.

The API reference (``api.md``) is autodoc of the public API with numpydoc docstrings.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import symsm  # noqa: E402

project = "symsm"
author = "the symsm developers"
copyright = "the symsm developers"
release = symsm.__version__

extensions = ["myst_nb", "sphinx.ext.autodoc", "numpydoc"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
html_theme = "furo"
html_title = f"symsm {release}"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# notebooks: executed at every build, an error fails it (this is the step of tests/run_all.sh that runs them)
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_execution_show_tb = True
nb_merge_streams = True

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # numpydoc writes the types from the docstrings
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

GENERATED = DOCS / "generated"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _guide() -> list[str]:
    """The README split at its '## ' headings, one page each, headings raised one level."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    intro, sections = parts[0], parts[1:]
    out = GENERATED / "guide"
    out.mkdir(parents=True)
    pages = []
    intro = re.sub(r"^# .*\n", "# Introduction\n", intro, count=1)
    (out / "00-introduction.md").write_text(intro, encoding="utf-8")
    pages.append("00-introduction")
    for k, section in enumerate(sections, start=1):
        title, _, body = section.partition("\n")
        body = re.sub(r"^(#+) ", lambda m: m.group(1)[1:] + " " if len(m.group(1)) > 1 else m.group(0), body,
                      flags=re.MULTILINE)  # fmt: skip
        name = f"{k:02d}-{_slug(title)}"
        (out / f"{name}.md").write_text(f"# {title}\n{body}", encoding="utf-8")
        pages.append(name)
    toc = "\n".join(pages)
    (out / "index.md").write_text(
        "# Guide\n\nThe README of the repository, one page per section.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
        encoding="utf-8",
    )
    return pages


def _notebooks() -> None:
    out = GENERATED / "notebooks"
    out.mkdir(parents=True)
    names = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy(nb, out / nb.name)
        names.append(nb.stem)
    toc = "\n".join(names)
    (out / "index.md").write_text(
        "# Notebooks\n\nThe teaching notebooks of `notebooks/`, executed when these pages were built. To run them "
        "yourself: `pip install -e '.[notebooks]'`, then `jupyter lab notebooks/`.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
        encoding="utf-8",
    )


def _gallery() -> None:
    import sympy

    from symsm.derive.text import _coordinate_names
    from symsm.latex.printer import _make_printer  # symsm's LaTeX conventions (μ₀, W₀₁, x − m ordering)
    from symsm.model.modelfile import load_model

    out = GENERATED / "gallery"
    out.mkdir(parents=True)
    names = []
    for path in sorted((ROOT / "symsm" / "model" / "models").glob("*.toml")):
        model = load_model(path)
        der = model.derive()
        shown = der.readable
        tex = _make_printer(model, None).doprint
        lines = [f"# {model.name}", "", model.description or "", ""]
        lines += [f"The model file `symsm/model/models/{path.name}` (`symsm derive {path.stem}`):", ""]
        lines += ["```toml", path.read_text(encoding="utf-8").rstrip(), "```", ""]
        lines += ["## Score and second derivatives", "", "$$", rf"\log f(x;\theta) = {tex(model.log_f)}", "$$", ""]
        geometry = getattr(model, "geometry", None)  # the simplex's maps: score in the coordinates z or y
        coords = model.data
        if geometry is not None and geometry.transform is not None:
            coords = [sympy.Symbol(n) for n in _coordinate_names(model, geometry)]
        for x, s, h in zip(coords, shown.score, shown.hessian_diag, strict=True):
            tx = tex(x)
            lines += ["$$", rf"\frac{{\partial \log f}}{{\partial {tx}}} = {tex(s)}", "$$", ""]
            lines += ["$$", rf"\frac{{\partial^2 \log f}}{{\partial {tx}^2}} = {tex(h)}", "$$", ""]
        lines += ["## The derivation as `symsm derive` prints it", "", "```text", str(der), "```", ""]
        (out / f"{path.stem}.md").write_text("\n".join(lines), encoding="utf-8")
        names.append(path.stem)
    toc = "\n".join(names)
    (out / "index.md").write_text(
        "# Gallery of the shipped models\n\nThe models installed with symsm (`symsm/model/models/`), each with its "
        "derivation. Any of them can be named without a path: `symsm derive gaussian_2d`.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n",
        encoding="utf-8",
    )


shutil.rmtree(GENERATED, ignore_errors=True)
_guide()
_notebooks()
_gallery()
