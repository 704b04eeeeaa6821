"""symsm — exact symbolic derivation and compiled kernels for score matching."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CacheError, CodegenError, IdentificationError, ModelError, SymsmError
from .fit import FitResult, fit
from .model import Model, ParamGroup, matrix, symmetric
from .modelfile import load_model

__all__ = [
    "CacheError",
    "CodegenError",
    "FitResult",
    "IdentificationError",
    "Model",
    "ModelError",
    "ParamGroup",
    "SymsmError",
    "__version__",
    "fit",
    "load_model",
    "matrix",
    "symmetric",
]
