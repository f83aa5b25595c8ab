"""SalUn (Fan et al., ICLR 2024): random-label unlearning restricted to salient weights.

1. Saliency: the gradient of the forget loss (cross-entropy on D_f, model in eval mode, summed over
   the whole forget set) is taken once; the top ``mask_ratio`` of all weights by |gradient|, ranked
   globally across layers, form the mask.
2. Random-label unlearning (see ``random_label``) on relabelled D_f ∪ D_r, updating masked weights only.

Unmasked weights must not move at all. Masking the gradient is not enough with the optimiser's own
weight decay (it is added inside ``step``, after any gradient hook — the bug users reported in the
authors' code), so the optimiser runs with weight decay 0 and the decay is added to the gradient
*before* the mask: an unmasked weight then sees a zero gradient at every step, its momentum buffer
stays zero (SGD) or its update is 0/ε (Adam), and it stays bit-identical. Buffers (BatchNorm
running statistics) are not weights and do follow the data.

Defaults measured on the small CNN (class 3): SGD lr 0.01, 3 epochs forgets the class (0.00 on
digits and Fashion-MNIST) with retain −0.4 / +2 points; SalUn's class-wise setting (10 epochs, lr 0.013) is
``preset=paper``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.pipeline import BatchStream
from ..models import Classifier
from ..params import param
from .base import FORGET, RETAIN, Method, MethodContext, register
from .random_label import RandomLabel, random_label_fit


def saliency_mask(model: torch.nn.Module, forget, ratio: float, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{parameter name: 0/1 mask}: 1 for the top ``ratio`` of weights by |∇ CE(D_f)|, ranked globally."""
    was_training = model.training
    model.eval()
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    grads = [torch.zeros_like(q) for _, q in named]
    for batch in BatchStream(forget, batch_size, shuffle=False):
        loss = F.cross_entropy(model(batch.x), batch.y, reduction="sum") / len(forget)
        for g, d in zip(grads, torch.autograd.grad(loss, [q for _, q in named], allow_unused=True)):
            if d is not None:
                g.add_(d)
    model.train(was_training)
    flat = torch.cat([g.abs().flatten() for g in grads])
    keep = int(round(ratio * flat.numel()))
    mask = torch.zeros_like(flat)
    if keep:
        mask[torch.topk(flat, keep, sorted=False).indices] = 1.0
    out, start = {}, 0
    for n, q in named:
        out[n] = mask[start:start + q.numel()].view_as(q)
        start += q.numel()
    return out


@register
class SalUn(Method):
    name = "salun"
    summary = "random-label unlearning on the most forget-salient half of the weights (reads D_f and D_r)"
    needs = frozenset({FORGET, RETAIN})

    @dataclass
    class Params(RandomLabel.Params):  # random-label's recipe plus the mask
        mask_ratio: float = param(0.5, gt=0, le=1)

    presets = {"paper": {"mask_ratio": 0.5, "epochs": 10.0, "lr": 0.013}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        model = ctx.model
        masks = saliency_mask(model, ctx.forget, p.mask_ratio)
        pairs = [(q, masks[n]) for n, q in model.named_parameters() if n in masks]
        frozen = [q for n, q in model.named_parameters() if n not in masks]
        wd = p.weight_decay

        def hook(m):
            for q, mask in pairs:
                if q.grad is None:
                    q.grad = torch.zeros_like(q)
                if wd:
                    q.grad.add_(q.detach(), alpha=wd)  # decay through the gradient, so the mask covers it
                q.grad.mul_(mask)
            for q in frozen:
                q.grad = None

        random_label_fit(ctx, p, "salun", grad_hook=hook, weight_decay=0.0)
        return model
