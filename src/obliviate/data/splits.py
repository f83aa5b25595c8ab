"""Deterministic splits and subsets: the same spec always yields the same sample ids."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..params import check_fields, param
from .dataset import ArrayData, DataBundle, channel_stats
from .sources import SOURCES, cached_source


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which samples land in which split.

    ``split_seed`` is separate from the training seed on purpose: changing the training seed must not
    move a sample from train to val, or a saved list of forget ids would name other samples.
    """

    name: str
    root: str | None = None
    val_fraction: float = param(0.05, ge=0, lt=1)
    test_fraction: float = param(0.2, ge=0, lt=1)  # only for sources without an official test split
    train_per_class: int | None = param(None, ge=1)  # cap for quick runs; None = all
    test_per_class: int | None = param(None, ge=1)
    split_seed: int = param(0, ge=0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into (kept, held-out) with ``fraction`` of every class held out."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        rng.shuffle(pos)
        held.append(pos[: int(round(len(pos) * fraction))])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    mask = np.ones(len(y), bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def per_class_cap(y: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        keep.append(np.sort(rng.permutation(pos)[:cap]))
    return np.sort(np.concatenate(keep))


def _array_data(x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> ArrayData:
    return ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64)),
                     torch.from_numpy(ids.astype(np.int64)))


def load_data(spec: DataSpec | str, **overrides) -> DataBundle:
    """Load a data set by spec (or name) with its deterministic train / val / test splits.

    Train and val ids index the source's training array; test ids index its test array (or, for
    sources without one, the same single array the test split was carved from).
    """
    if isinstance(spec, str):
        spec = DataSpec(spec, **overrides)
    elif overrides:
        spec = DataSpec(**{**spec.to_dict(), **overrides})
    check_fields(spec, "data")
    raw, digest = cached_source(spec.name, spec.root)
    x, y = raw.x_train, raw.y_train
    if raw.x_test is None:
        train_pos, test_pos = stratified_split(y, spec.test_fraction, spec.split_seed + 1)
        xte, yte, te_ids = x[test_pos], y[test_pos], test_pos
        x, y, tr_ids = x[train_pos], y[train_pos], train_pos
    else:
        xte, yte, te_ids = raw.x_test, raw.y_test, np.arange(len(raw.y_test))
        tr_ids = np.arange(len(y))
    cap = per_class_cap(y, spec.train_per_class, spec.split_seed + 2)
    x, y, tr_ids = x[cap], y[cap], tr_ids[cap]
    cap = per_class_cap(yte, spec.test_per_class, spec.split_seed + 3)
    xte, yte, te_ids = xte[cap], yte[cap], te_ids[cap]
    keep, val = stratified_split(y, spec.val_fraction, spec.split_seed)
    train = _array_data(x[keep], y[keep], tr_ids[keep])
    valid = _array_data(x[val], y[val], tr_ids[val])
    test = _array_data(xte, yte, te_ids)
    mean, std = channel_stats(train.x)
    return DataBundle(spec.name, train, valid, test, list(raw.classes), raw.kind, mean, std, digest,
                      spec.to_dict())


def default_augment(name: str) -> str:
    return SOURCES[name].augment if name in SOURCES else "none"


def dataset_names() -> list[str]:
    return sorted(SOURCES)


def resolve_root(root: str | Path | None) -> str | None:
    return str(Path(root).expanduser().resolve()) if root else None
