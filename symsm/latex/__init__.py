"""Stage 7 — LaTeX of the model, the derivation and the objective variants, for teaching.

Teachers want the derivation of score matching for *their* model, not a generic text. `derivation_latex`
instantiates the steps of the standard integration-by-parts derivation (Hyvärinen 2005) for a
`Derivation`: the model (Step 0), its score written out component by component (Step 1), the Fisher
divergence (Step 2), the expansion of the square (Step 3), integration by parts with the boundary
condition for each coordinate (Step 4), and the empirical objective with ∂ᵢ² log f and the θ-gradient
written out (Step 5). For a model on the non-negative orthant (``domain="nonnegative"``) Steps 2–5 are
those of generalized score matching (Hyvärinen 2007; Yu, Drton & Shojaie 2019): the Fisher divergence
weighted by the model's h(xᵢ), integration by parts over [0, ∞) with the boundary condition at 0 and at ∞,
and the weighted objective; on a box (``domain=symsm.Box(lower, upper)``) the weight is h of each coordinate's
distance to the nearer finite end, shown per coordinate with its piecewise derivative (a Heaviside step printed
as an indicator 𝟏[u > 0]), and the boundary conditions are taken at each end. The narrative lives in
``templates/derivation.tex.j2``; everything instantiated is computed in Python and handed to the template as
strings and lists of strings.

How expressions are shown:

* Symbols print as mathematicians write them (``mu0`` → ``\\mu_{0}``, ``W_0_1`` → ``W_{01}``,
  ``nu`` → ``\\nu``) through `SymsmLatexPrinter`, a sympy `LatexPrinter` subclass; the printed LaTeX is
  never edited as a string.
* Long expressions are broken across the lines of an ``align*`` at top-level ``+``/``−`` (and inside the
  widest bracketed sum of a product), using an estimate of the typeset width of each term.
* Sums the model spells out term by term (``W_00 x0 + W_01 x1 + …``) are rolled back into ``\\sum_j``
  where the terms follow one index; the general component (``s_{θ,i}`` for every i) is found the same
  way. Every rolled-up form is expanded again and compared with the exact expression before it is
  shown, so a general term is printed only when it is right for every component.
* For large d (more than ``max_components`` coordinates) the general term and a few components are
  shown, and the text says so; expressions longer than ``max_lines`` lines are shortened visibly.

The same body renders three ways: a fragment for ``\\input`` or a notebook (``_repr_latex_``; plain
text and ``align*`` only, which MathJax also understands), a full document that compiles with pdflatex
and amsmath alone, and `write_latex` which writes the ``.tex`` (and, on request, the ``.pdf``).

The modules, each importing only those before it:

* ``printer`` — the sympy printer: symbol names and indices, term order; text escaping, `LatexError`;
* ``sums`` — sums rolled up and general terms found (each checked), repeated subexpressions counted;
* ``layout`` — typeset widths, equations broken across lines, the layout options;
* ``derivation`` — `derivation_latex` (Steps 0 to 5) and `model_latex`;
* ``objectives`` — `objective_latex`, the sliced and denoising variants;
* ``pdf`` — `write_latex` and `compile_pdf`.
"""

from .derivation import derivation_latex, model_latex
from .objectives import objective_latex
from .pdf import LatexFiles, compile_pdf, pdflatex_available, write_latex
from .printer import LatexError, SymsmLatexPrinter, latex_symbol_name

__all__ = [
    "LatexError",
    "LatexFiles",
    "SymsmLatexPrinter",
    "compile_pdf",
    "derivation_latex",
    "latex_symbol_name",
    "model_latex",
    "objective_latex",
    "pdflatex_available",
    "write_latex",
]
