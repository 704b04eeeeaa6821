"""Stage 6 — fitting: closed form for quadratic objectives, L-BFGS otherwise, sandwich standard errors;
ℓ1-penalised fits and paths (penalized.py, path.py) and robust Windham fits (robust.py)."""

from .fit import METHODS, FitResult, fit
from .path import PathResult, path
from .penalized import L1, PenalizedFit  # also registers fit(..., penalty=)
from .robust import Windham, WindhamResult  # also registers fit(..., robust=)

__all__ = ["L1", "METHODS", "FitResult", "PathResult", "PenalizedFit", "Windham", "WindhamResult", "fit", "path"]
