"""Stage 6 — fitting: closed form for quadratic objectives, L-BFGS otherwise, sandwich standard errors."""

from .fit import METHODS, FitResult, fit

__all__ = ["METHODS", "FitResult", "fit"]
