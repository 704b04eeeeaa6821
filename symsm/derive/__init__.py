"""Stage 2 — derivation: the score, ∂ᵢ² log f and the objective, exactly, by sympy (derivation.py) or by
automatic differentiation on an expression graph (graph.py); the objective variants (objectives.py).

Nothing is imported here: a process that only runs cached kernels (a Dask worker) imports objectives.py for
the objective's options without loading sympy's derivation or the graph.
"""
