"""Stage 1 — the model: log f(x; θ) with its data, parameters, domain and weight; the safe formula parser;
model files."""

from .model import DOMAINS, WEIGHT_VARIABLE, Model, ParamGroup, matrix, symmetric
from .modelfile import ModelFileError, example_models, load_data, load_model
from .parse import parse_formula

__all__ = [
    "DOMAINS",
    "WEIGHT_VARIABLE",
    "Model",
    "ModelFileError",
    "ParamGroup",
    "example_models",
    "load_data",
    "load_model",
    "matrix",
    "parse_formula",
    "symmetric",
]
