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


class NonFiniteError(SymsmError, ValueError):
    """J̃ or ∇θJ̃ is not finite; the message names the first rows that make it so and why.

    `rows` are the 0-based indices of those rows in X; `domain` is True when every row is affected, i.e. θ
    is outside the model's domain (a parameter problem), False when only some rows are (a data problem)."""

    def __init__(self, message: str, rows: tuple[int, ...] = (), domain: bool = False) -> None:
        super().__init__(message)
        self.rows = rows
        self.domain = domain


class NonFiniteDataError(SymsmError, ValueError):
    """The data hold an infinity or a NaN (found by a kernel while it summed over them). `row` and `column`
    are the 0-based position of the first such value."""

    def __init__(self, message: str, row: int, column: int) -> None:
        super().__init__(message)
        self.row = row
        self.column = column
