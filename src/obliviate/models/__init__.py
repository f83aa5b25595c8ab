"""Models: a registry of classifiers sized from the data set."""
from . import zoo  # noqa: F401  (registers the architectures)
from .base import MODELS, Classifier, ModelInfo, ModelSpec, build_model, count_parameters, model_for, register_model
from .foreign import ForeignClassifier, wrap

__all__ = ["ForeignClassifier", "wrap",
           "MODELS", "Classifier", "ModelInfo", "ModelSpec", "build_model", "count_parameters", "model_for",
           "register_model"]
