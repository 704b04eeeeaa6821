"""Stage 1 — the model: log f(x; θ) with its data, parameters, domain and weight; the safe formula parser;
model files."""

from .model import DOMAINS, WEIGHT_VARIABLE, Model, ParamGroup, matrix, symmetric
from .modelfile import ModelFileError, example_models, load_data, load_model
from .parse import parse_formula
from .structured import StructuredModel  # also registers it with Model (models written with vectors)

__all__ = [
    "DOMAINS",
    "WEIGHT_VARIABLE",
    "Model",
    "ModelFileError",
    "ParamGroup",
    "StructuredModel",
    "example_models",
    "load_data",
    "load_model",
    "matrix",
    "parse_formula",
    "symmetric",
]
