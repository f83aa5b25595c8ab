"""Fine-tune: a few epochs on the retain set; catastrophic forgetting does the unlearning."""
from __future__ import annotations

from dataclasses import dataclass

from ..models import Classifier
from ..params import SCHEDULES, param
from ..training.loop import fine_tune
from .base import RETAIN, Method, MethodContext, register
from .common import FineTuneParams


@register
class FineTune(Method):
    name = "finetune"
    summary = "fine-tune on the retain set for a few epochs (reads D_r)"
    needs = frozenset({RETAIN})

    @dataclass
    class Params(FineTuneParams):
        epochs: float = param(3.0, gt=0)
        lr: float = param(0.02, gt=0)
        batch_size: int = param(128, ge=1)
        weight_decay: float = param(5e-4, ge=0)
        schedule: str = param("cosine", choices=SCHEDULES)

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        fine_tune(ctx.model, ctx.retain, epochs=p.epochs, batch_size=p.batch_size, optim=p.optim(),
                  augment=ctx.augment, seed=ctx.seed, description="finetune")
        return ctx.model
