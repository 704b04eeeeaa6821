"""Stage 5 — runtime: compiling a model (cache key, the one loader), `CompiledLoss`, the fitting
accumulators, and where the data live (host arrays, Dask arrays, device arrays)."""

from .compiled import CompiledLoss, compile_model

__all__ = ["CompiledLoss", "compile_model"]
