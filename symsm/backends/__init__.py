"""Stage 4 — backends: one package per backend (printer, templates, generator, kernel runtime)."""
