"""Stage 2 — derivation: the score, ∂ᵢ² log f and the objective, exactly, by sympy (derivation.py) or by
automatic differentiation on an expression graph (graph.py); the objective variants (objectives.py); the split
of an integrand into its θ-affine terms with θ-free coefficients and the rest (separable.py, for `loss.bind`).

Nothing is imported here: a process that only runs cached kernels (a Dask worker) imports objectives.py for
the objective's options without loading sympy's derivation or the graph.
"""
