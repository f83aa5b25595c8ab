"""Random labels (Amnesiac unlearning / SalUn's RL): train on D_f relabelled at random, plus D_r.

Each forget sample gets one fixed wrong label, drawn once (seeded) as Amnesiac and SalUn do, and the
model is fine-tuned with cross-entropy on the relabelled D_f together with D_r, so it unlearns the
forget samples' labels while the retain set holds the rest in place. For a class request the wrong
labels are drawn from the *retained* classes (never another forgotten class); for a sample request,
uniformly from the K−1 classes other than the true one.

Defaults measured on the small CNN (class 3): SGD lr 0.01, 3 epochs, batch 64 forgets the class
(0.00 on digits and Fashion-MNIST) with retain −0.1 / +2 points; SalUn's class-wise setting (10
epochs, lr 0.013) is ``preset=paper``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..data.dataset import ArrayData, concat
from ..models import Classifier
from ..params import OPTIMIZERS, SCHEDULES, param
from ..training.loop import fine_tune
from .base import FORGET, RETAIN, Method, MethodContext, register
from .common import FineTuneParams


def wrong_labels(ctx, y: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """A seeded wrong label per entry of ``y``: a retained class for class requests, else any other class."""
    g = ctx.generator(salt)
    if ctx.forget_classes:
        allowed = torch.as_tensor(ctx.retained_classes, device=y.device)
        pick = torch.randint(0, len(allowed), y.shape, device=y.device, generator=g)
        return allowed[pick]
    r = torch.randint(0, ctx.num_classes - 1, y.shape, device=y.device, generator=g)
    return r + (r >= y).long()  # skip the true class


def relabelled(ctx, forget: ArrayData, salt: int = 0) -> ArrayData:
    return ArrayData(forget.x, wrong_labels(ctx, forget.y, salt), forget.ids)


def random_label_fit(ctx, p, description: str, grad_hook=None, weight_decay: float | None = None) -> None:
    """Fine-tune ``ctx.model`` on relabelled D_f ∪ D_r (shared by ``random-label`` and ``salun``)."""
    data = concat(relabelled(ctx, ctx.forget, salt=11), ctx.retain)
    optim = p.optim() if weight_decay is None else dataclasses.replace(p.optim(), weight_decay=weight_decay)
    fine_tune(ctx.model, data, epochs=p.epochs, batch_size=p.batch_size, optim=optim, augment=ctx.augment,
              seed=ctx.seed, grad_hook=grad_hook, description=description)


@register
class RandomLabel(Method):
    name = "random-label"
    summary = "fine-tune on D_f with random wrong labels plus D_r (reads D_f and D_r)"
    needs = frozenset({FORGET, RETAIN})

    @dataclass
    class Params(FineTuneParams):
        epochs: float = param(3.0, gt=0)
        lr: float = param(0.01, gt=0)
        batch_size: int = param(64, ge=1)
        optimizer: str = param("sgd", choices=OPTIMIZERS)
        momentum: float = param(0.9, ge=0, lt=1)
        weight_decay: float = param(5e-4, ge=0)
        schedule: str = param("constant", choices=SCHEDULES)

    presets = {"paper": {"epochs": 10.0, "lr": 0.013}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        random_label_fit(ctx, p, "random-label")
        return ctx.model
