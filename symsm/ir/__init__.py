"""Stage 3 — kernel IR: backend-independent kernels (per-call prologue, per-row body, epilogue) built from
sympy's derivation or from the expression graph (kernels.py, graph_kernels.py), the passes over them (ir.py),
and the fitting kernel sets (fit_kernels.py). Nothing is imported here: only code generation needs it."""
