"""Stage 1 — the model: log f(x; θ) with its data, parameters, domain and weight; the safe formula parser;
model files."""

from .box import Box
from .model import DOMAINS, WEIGHT_VARIABLE, Model, ParamGroup, matrix, symmetric
from .modelfile import ModelFileError, example_models, load_data, load_model
from .parse import parse_formula
from .structured import StructuredModel
from .weights import NAMED_WEIGHTS  # also registers it with Model (models written with vectors)

__all__ = [
    "DOMAINS",
    "NAMED_WEIGHTS",
    "WEIGHT_VARIABLE",
    "Box",
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
