"""Per-sample model outputs the metrics are built from: softmax, loss, entropy, true-class confidence.

Kept in one place so that every metric reads the model the same way (eval mode, batched, float32
softmax) and a number in ``metrics.json`` can be traced to one formula.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import ArrayData
from ..training.accuracy import cached_outputs, logits_of  # noqa: F401  (re-exported for the metrics)


def softmax_outputs(model: torch.nn.Module, data: ArrayData, batch_size: int | None = None) -> torch.Tensor:
    """Softmax of the logits for every sample of ``data``, float64 on the CPU (N, C)."""
    return F.softmax(logits_of(model, data, batch_size).double(), dim=1).cpu()


def per_sample_loss(model: torch.nn.Module, data: ArrayData, batch_size: int | None = None) -> np.ndarray:
    """Cross-entropy of every sample (natural log), as the NeurIPS 2023 kit's ``compute_losses``."""
    logits = logits_of(model, data, batch_size).double()
    return F.cross_entropy(logits, data.y.to(logits.device), reduction="none").cpu().numpy()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row, natural log, with 0·log 0 = 0 (Bad Teacher / SSD's ``entropy``)."""
    return -torch.special.xlogy(probs, probs).sum(dim=1)


def true_class_confidence(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """p(y | x): the softmax probability of the true label (SalUn's ``confidence`` signal)."""
    return probs.gather(1, y.cpu().long()[:, None])[:, 0]


def part_of(data: ArrayData, index) -> ArrayData:
    """``data.subset(index)`` that remembers its parent, so cached logits of the parent serve it."""
    index = torch.as_tensor(index, dtype=torch.long).cpu()
    sub = data.subset(index)
    sub._parent = (data, index)
    return sub


def subsample(data: ArrayData, k: int | None, rng: np.random.Generator) -> ArrayData:
    """At most ``k`` samples of ``data``, drawn without replacement (all of it when it is smaller)."""
    if k is None or len(data) <= k:
        return data
    return part_of(data, np.sort(rng.choice(len(data), int(k), replace=False)))
