"""FCALB (Yin et al., JCRD 2024): feature constraint toward a random teacher + adaptive loss balance.

Two tasks trained together on the model θ:

* forget: on forget inputs, pull θ's penultimate features toward those of a randomly initialised
  model of the same architecture — a model that, like the retrained one, never saw D_f;
* recover: cross-entropy on a small retain subset D_sub, so the other classes stay.

Their weights are learnt rather than fixed (default: homoscedastic uncertainty, Kendall et al. 2018),
which is the paper's stated guard against "over-forgetting" and "over-recovering".

The paper's text was not reachable; the idea (random teacher, feature constraint, adaptive balance)
is from its abstract (verified). The concrete choices below are inferred and each is a parameter.
Two registered names share this code because ``zero_glance`` is a class attribute:

* ``fcalb`` — zero-glance: forget inputs are UNSIR's error-maximising noise of the forgotten classes,
  so no forget sample is ever read (obliviate's extension; class requests only);
* ``fcalb-samples`` — reads the real forget samples as forget inputs (any request kind).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.pipeline import BatchStream
from ..errors import ObliviateError
from ..models import build_model
from ..training.loop import OptimConfig, fine_tune
from .base import FORGET, RETAIN_SUBSET, Method, register
from .common import error_maximising_noise, recalibrate_batchnorm

BALANCES = ("uncertainty", "dwa", "fixed")
FORGET_LOSSES = ("mse", "kl")


@dataclass
class FCALBParams:
    """Defaults measured on the small CNN (digits fixture; Fashion-MNIST 300/class slice; classes 3, {1, 7}).

    Adam 3e-3 for 3 epochs over D_sub: forget (train and test) 0.00 on both sets, retain within 1 point
    of the original on digits and 2–4 points *above* it on the under-trained Fashion-MNIST model. Adam
    1e-3 left the class at 0.16–0.35 on digits after 3 epochs (10 epochs were needed). ``dwa`` gave the
    same results; ``kl`` forgot less on digits (0.05–0.11). Zero-glance works: features pulled toward
    the random teacher on UNSIR noise (inputs the model finds least like c) carried over to real class-c
    images in every run measured; this is obliviate's extension, not the paper's.

    ``forget_loss=mse``: squared distance of L2-normalised penultimate features (inferred; ``kl`` is
    KL on softmax outputs at ``temperature``, as the stochastic-teacher method arXiv 2308.14322 does).
    ``balance=uncertainty``: L = Σ exp(−s_i)·L_i + s_i, s_i learnable from 0, trained at
    ``balance_lr`` (inferred: at the model's lr the weights would hardly move in a few dozen steps);
    ``dwa``: Dynamic Weight Average, weights from the ratio of each loss's last two epoch means at
    ``dwa_temperature`` (first two epochs equal weights, as in DWA); ``fixed``: ``w_forget``/``w_recover``.
    Noise settings are UNSIR's (used by the zero-glance variant only).
    """

    epochs: float = 3.0
    lr: float = 3e-3
    optimizer: str = "adam"
    batch_size: int = 128
    forget_batch_size: int = 128
    forget_loss: str = "mse"
    temperature: float = 1.0
    balance: str = "uncertainty"
    balance_lr: float = 0.01
    dwa_temperature: float = 2.0
    w_forget: float = 1.0
    w_recover: float = 1.0
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on D_sub at the end (forget inputs drift them)
    augment: bool = False
    noise_n: int = 256
    noise_steps: int = 40
    noise_lr: float = 0.1
    noise_lam: float = 0.1
    noise_space: str = "normalised"


class _FCALB(Method):
    Params = FCALBParams

    def forget_inputs(self, ctx, p) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, ctx, p):
        if p.balance not in BALANCES:
            raise ObliviateError(f"{self.name}: balance must be one of {', '.join(BALANCES)}, got {p.balance!r}")
        if p.forget_loss not in FORGET_LOSSES:
            raise ObliviateError(f"{self.name}: forget_loss must be one of {', '.join(FORGET_LOSSES)}, "
                                 f"got {p.forget_loss!r}")
        if p.temperature <= 0 or p.dwa_temperature <= 0:
            raise ObliviateError(f"{self.name}: temperatures must be > 0")
        forget_x = self.forget_inputs(ctx, p)
        sub = ctx.retain_subset
        model = ctx.model

        # the teacher: same architecture, fresh random weights drawn from the unlearning seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed * 7_919 + 0xFCA1B)
            teacher = build_model(model.spec)
        teacher = teacher.to(ctx.device).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)

        log_vars = torch.zeros(2, device=ctx.device, requires_grad=True)  # s_forget, s_recover
        g = ctx.generator(0xFB)
        steps_per_epoch = len(BatchStream(sub, p.batch_size))
        history: list[list[float]] = [[], []]  # per-step losses, for DWA's epoch means
        dwa_w = [1.0, 1.0]
        last: dict = {}

        def feature_loss(xf: torch.Tensor) -> torch.Tensor:
            if p.forget_loss == "mse":
                with torch.no_grad():
                    target = F.normalize(teacher.features(xf).float(), dim=1)
                return (F.normalize(model.features(xf).float(), dim=1) - target).pow(2).sum(1).mean()
            with torch.no_grad():
                target = F.softmax(teacher(xf).float() / p.temperature, 1)
            log_p = F.log_softmax(model(xf).float() / p.temperature, 1)
            return F.kl_div(log_p, target, reduction="batchmean") * p.temperature ** 2

        def loss_fn(m, batch):
            idx = torch.randint(0, len(forget_x), (min(p.forget_batch_size, len(forget_x)),), device=ctx.device,
                                generator=g)
            lf = feature_loss(forget_x[idx])
            lr_ = F.cross_entropy(m(batch.x).float(), batch.y)
            losses = (lf, lr_)
            if p.balance == "uncertainty":
                total = sum(torch.exp(-log_vars[i]) * losses[i] + log_vars[i] for i in range(2))
                weights = torch.exp(-log_vars).detach().tolist()
            elif p.balance == "dwa":
                k = len(history[0])
                if k and k % steps_per_epoch == 0 and k >= 2 * steps_per_epoch:  # epoch boundary: update
                    ratios = []
                    for h in history:
                        now = sum(h[-steps_per_epoch:]) / steps_per_epoch
                        before = sum(h[-2 * steps_per_epoch:-steps_per_epoch]) / steps_per_epoch
                        ratios.append(now / max(before, 1e-12))
                    e = [math.exp(r / p.dwa_temperature) for r in ratios]
                    dwa_w[:] = [2 * x / sum(e) for x in e]
                total = dwa_w[0] * lf + dwa_w[1] * lr_
                weights = list(dwa_w)
            else:
                total = p.w_forget * lf + p.w_recover * lr_
                weights = [p.w_forget, p.w_recover]
            history[0].append(lf.item())
            history[1].append(lr_.item())
            last.update(weights=weights)
            return total

        params = [{"params": list(model.parameters())}]
        if p.balance == "uncertainty":
            params.append({"params": [log_vars], "lr": p.balance_lr, "weight_decay": 0.0})
        fine_tune(model, sub, loss_fn, epochs=p.epochs, batch_size=p.batch_size,
                  optim=OptimConfig(p.optimizer, p.lr, 0.9, 0.0, "constant"),
                  augment=ctx.augment if p.augment else "none", seed=ctx.seed, description=self.name, params=params)
        if p.recalibrate_bn:
            recalibrate_batchnorm(model, sub, 256)
        ctx.info.update({
            "forget_inputs": len(forget_x), "final_weights": last.get("weights"),
            "final_losses": {"forget": history[0][-1] if history[0] else None,
                             "recover": history[1][-1] if history[1] else None},
        })
        return model


@register
class FCALB(_FCALB):
    name = "fcalb"
    summary = ("FCALB: pull features on UNSIR noise of the forgotten classes toward a random teacher, CE on D_sub, "
               "learnt loss weights (zero-glance; reads D_sub only; classes only)")
    needs = frozenset({RETAIN_SUBSET})
    zero_glance = True
    request_kinds = frozenset({"class"})

    def forget_inputs(self, ctx, p):
        noise = error_maximising_noise(ctx.original, ctx.forget_classes, tuple(ctx.model.spec.input_shape),
                                       n=p.noise_n, steps=p.noise_steps, lr=p.noise_lr, lam=p.noise_lam,
                                       device=ctx.device, generator=ctx.generator(0x5EED), space=p.noise_space)
        ctx.info["noise"] = {"classes": list(ctx.forget_classes), "per_class": p.noise_n,
                             "labels": sorted(set(noise.y.tolist()))}
        return noise.x


@register
class FCALBSamples(_FCALB):
    name = "fcalb-samples"
    summary = ("FCALB on the real forget samples: features toward a random teacher, CE on D_sub, learnt loss "
               "weights (reads D_f and D_sub)")
    needs = frozenset({FORGET, RETAIN_SUBSET})

    def forget_inputs(self, ctx, p):
        return ctx.forget.float_inputs()
