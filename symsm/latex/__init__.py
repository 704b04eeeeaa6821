"""Stage 7 — LaTeX of the model, the derivation and the objective variants, for teaching."""

from .latex import compile_pdf, derivation_latex, model_latex, objective_latex, write_latex

__all__ = ["compile_pdf", "derivation_latex", "model_latex", "objective_latex", "write_latex"]
