"""Metrics: did it forget, and what did it cost."""
from .accuracy import accuracy, per_class_accuracy

__all__ = ["accuracy", "per_class_accuracy"]
