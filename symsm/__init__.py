"""symsm — exact symbolic derivation and compiled kernels for score matching.

The pipeline is one subpackage per stage, each importing only from the stages before it (an import-linter
contract in CI keeps it so; see the README's "How symsm is built"):

    core → model → derive → ir → backends → runtime → fitting → latex → criticism → cli
"""

from __future__ import annotations

from ._version import __version__
from .core.errors import CacheError, CodegenError, IdentificationError, ModelError, NonFiniteError, SymsmError
from .criticism import Comparison, KSDResult, compare, ksd_test
from .fitting import L1, FitResult, PathResult, PenalizedFit, Windham, WindhamResult, fit, path
from .model import Box, Model, ParamGroup, load_model, matrix, symmetric
from .model.tensor import (  # models written with vectors and matrices; elementwise functions: symsm.log(...)
    TensorExpr,
    asinh,
    atan,
    atanh,
    cos,
    cosh,
    data_vector,
    dot,
    erf,
    erfc,
    exp,
    expm1,
    log,
    log1p,
    param_matrix,
    param_scalar,
    param_symmetric,
    param_vector,
    quad,
    sin,
    sinh,
    sqrt,
    tan,
    tanh,
    tsum,
)

sum = tsum  # symsm.sum (the sum of a tensor expression's entries); not in __all__, so `import *` keeps the builtin

__all__ = [
    "L1",
    "Box",
    "CacheError",
    "CodegenError",
    "Comparison",
    "FitResult",
    "IdentificationError",
    "KSDResult",
    "Model",
    "ModelError",
    "NonFiniteError",
    "ParamGroup",
    "PathResult",
    "PenalizedFit",
    "SymsmError",
    "TensorExpr",
    "Windham",
    "WindhamResult",
    "__version__",
    "asinh",
    "atan",
    "atanh",
    "compare",
    "cos",
    "cosh",
    "data_vector",
    "dot",
    "erf",
    "erfc",
    "exp",
    "expm1",
    "fit",
    "ksd_test",
    "load_model",
    "log",
    "log1p",
    "matrix",
    "param_matrix",
    "param_scalar",
    "param_symmetric",
    "param_vector",
    "path",
    "quad",
    "sin",
    "sinh",
    "sqrt",
    "symmetric",
    "tan",
    "tanh",
]
