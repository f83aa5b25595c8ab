"""Retrain: train from scratch on D_r with the original recipe — the gold standard of unlearning.

Every other method is judged against this model, and its wall time is the denominator of every
speed-up, so it must be the model the original run *would have produced* had D_f never been there:
the same recipe (``ctx.train_config``: model, epochs, schedule, batch size, seed, augmentation) on
D_r alone. In plain mode that is exactly ``training.train(bundle, cfg, exclude_ids=forget_ids)``
(the same batches, bit for bit on CPU). In block-incremental mode the retained samples keep the
blocks the original run put them in (read from the run's ``snapshots/blocks.npy`` when the run
directory is known: block mode declares ``snapshots``), which is again what ``train(...,
exclude_ids=...)`` does; without the run directory D_r is re-split into class-stratified blocks.

Without a recorded recipe, the parameters below (defaults: ``TrainConfig``'s) say how to train.
Any parameter given overrides the recipe (e.g. ``epochs=5`` for a cheaper, no longer exact,
reference). The record's ``params`` show the recipe actually used.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import ArrayData, DataBundle
from ..env import seed_everything
from ..errors import AccessError, ObliviateError
from ..models import Classifier, ForeignClassifier, build_model
from ..params import declared, param
from ..training.loop import make_optimizer
from ..training.trainer import TrainConfig, assign_blocks, prepare_model, train, train_block
from .base import RETAIN, SNAPSHOTS, TRAINED_WITHOUT, Method, MethodContext, register

_RECIPE_FIELDS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule",
                  "label_smoothing", "seed", "blocks", "epochs_per_block")


@register
class Retrain(Method):
    name = "retrain"
    summary = "train from scratch on D_r with the original recipe: the exact reference (reads D_r)"
    needs = frozenset({RETAIN})

    @dataclass
    class Params:
        # None = take it from the original run's recipe (or TrainConfig's default without one)
        # the same ranges as TrainConfig's options
        epochs: int | None = param(None, like=declared(TrainConfig, "epochs"))
        batch_size: int | None = param(None, like=declared(TrainConfig, "batch_size"))
        optimizer: str | None = param(None, like=declared(TrainConfig, "optimizer"))
        lr: float | None = param(None, like=declared(TrainConfig, "lr"))
        momentum: float | None = param(None, like=declared(TrainConfig, "momentum"))
        weight_decay: float | None = param(None, like=declared(TrainConfig, "weight_decay"))
        schedule: str | None = param(None, like=declared(TrainConfig, "schedule"))
        label_smoothing: float | None = param(None, like=declared(TrainConfig, "label_smoothing"))
        seed: int | None = param(None, like=declared(TrainConfig, "seed"))
        blocks: int | None = param(None, like=declared(TrainConfig, "blocks"))
        epochs_per_block: int | None = param(None, like=declared(TrainConfig, "epochs_per_block"))

    def needs_for(self, params, train_config=None):
        """Block mode may read the run directory for the original block of each retained sample."""
        blocks = params.blocks if params.blocks is not None else getattr(train_config, "blocks", 0)
        return self.needs | {SNAPSHOTS} if blocks else self.needs

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        ctx.info[TRAINED_WITHOUT] = True  # a fresh model, trained on D_r only (whichever way below)
        if ctx.train_fn is not None:
            return train_with_fn(ctx, ctx.retain)
        cfg = recipe(ctx, p)
        for name in _RECIPE_FIELDS:  # record what was used, not "None"
            setattr(p, name, getattr(cfg, name))
        retain = ctx.retain
        if cfg.blocks:
            return _retrain_blocks(ctx, cfg, retain)
        result = train(retain_bundle(ctx, retain), cfg, device=ctx.device, kind="retrain", build=fresh_builder(ctx))
        return result.model


def fresh_builder(ctx):
    """How ``train`` makes its initial model: the registry for a zoo model, a fresh copy of a user's model."""
    return ctx.model.fresh if isinstance(ctx.model, ForeignClassifier) else None


def train_with_fn(ctx, retain: ArrayData) -> Classifier:
    """A user's own training loop on D_r: ``train_fn(fresh_model, TensorDataset(x, y))`` (the user's recipe)."""
    seed_everything(ctx.seed)
    model = ctx.model.fresh()
    data = torch.utils.data.TensorDataset(retain.float_inputs(), retain.y)
    returned = ctx.train_fn(model.unwrap(), data)
    if returned is not None and returned is not model.unwrap():
        if not isinstance(returned, torch.nn.Module):
            raise ObliviateError(f"train_fn returned {type(returned).__name__}; return the model or None")
        model = model._like(returned) if isinstance(model, ForeignClassifier) else returned
    return model


def recipe(ctx, p) -> TrainConfig:
    """The original TrainConfig (or TrainConfig's defaults for this model), overridden by ``p``."""
    spec = ctx.model.spec
    foreign = isinstance(ctx.model, ForeignClassifier)
    if foreign and ctx.train_config is None:
        raise ObliviateError("retraining your own model needs its recipe: pass train_config=TrainConfig(...) "
                             "or train_fn=your_training_function (CLI: --epochs/--lr with --model-class)")
    if ctx.train_config is not None:
        cfg = copy.deepcopy(ctx.train_config)
        if foreign:
            cfg = dataclasses.replace(cfg, model=spec.name)
        elif cfg.model != spec.name:
            raise ObliviateError(f"the recorded recipe trains {cfg.model!r} but the model is {spec.name!r}")
    else:
        cfg = TrainConfig(model=spec.name, model_options=dict(spec.options), seed=ctx.seed, augment=ctx.augment)
    cfg.snapshot_every = 0  # a reference model needs no resumable snapshots
    overrides = {k: v for k, v in dataclasses.asdict(p).items() if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    if cfg.augment is None:
        cfg.augment = ctx.augment
    cfg.validate()
    return cfg


def retain_bundle(ctx, retain: ArrayData) -> DataBundle:
    """D_r as a training bundle for ``train``: no val/test (the caller evaluates), same shape and stats."""
    spec = ctx.model.spec
    empty = retain.subset(torch.zeros(0, dtype=torch.long))
    return DataBundle("retain-set", retain, empty, empty, [str(c) for c in range(ctx.num_classes)],
                      "image" if len(spec.input_shape) == 3 else "tabular", tuple(spec.mean), tuple(spec.std),
                      source_hash="retain-set")


def _block_of(ctx, retain: ArrayData, cfg: TrainConfig) -> np.ndarray:
    """Block index of every retained sample: the original run's assignment when it is on disk."""
    ids = retain.ids.cpu().numpy()
    try:
        source = ctx.snapshots
    except AccessError:  # no run directory given: re-split
        source = None
    if source is not None and source.has_blocks():
        rec_ids, rec_blocks = source.block_assignment()
        lookup = dict(zip(rec_ids.tolist(), rec_blocks.tolist()))
        if int(rec_blocks.max()) < cfg.blocks and all(int(i) in lookup for i in ids):
            return np.array([lookup[int(i)] for i in ids], dtype=np.int64)
    return assign_blocks(retain, cfg.blocks, cfg.seed)


def _retrain_blocks(ctx, cfg: TrainConfig, retain: ArrayData):
    """Block-incremental training on D_r, block by block, as ``train`` does (empty blocks are skipped)."""
    seed_everything(cfg.seed)
    if isinstance(ctx.model, ForeignClassifier):
        model = prepare_model(ctx.model.fresh(), cfg, ctx.device)
    else:
        spec = dataclasses.replace(ctx.model.spec, options=dict(cfg.model_options))
        model = prepare_model(build_model(spec), cfg, ctx.device)
    optimizer = make_optimizer(model.parameters(), cfg.optim())
    blocks = _block_of(ctx, retain, cfg)
    for j in range(cfg.blocks):
        pos = np.flatnonzero(blocks == j)
        if len(pos):
            train_block(model, optimizer, retain.subset(torch.as_tensor(pos, device=retain.device)), cfg, j,
                        cfg.augment, description=f"retrain block {j + 1}/{cfg.blocks}")
    return model
