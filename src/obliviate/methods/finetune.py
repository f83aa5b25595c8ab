"""Fine-tune: a few epochs on the retain set; catastrophic forgetting does the unlearning."""
from __future__ import annotations

from dataclasses import dataclass

from ..training.loop import OptimConfig, fine_tune
from .base import RETAIN, Method, register


@register
class FineTune(Method):
    name = "finetune"
    summary = "fine-tune on the retain set for a few epochs (reads D_r)"
    needs = frozenset({RETAIN})

    @dataclass
    class Params:
        epochs: float = 3.0
        lr: float = 0.02
        batch_size: int = 128
        optimizer: str = "sgd"
        weight_decay: float = 5e-4

    def run(self, ctx, p):
        optim = OptimConfig(p.optimizer, p.lr, 0.9, p.weight_decay, "cosine")
        fine_tune(ctx.model, ctx.retain, epochs=p.epochs, batch_size=p.batch_size, optim=optim,
                  augment=ctx.augment, seed=ctx.seed, description="finetune")
        return ctx.model
