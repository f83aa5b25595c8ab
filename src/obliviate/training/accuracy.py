"""Accuracy, overall and per class, and the logits it is read from.

Training reports accuracy too, so this sits below ``metrics`` (which re-exports it); the logit cache
lives here with ``logits_of`` so that every metric and the trainer read a model the same way.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

from ..data.dataset import ArrayData
from ..data.pipeline import predict

_CACHE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("obliviate_logit_cache", default=None)


@contextlib.contextmanager
def cached_outputs(*models: torch.nn.Module | None) -> Iterator[None]:
    """Within the block, each (model, data set) pair is run through the model once.

    ``evaluate`` reads the same three models on the same splits for a dozen metrics; without this every
    metric would repeat the forward pass. Only the models named here are cached, and they must not
    change inside the block (relearn fine-tunes its own copy, which is not cached). Subsamples made by
    ``subsample`` are served by indexing their parent's logits.
    """
    token = _CACHE.set({"models": {id(m): m for m in models if m is not None}, "logits": {}})
    try:
        yield
    finally:
        _CACHE.reset(token)


def logits_of(model: torch.nn.Module, data: ArrayData, batch_size: int | None = None) -> torch.Tensor:
    """Logits of every sample of ``data`` (eval mode, batched), from the cache when one is active."""
    cache = _CACHE.get()
    if cache is None or id(model) not in cache["models"]:
        return predict(model, data.x, batch_size)
    parent = getattr(data, "_parent", None)
    if parent is not None:
        base, index = parent
        logits = logits_of(model, base, batch_size)
        return logits[index.to(logits.device)]
    key = (id(model), id(data))
    if key not in cache["logits"]:  # the entry keeps ``data`` alive, so its id cannot be reused meanwhile
        cache["logits"][key] = (data, predict(model, data.x, batch_size))
    return cache["logits"][key][1]


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
