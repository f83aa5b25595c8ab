"""Your own data: tensors, arrays or ``Dataset`` pairs as a ``DataBundle``, with your indices as ids.

A user who holds ``x_train, y_train, x_test, y_test`` should not have to write a loader. The inputs
reach the model exactly as given (float tensors unchanged; uint8 images as floats in [0, 1], as
obliviate's own loaders give them), and sample ids are positions in the user's training set, so a
request ``for_ids([17, 4711])`` names the user's rows 17 and 4711 in every record and certificate.
Nothing is held out for validation unless the user passes ``x_val, y_val``: carving it from the
training set would take ids out of reach of a forget request.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import torch

from ..errors import ObliviateError
from .dataset import ArrayData, DataBundle, channel_stats

USER_DATA = "user-data"


def _tensor(a: Any, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
    else:
        try:
            t = torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError) as exc:
            raise ObliviateError(f"{what}: not an array or tensor ({type(a).__name__}: {exc})") from None
    return t.contiguous()


def _inputs(a: Any, what: str) -> torch.Tensor:
    x = _tensor(a, what)
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ObliviateError(f"{what}: inputs must be float or uint8, got {x.dtype}")
    if x.dim() < 2:
        raise ObliviateError(f"{what}: inputs need a batch dimension and a feature dimension, got shape "
                             f"{tuple(x.shape)}")
    x = x if x.dtype == torch.uint8 else x.float()
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ObliviateError(f"{what}: inputs contain NaN or infinite values")
    return x


def _labels(a: Any, n: int, what: str) -> torch.Tensor:
    y = _tensor(a, what)
    if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
        raise ObliviateError(f"{what}: labels must be integers, got {y.dtype}")
    if y.dim() != 1 or len(y) != n:
        raise ObliviateError(f"{what}: expected {n} labels (one per input), got shape {tuple(y.shape)}")
    if len(y) and int(y.min()) < 0:
        raise ObliviateError(f"{what}: negative label {int(y.min())}")
    return y.long()


def _split(x, y, what: str) -> ArrayData:
    xs = _inputs(x, f"{what} inputs")
    return ArrayData(xs, _labels(y, len(xs), f"{what} labels"), torch.arange(len(xs)))


def _digest(*parts: ArrayData) -> str:
    h = hashlib.sha256()
    for p in parts:
        for t in (p.x, p.y):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def from_tensors(x_train, y_train, x_test=None, y_test=None, *, x_val=None, y_val=None,
                 classes: list[str] | int | None = None, name: str = USER_DATA) -> DataBundle:
    """A ``DataBundle`` from arrays or tensors; ``classes`` (names or a count) defaults to max label + 1."""
    train = _split(x_train, y_train, "training")
    if len(train) == 0:
        raise ObliviateError("the training set is empty")
    test = _split(x_test, y_test, "test") if x_test is not None else train.subset(torch.zeros(0, dtype=torch.long))
    val = _split(x_val, y_val, "validation") if x_val is not None else train.subset(torch.zeros(0, dtype=torch.long))
    for part, what in ((test, "test"), (val, "validation")):
        if len(part) and part.x.shape[1:] != train.x.shape[1:]:
            raise ObliviateError(f"{what} inputs have shape {tuple(part.x.shape[1:])}, training inputs "
                                 f"{tuple(train.x.shape[1:])}")
    top = max(int(p.y.max()) for p in (train, test, val) if len(p)) + 1
    names = [str(c) for c in range(classes)] if isinstance(classes, int) else list(classes or range(top))
    names = [str(c) for c in names]
    if top > len(names):
        raise ObliviateError(f"labels go up to {top - 1} but only {len(names)} classes were given")
    mean, std = channel_stats(train.x)
    return DataBundle(name, train, val, test, names, "image" if train.x.dim() == 4 else "tabular", mean, std,
                      _digest(train, val, test), {"name": name, "kind": "user"})


def _materialise(ds, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (input, label) of a map-style Dataset, stacked (obliviate keeps data sets as whole tensors)."""
    try:
        n = len(ds)
    except TypeError:
        raise ObliviateError(f"{what} dataset has no len(): pass a map-style torch Dataset") from None
    loader = torch.utils.data.DataLoader(ds, batch_size=1024, shuffle=False, num_workers=0)
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ObliviateError(f"{what} dataset items must be (input, label) pairs")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ObliviateError(f"{what} dataset is empty")
    x, y = torch.cat(xs), torch.cat(ys)
    if len(x) != n:
        raise ObliviateError(f"{what} dataset yielded {len(x)} items but has len() {n}")
    return x, y


def from_datasets(train, test=None, *, val=None, classes=None, name: str = USER_DATA) -> DataBundle:
    """A ``DataBundle`` from map-style ``torch.utils.data.Dataset`` objects yielding (input, label)."""
    x_tr, y_tr = _materialise(train, "training")
    x_te, y_te = _materialise(test, "test") if test is not None else (None, None)
    x_va, y_va = _materialise(val, "validation") if val is not None else (None, None)
    classes = classes if classes is not None else getattr(train, "classes", None)
    return from_tensors(x_tr, y_tr, x_te, y_te, x_val=x_va, y_val=y_va, classes=classes, name=name)


def fit_classes(bundle: DataBundle, num_classes: int) -> DataBundle:
    """A user's data set sized to the model's head: labels beyond it are an error, and a class the labels
    happen not to reach (max label + 1 < outputs) is added, so the head and the data agree."""
    if bundle.num_classes > num_classes:
        top = max(int(p.y.max()) for p in (bundle.train, bundle.val, bundle.test) if len(p))
        raise ObliviateError(f"data set {bundle.name!r} has labels up to {top} but the model has {num_classes} "
                             "outputs: the labels do not fit its head")
    if bundle.num_classes < num_classes and bundle.spec.get("kind") == "user":
        extra = [str(c) for c in range(bundle.num_classes, num_classes)]
        return dataclasses.replace(bundle, classes=list(bundle.classes) + extra)
    return bundle


def as_bundle(data, num_classes: int | None = None) -> DataBundle:
    """What ``unlearn``/``evaluate`` take as ``data``: a DataBundle, (x_train, y_train[, x_test, y_test]) or
    (train Dataset[, test Dataset]); ``num_classes`` (the model's head width) sizes the class list."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        data = (data,)
    if not isinstance(data, (tuple, list)) or not data:
        raise ObliviateError(f"data must be a DataBundle, a tuple (x_train, y_train, x_test, y_test) or a tuple of "
                             f"Datasets (train, test), got {type(data).__name__}")
    if all(isinstance(d, torch.utils.data.Dataset) and not isinstance(d, torch.Tensor) for d in data):
        if len(data) > 2:
            raise ObliviateError("give data as (train Dataset, test Dataset)")
        return from_datasets(*data, classes=num_classes)
    if len(data) not in (2, 4):
        raise ObliviateError(f"data as arrays must be (x_train, y_train) or (x_train, y_train, x_test, y_test); "
                             f"got {len(data)} items")
    return from_tensors(*data, classes=num_classes)
