"""Boundary unlearning (Chen et al., CVPR 2023): shift the decision boundary of forgotten classes.

``boundary-shrink``: every forget sample is pushed one FGSM step (ε on [0, 1] inputs, against its
true label) across the nearest boundary by the frozen original model; its new label is the
original's argmax on that perturbed input, excluding the forgotten classes (the authors keep the
argmax even when it is still the true class; excluding it makes every relabel a neighbour). The
model is then fine-tuned on D_f only with those neighbour labels — the class collapses onto its
neighbours, which is what a retrained model does with those inputs.

``boundary-expand``: widen the head with a shadow (K+1)-th output, fine-tune D_f into the shadow
class, then prune the shadow neuron (the first K rows go back into the K-way head). The forget
samples' evidence now sits in a neuron that no longer exists.

The authors' values (SGD lr 1e-5, momentum 0.9, 10 epochs, FGSM ε 0.1) were set for ResNet-18 with
hundreds of steps per epoch; on the small CNN (digits: 3 steps per epoch) they move nothing, so the
defaults are measured (class 3): shrink SGD lr 1e-3, 10 epochs — forget 0.00 on digits and
Fashion-MNIST, retain −0.7 / −4 points (lr 1e-2: −19 points); expand SGD lr 2e-4, 10 epochs — digits
forget 0.00 with retain −9.5 points, Fashion-MNIST forget 0.45 with retain −4 points (lr 1e-4: digits
0.10 / −7; 1e-3: 0.00 / −29). Expand is the weakest of the two on small models. ``preset=paper``
restores lr 1e-5. Class requests only (both methods relabel whole classes). Freezing BatchNorm
statistics while training on D_f alone was tried and made retain accuracy worse, so it is not done.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import ArrayData
from ..data.pipeline import predict
from ..models import Classifier
from ..params import OPTIMIZERS, param
from ..training.loop import fine_tune
from .base import FORGET, Method, MethodContext, register
from .common import FineTuneParams


def fgsm_neighbour_labels(ctx, model: nn.Module, data: ArrayData, eps: float, batch_size: int = 256) -> torch.Tensor:
    """Label of the nearest wrong class for every sample: argmax of ``model`` after one FGSM step."""
    model.eval()
    image = data.x.dtype == torch.uint8
    blocked = torch.as_tensor(ctx.forget_classes, device=data.y.device)
    out = []
    for i in range(0, len(data), batch_size):
        part = data.subset(torch.arange(i, min(i + batch_size, len(data)), device=data.y.device))
        x = part.float_inputs().requires_grad_(True)
        loss = F.cross_entropy(model(x), part.y)
        (grad,) = torch.autograd.grad(loss, x)
        x_adv = x.detach() + eps * grad.sign()
        if image:  # stay a valid image: [0, 1], on the 8-bit grid (as the authors' code does)
            x_adv = torch.round(x_adv.clamp(0.0, 1.0) * 255) / 255
        logits = predict(model, x_adv)
        logits[:, blocked] = float("-inf")
        out.append(logits.argmax(1))
    return torch.cat(out)


@register
class BoundaryShrink(Method):
    name = "boundary-shrink"
    summary = "relabel forget samples to their FGSM-nearest class and fine-tune on them (class requests; reads D_f)"
    needs = frozenset({FORGET})
    request_kinds = frozenset({"class"})

    @dataclass
    class Params(FineTuneParams):
        eps: float = param(0.1, gt=0)
        epochs: float = param(10.0, gt=0)
        lr: float = param(1e-3, gt=0)
        batch_size: int = param(64, ge=1)
        optimizer: str = param("sgd", choices=OPTIMIZERS)
        momentum: float = param(0.9, ge=0, lt=1)

    presets = {"paper": {"eps": 0.1, "epochs": 10.0, "lr": 1e-5}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        forget = ctx.forget
        labels = fgsm_neighbour_labels(ctx, ctx.original, forget, p.eps)
        fine_tune(ctx.model, ArrayData(forget.x, labels, forget.ids), epochs=p.epochs, batch_size=p.batch_size,
                  optim=p.optim(), augment=ctx.augment,
                  seed=ctx.seed, description="boundary-shrink")
        return ctx.model


class _Widened(nn.Module):
    """The classifier's body under a (K+1)-way head: the shadow class is output K."""

    def __init__(self, model, head: nn.Linear):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x):
        return self.head(self.model.features(x))


@register
class BoundaryExpand(Method):
    name = "boundary-expand"
    summary = "train D_f into a shadow (K+1)-th class, then prune it (class requests; reads D_f)"
    needs = frozenset({FORGET})
    request_kinds = frozenset({"class"})

    @dataclass
    class Params(FineTuneParams):
        epochs: float = param(10.0, gt=0)
        lr: float = param(2e-4, gt=0)
        batch_size: int = param(64, ge=1)
        optimizer: str = param("sgd", choices=OPTIMIZERS)
        momentum: float = param(0.9, ge=0, lt=1)

    presets = {"paper": {"epochs": 10.0, "lr": 1e-5}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        model, forget, k = ctx.model, ctx.forget, ctx.num_classes
        old = model.head
        wide = nn.Linear(old.in_features, k + 1).to(old.weight.device)
        with torch.no_grad():
            g = ctx.generator(5)
            bound = 1.0 / old.in_features ** 0.5  # nn.Linear's default init range, seeded
            wide.weight[k].uniform_(-bound, bound, generator=g)
            wide.bias[k].uniform_(-bound, bound, generator=g)
            wide.weight[:k].copy_(old.weight)
            wide.bias[:k].copy_(old.bias)
        shadow = ArrayData(forget.x, torch.full_like(forget.y, k), forget.ids)
        head_params = {id(q) for q in old.parameters()}  # by identity: a user's model names its head otherwise
        params = [q for q in model.parameters() if id(q) not in head_params] + list(wide.parameters())
        fine_tune(_Widened(model, wide), shadow, epochs=p.epochs, batch_size=p.batch_size,
                  optim=p.optim(), augment=ctx.augment,
                  seed=ctx.seed, params=params, description="boundary-expand")
        with torch.no_grad():  # prune the shadow neuron: back to a K-way head
            old.weight.copy_(wide.weight[:k])
            old.bias.copy_(wide.bias[:k])
        return model
