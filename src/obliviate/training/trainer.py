"""Training from scratch: plain (optionally with step snapshots) or block-incremental.

Two snapshot modes serve two needs:

* ``snapshot_every=K`` (plain training): every K steps the model, optimiser, schedule and RNG state are
  stored with the exact sample ids each step consumed. A killed run resumes from the last snapshot and
  ends with the same weights it would have had.
* ``blocks=B`` (block-incremental, DeepObliviate's training mode): the training set is split into B
  class-stratified blocks, trained in order for ``epochs_per_block`` epochs each, with a snapshot after
  every block. A sample then influences only the models from its block on, which is what lets a
  deletion retrain a suffix of blocks instead of everything.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.dataset import ArrayData, DataBundle
from ..data.pipeline import AUGMENTS, BatchStream
from ..data.splits import default_augment
from ..env import now_iso, pick_device, seed_everything, sync, versions
from ..errors import CheckpointError, ObliviateError
from ..finite import require_finite
from ..io import config_hash
from ..models import MODELS, Classifier, model_for
from ..models.foreign import FOREIGN_PREFIX, ForeignClassifier, adopt, construct
from ..params import OPTIMIZERS, SCHEDULES, SEED_MAX, check_fields, param
from .accuracy import accuracy
from .checkpoint import (  # noqa: F401  (methods import the run-folder readers from here)
    SNAP_DIR,
    RunDir,
    TrainingSnapshots,
    block_files,
    check_output_dir,
    finish_run,
    load_block_assignment,
    load_block_snapshot,
)
from .loop import OptimConfig, cross_entropy, lr_shape, make_optimizer, make_scheduler, run_epochs

BLOCK_SCHEDULES = ("restart", "global")


@dataclass
class TrainConfig:
    """How to train. Defaults suit ResNet-18 on CIFAR-10 and small models alike (one-cycle SGD).

    Each option's allowed values are declared with ``param`` and checked by ``validate``.
    """

    model: str = "cnn"
    epochs: int = param(10, ge=1)  # plain training; ignored in block mode
    batch_size: int = param(256, ge=1)
    optimizer: str = param("sgd", choices=OPTIMIZERS)
    lr: float = param(0.1, gt=0)
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(5e-4, ge=0)
    schedule: str = param("onecycle", choices=SCHEDULES)
    label_smoothing: float = param(0.0, ge=0, lt=1)
    augment: str | None = param(None, choices=AUGMENTS)  # None: the data set's default
    seed: int = param(0, ge=0, le=SEED_MAX)
    snapshot_every: int = param(0, ge=0)  # steps; 0 = no step snapshots
    blocks: int = param(0, ge=0)  # >0: block-incremental training (DeepObliviate)
    epochs_per_block: int = param(1, ge=1)
    # block mode: one "global" schedule across all blocks (the default since issue 25: DeepObliviate's stitch
    # holds under it), or "restart" it every block (the recipe before; records without the key are that)
    block_schedule: str = param("global", choices=BLOCK_SCHEDULES)
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # on CUDA, and on CPU for models that declare it (Classifier.wants_channels_last)
    compile: bool = False  # torch.compile on CUDA
    model_options: dict = field(default_factory=dict)

    def optim(self) -> OptimConfig:
        return OptimConfig(self.optimizer, self.lr, self.momentum, self.weight_decay, self.schedule)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.blocks:  # plain training has no block schedule: its records and keys stay as they were
            del d["block_schedule"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A recorded recipe. A block-mode record without ``block_schedule`` was written before the option
        existed, when every block restarted the schedule: it reads as "restart", not today's default."""
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        if kept.get("blocks") and "block_schedule" not in kept:
            kept["block_schedule"] = "restart"
        return cls(**kept)

    @classmethod
    def from_record(cls, d: dict, where: str | Path) -> "TrainConfig":
        """The recipe a received run.json records, checked like a new one (CheckpointError naming the file):
        a recipe of junk types would otherwise fail mid-way through a method that retrains with it."""
        try:
            cfg = cls.from_dict(d)
            cfg.validate()
        except (ObliviateError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"corrupt {where}: its training config is invalid ({exc})") from None
        return cfg

    def validate(self) -> None:
        """Every option against its declared range, before any work (``ObliviateError`` naming it)."""
        check_fields(self, "train")
        if self.model not in MODELS and not self.model.startswith(FOREIGN_PREFIX):  # a user's model: see ``build``
            raise ObliviateError(f"unknown model {self.model!r}; choose one of: {', '.join(sorted(MODELS))}")
        if self.blocks and self.snapshot_every:
            raise ObliviateError("--blocks and --snapshot-every are two training modes: choose one")


@dataclass
class TrainResult:
    model: Classifier | torch.nn.Module  # the user's own class when ``train`` was given ``net``
    record: dict
    run: RunDir | None = None


def block_seed(seed: int, block: int) -> int:
    return seed * 10_007 + block


def assign_blocks(train: ArrayData, blocks: int, seed: int, pinned: dict[int, int] | None = None) -> np.ndarray:
    """Block index (0..B-1) of every training position: each class is spread evenly over the blocks.

    ``pinned`` (sample id -> block) places those samples in their block and spreads the rest: a planted
    backdoor's relabelled samples would otherwise follow their new class over every block.
    """
    y = train.y.cpu().numpy()
    if blocks > len(y):
        raise ObliviateError(f"{blocks} blocks for {len(y)} training samples: at most one block per sample")
    out = np.empty(len(y), dtype=np.int64)
    free = np.ones(len(y), dtype=bool)
    if pinned:
        pos_of = {int(i): p for p, i in enumerate(train.ids.cpu().numpy())}
        at = np.asarray([pos_of[int(i)] for i in pinned], dtype=np.int64)
        out[at], free[at] = np.asarray(list(pinned.values()), dtype=np.int64), False
    rng = np.random.default_rng(seed + 0xB10C)
    offset = 0
    for c in np.unique(y):
        pos = rng.permutation(np.flatnonzero((y == c) & free))
        out[pos] = (np.arange(len(pos)) + offset) % blocks  # rotate so small classes do not all land in block 0
        offset += len(pos)
    return out


def prepare_model(model: Classifier, cfg: TrainConfig, device: torch.device) -> Classifier:
    model = model.to(device)
    if cfg.channels_last and model.wants_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def _augment(cfg: TrainConfig, bundle: DataBundle) -> str:
    return cfg.augment if cfg.augment is not None else default_augment(bundle.name)


def train_block(model: Classifier, optimizer: torch.optim.Optimizer, data: ArrayData, cfg: TrainConfig,
                block: int, augment: str, description: str | None = None) -> int:
    """Train one block of block-incremental training (also what DeepObliviate re-runs on D_j minus S).

    The batch order is seeded by (seed, block), so re-running block j on the same data reproduces it step
    for step. ``block_schedule`` "restart": the schedule restarts every block; "global": one schedule over
    all B blocks, block j covering the fraction [j/B, (j+1)/B] of it whatever its length (so a block
    re-run without a deleted sample keeps its learning rates).
    """
    stream = BatchStream(data, cfg.batch_size, augment=augment, seed=block_seed(cfg.seed, block),
                         channels_last=cfg.channels_last and model.wants_channels_last(data.device))
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
        group.pop("initial_lr", None)
    steps = cfg.epochs_per_block * len(stream)
    if cfg.block_schedule == "global" and cfg.blocks:
        sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: lr_shape(cfg.schedule, (block + min(i, steps) / steps) / cfg.blocks))
    else:
        sched = make_scheduler(optimizer, cfg.optim(), steps)
    return run_epochs(model, stream, cross_entropy(cfg.label_smoothing), optimizer, sched,
                      epochs=cfg.epochs_per_block, description=description or f"block {block + 1}", amp=cfg.amp)


def train(bundle: DataBundle, cfg: TrainConfig | None = None, out: str | Path | None = None, *,
          device: str | torch.device | None = None, exclude_ids=None, overwrite: bool = False,
          max_steps: int | None = None, kind: str = "train", extra_record: dict | None = None,
          pinned_blocks: dict[int, int] | None = None, extra_files: dict[str, str] | None = None,
          build: Callable[[], Classifier] | None = None, net: torch.nn.Module | None = None,
          model_args: dict | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``bundle`` (minus ``exclude_ids``: retraining) and, with ``out``, save a run.

    ``net``: your own classifier instead of a zoo model (``bundle`` may then be tensors or Datasets too),
    trained from a fresh initialisation seeded by ``cfg.seed``; ``model_args`` are the keyword arguments it
    was built with (recorded, so ``load_checkpoint(out, model_class=...)`` rebuilds it). This is how a
    model of yours gets the block snapshots DeepObliviate needs; the result's ``model`` is your class.

    ``max_steps`` stops early without finishing the run (what a crash leaves behind; used by tests of
    resume). Re-calling with the same ``out`` and config resumes from the last snapshot; the record's
    steps and seconds then cover every segment. ``overwrite`` (``--force``) also discards snapshots of
    another config. ``pinned_blocks`` (id -> block, block mode) fixes some samples' blocks; ``extra_files``
    (name -> text) are written into ``out`` before ``run.json``. ``build`` makes the initial model
    (after seeding) instead of the registry: retraining a user's own architecture.
    """
    cfg = cfg or TrainConfig()
    user_spec = None
    if net is not None:
        bundle, cfg, build, user_spec = _users_model(net, bundle, cfg, model_args, build)
    cfg.validate()
    device = pick_device(device)
    out_path = check_output_dir(out, overwrite) if out is not None else None
    fresh = out_path if out_path is not None and not out_path.exists() else None  # ours to remove on divergence
    full_train = bundle.train
    train_data, keep = _excluding(full_train, exclude_ids)
    n_excluded = len(full_train) - len(train_data)
    key = config_hash({"cfg": cfg.to_dict(), "data": bundle.source_hash, "spec": bundle.spec,
                       "excluded": sorted(map(int, exclude_ids)) if n_excluded else [],
                       **({"pinned": sorted(pinned_blocks.items())} if pinned_blocks else {}),
                       **({"user_model": user_spec} if user_spec else {})})  # its constructor arguments too
    seed_everything(cfg.seed)
    model = prepare_model(build() if build is not None else model_for(cfg.model, bundle, **cfg.model_options),
                          cfg, device)
    started = now_iso()
    progress = TrainingSnapshots(out_path / SNAP_DIR if out_path is not None else None, key, overwrite,
                                 time.perf_counter(), fresh=fresh)
    train_dev = train_data.to(device)
    optimizer = make_optimizer(model.parameters(), cfg.optim())
    if cfg.blocks:
        blocks = assign_blocks(full_train, cfg.blocks, cfg.seed, pinned_blocks)
        if keep is not None:
            blocks = blocks[torch.nonzero(keep).flatten().numpy()]
        step, snapshot_info = _train_blocks(model, optimizer, train_dev, blocks, cfg, _augment(cfg, bundle), progress,
                                            kind, max_steps)
    else:
        step, snapshot_info = _train_steps(model, optimizer, train_dev, cfg, _augment(cfg, bundle), progress,
                                           kind, max_steps)
    if "interrupted_at_step" in snapshot_info or "interrupted_at_block" in snapshot_info:
        return TrainResult(model.unwrap() if net is not None else model, snapshot_info)
    sync(device)
    _check_diverged(model, cfg, fresh)
    record = {
        "kind": kind, "config": cfg.to_dict(), "config_hash": key, "seed": cfg.seed,
        "data": bundle.describe(), "model": model.spec.to_dict(), "device": str(device),
        "versions": versions(), "started": started, "finished": now_iso(), "seconds": progress.seconds(),
        "steps": step, "train_size": len(train_data), "excluded": n_excluded, "snapshots": snapshot_info,
        "accuracy": {"train": accuracy(model, train_dev), "val": accuracy(model, bundle.val),
                     "test": accuracy(model, bundle.test)},
        **(extra_record or {}),
    }
    run = finish_run(out_path, model, record, extra_files) if out_path is not None else None
    return TrainResult(model.unwrap() if net is not None else model, record, run)


def _excluding(train: ArrayData, exclude_ids) -> tuple[ArrayData, torch.Tensor | None]:
    """(the training set without ``exclude_ids``, the mask of rows kept; None when nothing is excluded)."""
    if exclude_ids is None or not len(exclude_ids):
        return train, None
    keep = ~torch.isin(train.ids, torch.as_tensor(np.asarray(exclude_ids), dtype=torch.long))
    kept = train.subset(torch.nonzero(keep).flatten())
    if len(kept) == 0:
        raise ObliviateError("excluding the requested ids leaves no training data")
    return kept, keep


def _users_model(net: torch.nn.Module, data, cfg: TrainConfig, args: dict | None, build) -> tuple:
    """(bundle, cfg naming the user's model, how to build it fresh, its spec) for ``train(net=...)``.

    Fresh models come from the user's constructor, ``type(net)(**args)`` (their own initialisation, seeded),
    which must build what ``net`` is: the run records ``args``, and reloading it builds exactly that."""
    if build is not None:
        raise ObliviateError("train: pass net (your model) or build, not both")
    if isinstance(net, (Classifier, ForeignClassifier)):
        raise ObliviateError(f"train(net=...) is for your own model; for obliviate's {net.spec.name!r} set "
                             "TrainConfig(model=...) instead")
    cls, args = type(net), dict(args or {})
    again = construct(cls, args, what=f"train: {cls.__name__}",
                      hint="; pass model_args, the keyword arguments net was built with")
    mine, theirs = net.state_dict(), again.state_dict() if isinstance(again, torch.nn.Module) else {}
    if {k: tuple(v.shape) for k, v in mine.items()} != {k: tuple(v.shape) for k, v in theirs.items()}:
        raise ObliviateError(f"train: {cls.__name__}(**{args}) builds another model than net (other weights or "
                             "shapes); pass model_args, the keyword arguments net was built with")
    wrapped, bundle = adopt(net, data, args=args, init=lambda: cls(**args))
    return bundle, replace(cfg, model=wrapped.spec.name), wrapped.fresh, wrapped.spec.to_dict()


def _train_blocks(model, optimizer, train_dev: ArrayData, blocks: np.ndarray, cfg: TrainConfig, augment: str,
                  progress: TrainingSnapshots, kind: str, max_steps: int | None) -> tuple[int, dict]:
    """Block-incremental training with a snapshot after every block; returns (total steps, snapshot info)."""
    snap_dir, device = progress.snap_dir, train_dev.device
    start_block, step = 0, 0
    blob = progress.resume("block", model, optimizer)
    if blob is not None:
        start_block, step = min(int(blob["block"]), cfg.blocks), int(blob.get("steps", 0))
    if snap_dir is not None and start_block == 0:
        progress.save_block_assignment(train_dev.ids.cpu().numpy(), blocks)
        progress.save("block", 0, model, optimizer, steps=0)
    for j in range(start_block, cfg.blocks):
        block_data = train_dev.subset(torch.as_tensor(np.flatnonzero(blocks == j), device=device))
        step += train_block(model, optimizer, block_data, cfg, j, augment,
                            description=f"{kind} block {j + 1}/{cfg.blocks}")
        _check_diverged(model, cfg, progress.fresh)
        if snap_dir is not None:
            progress.save("block", j + 1, model, optimizer, steps=step)
        if max_steps is not None and step >= max_steps:
            return step, {"interrupted_at_block": j + 1}
    return step, {"mode": "blocks", "blocks": cfg.blocks, "epochs_per_block": cfg.epochs_per_block,
                  **block_files(cfg.blocks, snap_dir)}


def _check_diverged(model: Classifier, cfg: TrainConfig, remove: Path | None) -> None:
    """NaN weights end the run: a diverged model is no result, and snapshots this call wrote are removed."""
    warm = "" if cfg.schedule == "onecycle" else " or warm up with schedule onecycle"
    try:
        require_finite(model, "the trained model", f"training diverged; lower the learning rate (lr={cfg.lr:g})"
                                                  f"{warm}; nothing was saved")
    except ObliviateError:
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True)
        raise


def _train_steps(model, optimizer, train_dev: ArrayData, cfg: TrainConfig, augment: str, progress: TrainingSnapshots,
                 kind: str, max_steps: int | None) -> tuple[int, dict]:
    """Plain training, with a snapshot (and the ids of the steps since the last one) every K steps."""
    snap_dir, device = progress.snap_dir if cfg.snapshot_every else None, train_dev.device
    stream = BatchStream(train_dev, cfg.batch_size, augment=augment, seed=cfg.seed,
                         channels_last=cfg.channels_last and model.wants_channels_last(device))
    total = cfg.epochs * len(stream)
    sched = make_scheduler(optimizer, cfg.optim(), total)
    blob = progress.resume("step", model, optimizer, sched) if snap_dir is not None else None
    start = int(blob["step"]) if blob else 0
    pending: list[np.ndarray] = []

    def on_step(s: int, batch) -> None:
        if snap_dir is None:
            return
        ids = np.full(cfg.batch_size, -1, np.int64)
        ids[: len(batch.ids)] = batch.ids.cpu().numpy()
        pending.append(ids)
        if s % cfg.snapshot_every == 0 or s == total:
            progress.save_step_ids(s, pending)
            pending.clear()
            progress.save("step", s, model, optimizer, sched)

    train_model = torch.compile(model) if cfg.compile and device.type == "cuda" else model
    step = run_epochs(train_model, stream, cross_entropy(cfg.label_smoothing), optimizer, sched, epochs=cfg.epochs,
                      start_step=start, on_step=on_step, description=kind, max_steps=max_steps, amp=cfg.amp)
    if max_steps is not None and step < total:
        return step, {"interrupted_at_step": step}
    if not cfg.snapshot_every:
        return step, {"mode": "none"}
    return step, {"mode": "steps", "every": cfg.snapshot_every, "steps": total,
                  "files": progress.step_files() if snap_dir else []}
