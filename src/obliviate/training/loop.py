"""The one optimisation loop: training, retraining and every method that fine-tunes run through it.

A caller gives a model, a ``BatchStream`` and a ``loss_fn(model, batch) -> loss``; the loop owns
mixed precision, the optimiser and schedule step, gradient hooks (e.g. SalUn's saliency mask) and
step callbacks (snapshots). Keeping it in one place means a speed or correctness fix reaches every
method at once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from ..data.pipeline import Batch, BatchStream, autocast
from ..errors import ObliviateError
from ..progress import progress_task

LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]


@dataclass
class OptimConfig:
    """Optimiser and schedule. ``lr`` is the peak rate for one-cycle, the start rate for cosine."""

    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # onecycle | cosine | constant
    nesterov: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(params: Iterable[torch.nn.Parameter] | Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ObliviateError(f"unknown optimizer {cfg.optimizer!r}; choose sgd, adam or adamw")


class OneCycle(torch.optim.lr_scheduler.LRScheduler):
    """One-cycle schedule: linear warm-up over the first quarter from lr/10 to lr, then linear decay to lr/1000.

    The same learning rates as ``OneCycleLR(pct_start=0.25, anneal_strategy="linear", div_factor=10,
    final_div_factor=100)``, bit for bit, wherever that works. torch's version divides by zero when the
    warm-up phase is empty (exactly 4 steps: a block of block-incremental training can be that short);
    here a run too short to warm up starts at the peak and decays, so any length of 1 step or more works.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, total_steps: int):
        self.peak_lr, self.total_steps = float(peak_lr), max(1, int(total_steps))
        super().__init__(optimizer)

    def lr_at(self, step: int) -> float:
        """OneCycleLR's formula (same operations, so the same floats) with the empty-phase case defined."""
        start_lr = self.peak_lr / 10.0
        min_lr = start_lr / 100.0
        warm_end = float(0.25 * self.total_steps) - 1  # last warm-up step; <= 0: no room to warm up
        end = self.total_steps - 1
        if warm_end > 0 and step <= warm_end:
            return (self.peak_lr - start_lr) * ((step - 0.0) / (warm_end - 0.0)) + start_lr
        if warm_end > 0:
            pct = (step - warm_end) / (end - warm_end)
        else:
            pct = step / end if end > 0 else 0.0
        return (min_lr - self.peak_lr) * pct + self.peak_lr

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch) for _ in self.optimizer.param_groups]


def lr_shape(schedule: str, frac: float) -> float:
    """The schedule's lr as a share of its peak at ``frac`` (0..1) of the run: one schedule spread over
    pieces of different lengths (block mode's "global" schedule)."""
    frac = min(max(frac, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if schedule == "constant":
        return 1.0
    if schedule == "onecycle":  # OneCycle's shape: warm up from 1/10 over the first quarter, then down to 1/1000
        return 0.1 + 0.9 * frac / 0.25 if frac < 0.25 else 1.0 + (1e-3 - 1.0) * (frac - 0.25) / 0.75
    raise ObliviateError(f"unknown schedule {schedule!r}; choose onecycle, cosine or constant")


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """The schedule over ``total_steps`` optimiser steps (any number >= 1 works for every schedule)."""
    total_steps = max(1, total_steps)
    if cfg.schedule == "onecycle":
        return OneCycle(opt, cfg.lr, total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ObliviateError(f"unknown schedule {cfg.schedule!r}; choose onecycle, cosine or constant")


def cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(model(batch.x), batch.y, label_smoothing=label_smoothing)

    return loss


def run_epochs(model: torch.nn.Module, stream: BatchStream, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
               scheduler=None, *, epochs: int, start_step: int = 0, step_offset: int = 0,
               grad_hook: Callable[[torch.nn.Module], None] | None = None,
               on_step: Callable[[int, Batch], None] | None = None, description: str = "train",
               max_steps: int | None = None, amp: bool = True) -> int:
    """Run ``epochs`` passes over ``stream`` from global step ``start_step``; return the step reached.

    Steps are numbered ``step_offset + epoch * len(stream) + b``; ``start_step`` lets a resumed run
    skip what it already did, drawing exactly the batches it would have drawn.
    """
    device = next(model.parameters()).device
    per_epoch = len(stream)
    if per_epoch == 0:
        raise ObliviateError("no training data: the batch stream is empty")
    model.train()
    step = start_step
    total = epochs * per_epoch
    with progress_task(description, total) as advance:
        advance(start_step - step_offset)
        for epoch in range((start_step - step_offset) // per_epoch, epochs):
            skip = (start_step - step_offset) - epoch * per_epoch if step == start_step else 0
            for batch in stream.epoch(epoch, start=max(0, skip), step_offset=step_offset + epoch * per_epoch):
                with autocast(device, amp):
                    loss = loss_fn(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_hook is not None:
                    grad_hook(model)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                if on_step is not None:
                    on_step(step, batch)
                advance(1, f"loss {loss.item():.3f}" if step % 20 == 0 else "")
                if max_steps is not None and step - step_offset >= max_steps:
                    return step
    return step


def fine_tune(model: torch.nn.Module, data, loss_fn: LossFn | None = None, *, epochs: float = 1,
              batch_size: int = 128, optim: OptimConfig | None = None, augment: str = "none", seed: int = 0,
              grad_hook=None, description: str = "fine-tune", params=None, max_steps: int | None = None,
              min_steps: int = 0) -> int:
    """Fine-tune ``model`` on ``data`` (an ``ArrayData``) with ``loss_fn`` (default: cross-entropy).

    The shared helper every unlearning method uses; ``epochs`` may be fractional (a part-epoch is cut
    by ``max_steps``). ``min_steps`` runs more epochs where ``epochs`` passes over small data would be
    too few optimiser steps. Returns the number of optimiser steps taken.
    """
    optim = optim or OptimConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant")
    stream = BatchStream(data, batch_size, shuffle=True, augment=augment, seed=seed)
    steps = int(round(epochs * len(stream))) if max_steps is None else max_steps
    whole = max(1, int(-(-epochs // 1)))
    if min_steps > steps and len(stream):
        steps, whole = min_steps, max(whole, -(-min_steps // len(stream)))
    opt = make_optimizer(params if params is not None else model.parameters(), optim)
    sched = make_scheduler(opt, optim, min(steps, whole * len(stream)))
    return run_epochs(model, stream, loss_fn or cross_entropy(), opt, sched, epochs=whole, grad_hook=grad_hook,
                      description=description, max_steps=steps)
