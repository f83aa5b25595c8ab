"""ℓ1-sparse unlearning (Jia et al., NeurIPS 2023, the SalUn authors): fine-tune on D_r with an ℓ1 penalty.

Loss = CE(D_r) + α_e·Σ|θ| with α_e = α·(1 − e/E) in epoch e of E (the authors' per-epoch linear
decay): sparsity pushed early, accuracy recovered late. Pruning weights that only D_f needed speeds
up the catastrophic forgetting that plain fine-tuning relies on.

Default α measured on the small CNN (SGD lr 0.02, 5 epochs, class 3): the gradient of α·Σ|θ| shrinks
every weight by lr·α per step whatever the model's size, and the spec's α = 0.2 collapses the model
(digits retain 0.11). α = 0.02: digits forget 0.00 / retain −2.6 points but Fashion-MNIST retain −22;
α = 0.01: digits forget 0.71 / retain ~0, Fashion-MNIST forget 0.00 / retain −3.4; α ≤ 0.005 is plain
fine-tuning. Default 0.01. ``preset=paper`` gives α = 0.2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.pipeline import BatchStream
from ..models import Classifier
from ..params import SCHEDULES, param
from ..training.loop import fine_tune
from .base import RETAIN, Method, MethodContext, register
from .common import FineTuneParams


@register
class L1Sparse(Method):
    name = "l1-sparse"
    summary = "fine-tune on D_r with a linearly decaying l1 penalty on the weights (reads D_r)"
    needs = frozenset({RETAIN})

    @dataclass
    class Params(FineTuneParams):
        alpha: float = param(0.01, ge=0)
        epochs: int = param(5, ge=1)
        lr: float = param(0.02, gt=0)
        batch_size: int = param(128, ge=1)
        schedule: str = param("cosine", choices=SCHEDULES)  # optimizer, momentum, weight decay: the base's

    presets = {"paper": {"alpha": 0.2}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        per_epoch = len(BatchStream(ctx.retain, p.batch_size))
        params = [q for q in ctx.model.parameters() if q.requires_grad]

        def loss(model, batch):
            epoch = batch.step // per_epoch
            a = p.alpha * (1.0 - epoch / p.epochs)
            l1 = torch.stack([q.abs().sum() for q in params]).sum()
            return F.cross_entropy(model(batch.x), batch.y) + a * l1

        fine_tune(ctx.model, ctx.retain, loss, epochs=p.epochs, batch_size=p.batch_size,
                  optim=p.optim(),
                  augment=ctx.augment, seed=ctx.seed, description="l1-sparse")
        return ctx.model
