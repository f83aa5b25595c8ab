"""Accuracy, overall and per class."""
from __future__ import annotations

import torch

from ..data.dataset import ArrayData
from .outputs import logits_of


def accuracy(model: torch.nn.Module, data: ArrayData | None, batch_size: int | None = None) -> float:
    """Top-1 accuracy on ``data`` in [0, 1]; NaN for an empty or missing set (nothing to measure)."""
    if data is None or len(data) == 0:
        return float("nan")
    logits = logits_of(model, data, batch_size)
    return (logits.argmax(1) == data.y.to(logits.device)).float().mean().item()


def per_class_accuracy(model: torch.nn.Module, data: ArrayData, num_classes: int) -> list[float]:
    logits = logits_of(model, data)
    y = data.y.to(logits.device)
    hit = (logits.argmax(1) == y).float()
    out = []
    for c in range(num_classes):
        m = y == c
        out.append(hit[m].mean().item() if m.any() else float("nan"))
    return out
