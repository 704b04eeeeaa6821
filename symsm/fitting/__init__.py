"""Stage 6 — fitting: closed form for quadratic objectives, L-BFGS otherwise, sandwich standard errors;
ℓ1-penalised fits and paths (penalized.py, path.py) and robust Windham fits (robust.py)."""

from .fit import METHODS, FitResult, fit
from .path import PathResult, path
from .penalized import L1, PenalizedFit
from .robust import Windham, WindhamResult

__all__ = ["L1", "METHODS", "FitResult", "PathResult", "PenalizedFit", "Windham", "WindhamResult", "fit", "path"]
