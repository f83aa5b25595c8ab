"""Accuracy, overall and per class (defined in ``training.accuracy``: training reports it too)."""
from ..training.accuracy import accuracy, per_class_accuracy

__all__ = ["accuracy", "per_class_accuracy"]
