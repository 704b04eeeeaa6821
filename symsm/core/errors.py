"""Exception types of symsm."""

from __future__ import annotations


class SymsmError(Exception):
    """Base class of every error symsm raises on purpose."""


class ModelError(SymsmError, ValueError):
    """The model (its formula, symbols or parameters) is not one symsm can work with."""


class CodegenError(SymsmError):
    """An expression cannot be printed for the requested backend."""


class CacheError(SymsmError):
    """The cache directory cannot be used safely."""


class IdentificationError(SymsmError, ValueError):
    """The data do not identify θ: the objective is flat (or nearly so) along some direction of θ."""
