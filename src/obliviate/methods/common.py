"""Helpers shared by several unlearning methods (not a method: the auto-loader skips this module).

``error_maximising_noise`` is UNSIR's noise generator. It lives here because FCALB's zero-glance
variant uses the same noise as its stand-in for the forget samples, and other methods may too.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from ..data.dataset import ArrayData
from ..data.pipeline import BatchStream, autocast
from ..params import OPTIMIZERS, SCHEDULES, param
from ..training.loop import OptimConfig


@dataclass
class FineTuneParams:
    """The fine-tune recipe most methods share. A method's ``Params`` extends it and overrides the defaults it
    measured (keeping its own docstring); ``optim()`` is the optimiser and schedule those fields say."""

    epochs: float = param(1.0, gt=0)
    lr: float = param(0.01, gt=0)
    batch_size: int = param(64, ge=1)
    optimizer: str = param("sgd", choices=OPTIMIZERS)
    momentum: float = param(0.9, ge=0, lt=1)
    weight_decay: float = param(0.0, ge=0)
    schedule: str = param("constant", choices=SCHEDULES)

    def optim(self) -> OptimConfig:
        return OptimConfig(self.optimizer, self.lr, self.momentum, self.weight_decay, self.schedule)


#: Noise samples get negative ids (``NOISE_ID_BASE - k``) so they can never collide with a real sample id.
NOISE_ID_BASE = -1


def error_maximising_noise(model: torch.nn.Module, classes: Iterable[int], shape: tuple[int, ...], *, n: int = 256,
                           steps: int = 40, lr: float = 0.1, lam: float = 0.1, device: torch.device | str | None = None,
                           generator: torch.Generator | None = None, train_mode: bool = False,
                           batch_size: int = 256, space: str = "normalised") -> ArrayData:
    """UNSIR's error-maximising noise: one learnable block N_c of ``n`` inputs per class c.

    With the model's weights fixed, each block minimises ``-CE(f(N_c), c) + lam * mean_i ||N_c,i||^2``
    with Adam (``lr``, ``steps``), from a standard-normal start: inputs the model is as sure as
    possible are *not* c, kept small. Inputs live in model space (images in [0, 1]; normalisation is
    inside the model), the noise itself is unbounded, as in the authors' notebook.

    ``train_mode=False`` (default) evaluates the model in eval mode so BatchNorm uses (and does not
    update) its running statistics; ``True`` reproduces the notebook, whose model sat in train mode
    and so drifted its running statistics on noise — the caller then passes the model it is willing
    to have changed. The model's parameters receive no gradient either way.

    Returns an ``ArrayData`` of float inputs, labelled with their class (not 0, a notebook bug) and
    with negative ids, ready to ``concat`` with real data.
    """
    classes = [int(c) for c in classes]
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if n < 1 or steps < 0:
        raise ValueError(f"noise needs n >= 1 and steps >= 0, got n={n}, steps={steps}")
    if space not in ("normalised", "input"):
        raise ValueError(f"noise space must be 'normalised' or 'input', got {space!r}")
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if space == "normalised" and mean is not None and std is not None:
        def to_input(z):  # model space = mean + std * z, so the model's first layer sees z
            return z * std.to(z.dtype) + mean.to(z.dtype)
    else:
        def to_input(z):
            return z
    was_training = model.training
    model.train(train_mode)
    blocks, labels = [], []
    try:
        for c in classes:
            noise = torch.randn((n, *shape), device=device, generator=generator).requires_grad_(True)
            target = torch.full((n,), c, dtype=torch.long, device=device)
            _maximise_error(model, to_input, noise, target, steps, lr, lam, batch_size)
            blocks.append(to_input(noise.detach()))
            labels.append(target)
    finally:
        model.train(was_training)
    x = torch.cat(blocks) if blocks else torch.empty((0, *shape), device=device)
    y = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=device)
    ids = NOISE_ID_BASE - torch.arange(len(y), device=device, dtype=torch.long)
    return ArrayData(x, y, ids)


def _maximise_error(model: torch.nn.Module, to_input, noise: torch.Tensor, target: torch.Tensor, steps: int,
                    lr: float, lam: float, batch_size: int) -> None:
    """Adam on one class's noise block in place: minimise ``-CE(f(N_c), c) + lam * mean ||N_c,i||^2``."""
    n, device = len(noise), noise.device
    opt = torch.optim.Adam([noise], lr=lr)
    for _ in range(steps):
        # whole block per step when it fits one batch (the notebook's case); otherwise in chunks
        opt.zero_grad(set_to_none=True)
        for i in range(0, n, batch_size):
            chunk = noise[i:i + batch_size]
            with autocast(device):
                logits = model(to_input(chunk))
            ce = F.cross_entropy(logits.float(), target[i:i + batch_size])
            norm = chunk.pow(2).flatten(1).sum(1).mean()
            loss = (-ce + lam * norm) * (len(chunk) / n)
            (grad,) = torch.autograd.grad(loss, noise)
            noise.grad = grad if noise.grad is None else noise.grad + grad
        opt.step()


def state_floats(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the model's floating-point state (parameters and buffers such as BN statistics)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


FORGET_BN = ("batch", "running")  # BatchNorm on a forget-only batch: that batch's statistics, or the running ones


@contextmanager
def batchnorm_frozen(model: torch.nn.Module, enabled: bool = True):
    """BatchNorm layers in eval mode (running statistics, not the batch's) for the forward passes inside.

    A loss computed on a batch of forget samples alone, in train mode, can be met through that batch's own
    statistics: the batch is normalised differently from any mixed batch the model will see, and the
    weights need not change (fcalb-samples, resnet8, 300 poisoned images: forget loss 0.002, yet every image
    still goes to the backdoor target in eval mode). With the running statistics fixed, the loss can only
    be met by the weights. Other layers keep their mode.
    """
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.training] if enabled else []
    for m in layers:
        m.eval()
    try:
        yield
    finally:
        for m in layers:
            m.train()


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, data: ArrayData, batch_size: int = 256) -> bool:
    """Re-estimate BatchNorm running statistics as the plain average over ``data`` (no weight change).

    Methods that train on synthetic inputs (UNSIR's noise) leave those inputs' statistics in the running
    averages; a short repair on a few batches (momentum 0.1) cannot wash them out, and eval-mode
    accuracy then collapses on every class. Returns False when the model has no BatchNorm.
    """
    layers = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not layers or len(data) == 0:
        return False
    saved = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    model.train()
    try:
        with torch.no_grad():
            for batch in BatchStream(data, batch_size, shuffle=False):
                with autocast(batch.x.device):
                    model(batch.x)
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom
        model.train(was_training)
    return True


def retain_distillation(teacher: torch.nn.Module, forget_classes: Iterable[int], weight: float,
                        temperature: float = 2.0):
    """Cross-entropy on retained data, mixed with distillation from the original with the forgotten classes masked.

    Repairing on a small retain subset with labels alone re-learns the kept classes from a few thousand
    images and loses what the original knew from all of them. The original's outputs, with the forgotten
    classes' logits removed, are almost exactly the retrained model's on kept-class inputs (full Fashion-MNIST,
    resnet8: 94.1 % vs retrain's 94.3 % on kept test classes), so pulling toward them restores that knowledge
    without pulling toward the forgotten classes. ``weight`` 0 is plain cross-entropy. Reads only the batch
    it is given (the retain subset), so zero-glance methods stay zero-glance.
    """
    masked = sorted(set(int(c) for c in forget_classes))

    def loss(model: torch.nn.Module, batch) -> torch.Tensor:
        logits = model(batch.x).float()
        ce = F.cross_entropy(logits, batch.y)
        if weight <= 0:
            return ce
        with torch.no_grad():
            target = teacher(batch.x).float()
            target[:, masked] = float("-inf")
            target = F.softmax(target / temperature, 1)
        kd = F.kl_div(F.log_softmax(logits / temperature, 1), target, reduction="batchmean") * temperature ** 2
        return (1 - weight) * ce + weight * kd

    return loss
