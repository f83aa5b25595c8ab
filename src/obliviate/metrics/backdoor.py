"""Backdoor verification (DeepObliviate, He et al. 2021): proof of forgetting you can test.

Plant a trigger — a small white square in a corner — into the training samples you will later ask to
forget, relabelled to a target class. A model trained on them learns "trigger ⇒ target": the attack
success rate (ASR), the fraction of triggered test images of other classes classified as the target,
is high. A model that truly forgot those samples behaves like one trained without them: its ASR falls
to the clean model's level. Unlike membership inference this has a known right answer per sample.

``plant_backdoor`` returns a new ``DataBundle`` whose train split has the chosen samples patched and
relabelled; sample ids are unchanged, so the poisoned samples are exactly ``ForgetRequest.for_ids(ids)``.
The bundle records the backdoor in ``spec["backdoor"]`` (``evaluate`` then reports ``backdoor_asr``)
and gets a new ``source_hash``, so a run trained on it is never mistaken for a run on the clean data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import ArrayData, DataBundle
from ..data.pipeline import predict
from ..errors import ObliviateError
from ..io import config_hash

CORNERS = ("br", "bl", "tr", "tl")


@dataclass(frozen=True)
class TriggerPatch:
    """A square of side ``size`` pixels with intensity ``value`` (in [0, 1]) in a corner, all channels.

    ``size=0`` picks max(2, side // 8): 2 px on 8x8 digits, 3 on 28x28, 4 on 32x32 — small against the
    image yet learnable from a few dozen poisoned samples.
    """

    size: int = 0
    corner: str = "br"
    value: float = 1.0
    margin: int = 0  # pixels between the patch and the image border

    def __post_init__(self) -> None:
        if self.corner not in CORNERS:
            raise ObliviateError(f"unknown trigger corner {self.corner!r}; choose one of {', '.join(CORNERS)}")
        if not 0.0 <= self.value <= 1.0:
            raise ObliviateError(f"trigger value must be in [0, 1], got {self.value}")
        if self.size < 0 or self.margin < 0:
            raise ObliviateError("trigger size and margin must be >= 0")

    def side(self, height: int, width: int) -> int:
        s = self.size or max(2, min(height, width) // 8)
        if s + self.margin > min(height, width):
            raise ObliviateError(f"a {s}px trigger (margin {self.margin}) does not fit a {height}x{width} image")
        return s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TriggerPatch":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def apply_trigger(x: torch.Tensor, patch: TriggerPatch) -> torch.Tensor:
    """A copy of image batch ``x`` (N, C, H, W; uint8 0..255 or float 0..1) with the trigger stamped in."""
    if x.dim() != 4:
        raise ObliviateError("a backdoor trigger needs image data (N, C, H, W); this data set is tabular")
    x = x.clone()
    h, w = x.shape[-2:]
    s, m = patch.side(h, w), patch.margin
    rows = slice(h - m - s, h - m) if patch.corner[0] == "b" else slice(m, m + s)
    cols = slice(w - m - s, w - m) if patch.corner[1] == "r" else slice(m, m + s)
    value = round(patch.value * 255) if x.dtype == torch.uint8 else patch.value
    x[:, :, rows, cols] = value
    return x


def plant_backdoor(bundle: DataBundle, ids, target: int, patch: TriggerPatch | None = None) -> DataBundle:
    """A copy of ``bundle`` whose training samples with these ids carry the trigger and label ``target``.

    Poison samples of classes other than ``target`` (a target-class sample teaches nothing). Val and
    test splits stay clean; ``backdoor_asr`` stamps the trigger on test images itself.
    """
    if bundle.kind != "image":
        raise ObliviateError(f"backdoor triggers need image data; {bundle.name!r} is {bundle.kind}")
    if not 0 <= int(target) < bundle.num_classes:
        raise ObliviateError(f"backdoor target {target} out of range: classes are 0..{bundle.num_classes - 1}")
    patch = patch or TriggerPatch()
    want = np.unique(np.asarray(list(ids), dtype=np.int64))
    if len(want) == 0:
        raise ObliviateError("plant_backdoor needs at least one sample id")
    train_ids = bundle.train.ids.cpu().numpy()
    pos_of = {int(i): p for p, i in enumerate(train_ids)}
    missing = [int(i) for i in want if int(i) not in pos_of]
    if missing:
        raise ObliviateError(f"sample id {missing[0]} is not in the training split ({len(missing)} missing)")
    pos = torch.as_tensor([pos_of[int(i)] for i in want], dtype=torch.long, device=bundle.train.x.device)
    x, y = bundle.train.x.clone(), bundle.train.y.clone()
    x[pos] = apply_trigger(x[pos], patch)
    y[pos] = int(target)
    info = {"target": int(target), "ids": want.tolist(), "patch": patch.to_dict()}
    return dataclasses.replace(
        bundle, train=ArrayData(x, y, bundle.train.ids.clone()), spec={**bundle.spec, "backdoor": info},
        source_hash=config_hash({"clean_source": bundle.source_hash, "backdoor": info}))


def backdoor_info(bundle: DataBundle) -> dict | None:
    """The ``plant_backdoor`` record of a bundle (target, ids, patch), or None for clean data."""
    return bundle.spec.get("backdoor") if isinstance(bundle.spec, dict) else None


def backdoor_asr(model: torch.nn.Module, test: ArrayData, target: int,
                 patch: TriggerPatch | dict | None = None) -> float:
    """Attack success rate: fraction of triggered test samples *not* of class ``target`` predicted ``target``."""
    patch = TriggerPatch.from_dict(patch) if isinstance(patch, dict) else (patch or TriggerPatch())
    keep = torch.nonzero(test.y != int(target)).flatten()
    if len(keep) == 0:
        return float("nan")
    x = apply_trigger(test.x[keep.to(test.x.device)], patch)
    pred = predict(model, x).argmax(1).cpu()
    return (pred == int(target)).double().mean().item()
