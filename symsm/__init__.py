"""symsm — exact symbolic derivation and compiled kernels for score matching.

The pipeline is one subpackage per stage, each importing only from the stages before it (an import-linter
contract in CI keeps it so; see the README's "How symsm is built"):

    core → model → derive → ir → backends → runtime → fitting → latex → criticism → cli
"""

from __future__ import annotations

from ._version import __version__
from .core.errors import CacheError, CodegenError, IdentificationError, ModelError, SymsmError
from .criticism import Comparison, KSDResult, compare, ksd_test
from .fitting import L1, FitResult, PathResult, PenalizedFit, Windham, WindhamResult, fit, path
from .model import Model, ParamGroup, load_model, matrix, symmetric

__all__ = [
    "L1",
    "CacheError",
    "CodegenError",
    "Comparison",
    "FitResult",
    "IdentificationError",
    "KSDResult",
    "Model",
    "ModelError",
    "ParamGroup",
    "PathResult",
    "PenalizedFit",
    "SymsmError",
    "Windham",
    "WindhamResult",
    "__version__",
    "compare",
    "fit",
    "ksd_test",
    "load_model",
    "matrix",
    "path",
    "symmetric",
]
