"""Fine-tune: a few epochs on the retain set; catastrophic forgetting does the unlearning."""
from __future__ import annotations

from dataclasses import dataclass

from ..params import OPTIMIZERS, param
from ..training.loop import OptimConfig, fine_tune
from .base import RETAIN, Method, register


@register
class FineTune(Method):
    name = "finetune"
    summary = "fine-tune on the retain set for a few epochs (reads D_r)"
    needs = frozenset({RETAIN})

    @dataclass
    class Params:
        epochs: float = param(3.0, gt=0)
        lr: float = param(0.02, gt=0)
        batch_size: int = param(128, ge=1)
        optimizer: str = param("sgd", choices=OPTIMIZERS)
        weight_decay: float = param(5e-4, ge=0)

    def run(self, ctx, p):
        optim = OptimConfig(p.optimizer, p.lr, 0.9, p.weight_decay, "cosine")
        fine_tune(ctx.model, ctx.retain, epochs=p.epochs, batch_size=p.batch_size, optim=optim,
                  augment=ctx.augment, seed=ctx.seed, description="finetune")
        return ctx.model
