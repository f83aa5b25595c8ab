"""In-memory data sets: one tensor of inputs, labels and stable sample ids.

Why whole tensors and not a ``torch.utils.data.Dataset``: every data set obliviate handles fits in
memory (CIFAR-10 is 150 MB as uint8), so keeping it as one tensor lets the trainer move it to the GPU
once and cut batches by indexing, with no per-image Python (see ``pipeline``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ArrayData:
    """One split. ``x`` is uint8 (N, C, H, W) for images or float32 (N, F) for tabular data.

    ``ids`` are stable sample ids: the index of the sample in its source array, so a forget request
    written today names the same samples tomorrow, whatever split or subset is drawn.
    """

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.ids)):
            raise ValueError(f"x, y, ids lengths differ: {len(self.x)}, {len(self.y)}, {len(self.ids)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor | np.ndarray) -> "ArrayData":
        index = torch.as_tensor(index, dtype=torch.long, device=self.y.device)
        return ArrayData(self.x[index], self.y[index], self.ids[index])

    def to(self, device: torch.device | str) -> "ArrayData":
        return ArrayData(self.x.to(device), self.y.to(device), self.ids.to(device))

    @property
    def device(self) -> torch.device:
        return self.x.device

    def float_inputs(self) -> torch.Tensor:
        """Inputs as float in model space: uint8 images scaled to [0, 1]; tabular data unchanged."""
        return to_float(self.x)

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.y.cpu(), minlength=num_classes).tolist()


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (images, dim 1) or per-feature mean and std of inputs in model space; std floored at 1e-6."""
    f = to_float(x)
    flat = f.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else f.reshape(len(f), -1).T
    return tuple(float(v) for v in flat.mean(1)), tuple(max(float(v), 1e-6) for v in flat.std(1))


def concat(*parts: ArrayData) -> ArrayData:
    parts = tuple(p for p in parts if p is not None and len(p))
    dtypes = {p.x.dtype for p in parts}
    xs = [p.x if len(dtypes) == 1 else p.float_inputs() for p in parts]
    return ArrayData(torch.cat(xs), torch.cat([p.y for p in parts]), torch.cat([p.ids for p in parts]))


@dataclass
class DataBundle:
    """A data set with its deterministic splits and what a model needs to know about it."""

    name: str
    train: ArrayData
    val: ArrayData
    test: ArrayData
    classes: list[str]
    kind: str  # "image" or "tabular"
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source_hash: str
    spec: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def to(self, device: torch.device | str) -> "DataBundle":
        return DataBundle(self.name, self.train.to(device), self.val.to(device), self.test.to(device),
                          self.classes, self.kind, self.mean, self.std, self.source_hash, self.spec)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": self.classes,
            "input_shape": list(self.input_shape),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "source_hash": self.source_hash,
            "spec": self.spec,
        }
