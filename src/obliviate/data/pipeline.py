"""Device-resident batching with batched augmentation.

The whole split sits on the device as one tensor; a batch is an index into it, and random crop and
flip are tensor ops over the whole batch. On a GPU this removes the per-image Python and the host to
device copy that cap a DataLoader pipeline; on CPU the same code runs unchanged.

Randomness comes from a generator seeded per (seed, epoch) for the order and per (seed, step) for
augmentation, so a run resumed at step s draws exactly the batches it would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .dataset import ArrayData, to_float

AUGMENTS = ("none", "flip", "crop", "crop-flip")


def _generator(device: torch.device, *key: int) -> torch.Generator:
    g = torch.Generator(device=device)
    seed = 0
    for k in key:
        seed = (seed * 1_000_003 + int(k) + 0x9E3779B9) % (2**63 - 1)
    g.manual_seed(seed)
    return g


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Pad by ``pad`` (zeros) and cut a random HxW window per image, as one gather."""
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=g)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n,1,h,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n,1,1,w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], device=x.device, generator=g) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def augment_batch(x: torch.Tensor, mode: str, g: torch.Generator) -> torch.Tensor:
    if mode == "none" or x.dim() != 4:
        return x
    if "crop" in mode:
        x = random_crop(x, max(1, x.shape[-1] // 8), g)
    if "flip" in mode:
        x = random_flip(x, g)
    return x


@dataclass
class Batch:
    x: torch.Tensor  # float, model space ([0,1] images)
    y: torch.Tensor
    ids: torch.Tensor
    step: int = 0


class BatchStream:
    """Iterates a device-resident ``ArrayData`` in batches.

    ``epoch`` picks the shuffle; ``start`` skips the first batches of that epoch (resume).
    """

    def __init__(self, data: ArrayData, batch_size: int, *, shuffle: bool = True, augment: str = "none",
                 seed: int = 0, drop_last: bool = False, channels_last: bool = False):
        if augment not in AUGMENTS:
            raise ValueError(f"unknown augment {augment!r}; choose one of {AUGMENTS}")
        self.data, self.batch_size, self.shuffle, self.augment = data, int(batch_size), shuffle, augment
        self.seed, self.drop_last, self.channels_last = seed, drop_last, channels_last

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n, device=self.data.device)
        return torch.randperm(n, device=self.data.device, generator=_generator(self.data.device, self.seed, epoch))

    def epoch(self, epoch: int, start: int = 0, step_offset: int = 0) -> Iterator[Batch]:
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = to_float(self.data.x[idx])
            step = step_offset + b
            if self.augment != "none":
                x = augment_batch(x, self.augment, _generator(self.data.device, self.seed, 7919, step))
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield Batch(x, self.data.y[idx], self.data.ids[idx], step)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Logits for every row of ``x`` (uint8 images or floats), in eval mode, batched.

    Default batch: 1024 on a GPU; 256 on CPU, where larger batches fall out of cache (measured 2x
    slower at 1024 for the small CNN).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or (1024 if device.type == "cuda" else 256)
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size].to(device))
        with autocast(device):
            out.append(model(xb).float())
    model.train(was_training)
    if not out:
        return torch.empty(0, device=device)
    return torch.cat(out)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (fast, no loss scaling needed); a no-op elsewhere to keep CPU runs exact."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
