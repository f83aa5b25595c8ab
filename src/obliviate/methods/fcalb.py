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
from ..models import Classifier
from ..params import OPTIMIZERS, param
from ..training.loop import OptimConfig, fine_tune
from .base import FORGET, RETAIN_SUBSET, Method, MethodContext, register
from .common import FORGET_BN, batchnorm_frozen, error_maximising_noise, recalibrate_batchnorm, retain_distillation

BALANCES = ("uncertainty", "dwa", "gradnorm", "fixed")
FORGET_LOSSES = ("mse", "kl")


class Balance:
    """Weights of the (forget, recover) losses; ``total`` returns the loss to minimise this step."""

    def __init__(self, p, model, device):
        self.p, self.weights, self.trace = p, [1.0, 1.0], []
        self.values: list[float] = []  # this step's loss values, read once (one device sync) for every scheme

    def extra_params(self) -> list[dict]:
        return []

    def combine(self, losses) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def total(self, losses) -> torch.Tensor:
        self.values = [float(loss.item()) for loss in losses]
        out = self.combine(losses)
        self.trace.append([round(float(w), 5) for w in self.weights])
        return out


class FixedBalance(Balance):
    def combine(self, losses):
        self.weights = [self.p.w_forget, self.p.w_recover]
        return self.p.w_forget * losses[0] + self.p.w_recover * losses[1]


class UncertaintyBalance(Balance):
    """Kendall et al. 2018: L = Σ exp(−s_i)·L_i + s_i, s_i = log σ_i² learnt (from 0) at ``balance_lr``.

    Departure: Kendall's classification form is exp(−s)·L + ½s (regression: ½exp(−s)·L + ½s). The full
    s here settles each weight at 1/L_i instead of 1/(2L_i): the same ratio between the two tasks (the
    larger loss gets the smaller weight), twice the overall scale, which Adam's step size absorbs.
    tests/test_loss_balance.py pins the 1/L_i equilibrium."""

    def __init__(self, p, model, device):
        super().__init__(p, model, device)
        self.log_vars = torch.zeros(2, device=device, requires_grad=True)

    def extra_params(self):
        return [{"params": [self.log_vars], "lr": self.p.balance_lr, "weight_decay": 0.0}]

    def combine(self, losses):
        self.weights = torch.exp(-self.log_vars).detach().tolist()
        return sum(torch.exp(-self.log_vars[i]) * losses[i] + self.log_vars[i] for i in range(2))


class DWABalance(Balance):
    """Dynamic Weight Average (Liu et al. 2019): w_i ∝ exp(r_i / T), r_i = ratio of the last two epoch
    means of L_i (the task whose loss falls slower gets more weight); equal weights for the first two
    epochs. As cited, with epoch means over ``steps_per_epoch`` optimiser steps."""

    def __init__(self, p, model, device, steps_per_epoch: int = 1):
        super().__init__(p, model, device)
        self.steps, self.history = steps_per_epoch, ([], [])

    def combine(self, losses):
        k, n = len(self.history[0]), self.steps
        if k and k % n == 0 and k >= 2 * n:
            ratios = [(sum(h[-n:]) / n) / max(sum(h[-2 * n:-n]) / n, 1e-12) for h in self.history]
            e = [math.exp(r / self.p.dwa_temperature) for r in ratios]
            self.weights = [2 * x / sum(e) for x in e]
        for h, value in zip(self.history, self.values):
            h.append(value)
        return self.weights[0] * losses[0] + self.weights[1] * losses[1]


class GradNormBalance(Balance):
    """GradNorm (Chen et al. 2018): learn w_i so that each weighted task's gradient norm on the last shared
    layer W tracks mean-norm × (relative inverse training rate)^α. A task whose loss fell less (relative to
    its first value) gets a larger gradient share. The weights take their own Adam step (``balance_lr``) on
    Σ|G_i − G_i*| each step and are renormalised to sum to 2; the model is updated with Σ w_i·L_i.

    Departure: Chen et al. update θ with w(t) and only then step the weights to w(t+1); here the weights
    step first and this step's model loss already uses w(t+1) (one backward graph serves both; with
    ``balance_lr`` 0.01 the two differ by one small weight step). Direction (tests/test_loss_balance.py):
    the task whose loss fell less since its first value, or whose gradient is smaller, is up-weighted."""

    def __init__(self, p, model, device):
        super().__init__(p, model, device)
        self.w = torch.ones(2, device=device, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=p.balance_lr)
        self.shared = [q for q in model.body.parameters() if q.dim() > 1][-1]
        self.first: list[float] | None = None

    def combine(self, losses):
        if self.first is None:
            self.first = [max(v, 1e-12) for v in self.values]
        norms = torch.stack([torch.autograd.grad(self.w[i] * losses[i], self.shared, retain_graph=True,
                                                 create_graph=True)[0].norm() for i in range(2)])
        ratios = torch.tensor([self.values[i] / self.first[i] for i in range(2)], device=norms.device)
        target = (norms.mean() * (ratios / ratios.mean()) ** self.p.gradnorm_alpha).detach()
        (grad_w,) = torch.autograd.grad((norms - target).abs().sum(), self.w, retain_graph=True)
        self.opt.zero_grad(set_to_none=True)
        self.w.grad = grad_w
        self.opt.step()
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(2.0 / self.w.sum())
        self.weights = self.w.detach().tolist()
        return self.weights[0] * losses[0] + self.weights[1] * losses[1]


def make_balance(p, model, device, steps_per_epoch: int) -> Balance:
    if p.balance == "dwa":
        return DWABalance(p, model, device, steps_per_epoch)
    cls = {"uncertainty": UncertaintyBalance, "gradnorm": GradNormBalance, "fixed": FixedBalance}[p.balance]
    return cls(p, model, device)


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
    ``gradnorm``: GradNorm (α = ``gradnorm_alpha``) on the last shared convolution. Noise settings are
    UNSIR's (used by the zero-glance variant only).

    Full Fashion-MNIST, resnet8 width 16, D_sub 1,000 per class, seed 0 (2026-11-29, one run on 2 CPU
    cores; old recipe: constant lr, plain cross-entropy): kept-class test accuracy vs ``retrain`` — class 0:
    uncertainty −2.6, GradNorm −2.1,
    DWA −2.3 points; classes 0+2: −3.3, −3.8, −3.1; forget 0.0 % for all; 26-30 s vs retrain's 171-188 s.
    No scheme is better by more than one seed's noise, so the default stays ``uncertainty`` (the cheapest
    with learnt weights besides DWA; GradNorm costs ~12 % more for its second-order step).
    What closed the gap to ``retrain`` (same model, seed-0 original, one run each, kept-class test accuracy,
    retrain 94.3 / 95.6): a cosine-decayed lr (``schedule``) 91.6 → 93.3 (class 0), and a recover loss that
    mixes cross-entropy with distillation from the original with the forgotten logits masked (``distill``,
    ``methods.common.retain_distillation``): 0.5 → 93.8 / 95.4, 0.9 → 94.0 / 95.5 (the default; 0.3 / 0.1
    points below retrain); forget 0.0 %. 2 epochs instead of 3: 93.7; D_sub 500 / 250 per class: 93.6 / 93.3.
    Seeds 0–2 with these defaults (benchmarks/README.md): −0.2 ± 0.2 / −0.0 ± 0.3 points vs retrain at 6–7× its
    speed; small-CNN slice −0.4 / −1.0.
    ``min_steps``: 3 epochs over a small D_sub are few steps (small-CNN slice, D_sub 200/class: ~42); at least
    64 (5 epochs there) took the slice from −0.4 / −1.3 to −0.3 / −0.9 points (seeds 0–2, 2026-11-29; in the
    benchmark study −0.4 / −1.0 → −0.5 / −0.8, at 9–12 s instead of ~6) and changes nothing at full data
    (3 epochs over 9,000 are 211 steps).
    The two belong together: on digits (D_sub 40 per class) the cosine schedule with plain cross-entropy
    left the class at 0.38–0.68 test accuracy, with distillation 0.9 at 0.00–0.08 — the masked teacher
    lowers p(c) on every retained input, which finishes the forgetting the feature constraint starts.
    """

    epochs: float = param(3.0, gt=0)
    min_steps: int = param(64, ge=0)  # at least this many steps, however small D_sub is
    lr: float = param(3e-3, gt=0)
    optimizer: str = param("adam", choices=OPTIMIZERS)
    distill: float = param(0.9, ge=0, le=1)  # weight of distillation from θ₀ (forgotten logits masked) in recover
    distill_temperature: float = param(2.0, gt=0)
    schedule: str = param("cosine", choices=("constant", "cosine"))  # lr flat, or decayed to 0 over the run
    batch_size: int = param(128, ge=1)
    forget_batch_size: int = param(128, ge=1)
    forget_loss: str = param("mse", choices=FORGET_LOSSES)
    forget_bn: str = param("batch", choices=FORGET_BN)  # BatchNorm on forget inputs: own batch stats or running
    temperature: float = param(1.0, gt=0)
    balance: str = param("uncertainty", choices=BALANCES)
    balance_lr: float = param(0.01, gt=0)
    dwa_temperature: float = param(2.0, gt=0)
    gradnorm_alpha: float = param(1.5, ge=0)
    w_forget: float = param(1.0, ge=0)
    w_recover: float = param(1.0, ge=0)
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on D_sub at the end (forget inputs drift them)
    augment: bool = False
    noise_n: int = param(256, ge=1)
    noise_steps: int = param(40, ge=0)
    noise_lr: float = param(0.1, gt=0)
    noise_lam: float = param(0.1, ge=0)
    noise_space: str = param("normalised", choices=("normalised", "input"))


class _FCALB(Method):
    Params = FCALBParams

    def forget_inputs(self, ctx, p) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, ctx: MethodContext, p: FCALBParams) -> Classifier:
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
            teacher = model.fresh()
        teacher = teacher.to(ctx.device).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)

        balance = make_balance(p, model, ctx.device, len(BatchStream(sub, p.batch_size)))
        g = ctx.generator(0xFB)

        frozen_bn = p.forget_bn == "running" or (p.forget_bn == "auto" and ctx.request.kind != "class")

        def feature_loss(xf: torch.Tensor) -> torch.Tensor:
            if p.forget_loss == "mse":
                with torch.no_grad():
                    target = F.normalize(teacher.features(xf).float(), dim=1)
                return (F.normalize(model.features(xf).float(), dim=1) - target).pow(2).sum(1).mean()
            with torch.no_grad():
                target = F.softmax(teacher(xf).float() / p.temperature, 1)
            log_p = F.log_softmax(model(xf).float() / p.temperature, 1)
            return F.kl_div(log_p, target, reduction="batchmean") * p.temperature ** 2

        recover = retain_distillation(ctx.original, ctx.forget_classes, p.distill, p.distill_temperature)

        def loss_fn(m, batch):
            idx = torch.randint(0, len(forget_x), (min(p.forget_batch_size, len(forget_x)),), device=ctx.device,
                                generator=g)
            with batchnorm_frozen(model, enabled=frozen_bn):
                forget_loss = feature_loss(forget_x[idx])
            losses = (forget_loss, recover(m, batch))
            return balance.total(losses)

        fine_tune(model, sub, loss_fn, epochs=p.epochs, batch_size=p.batch_size,
                  optim=OptimConfig(p.optimizer, p.lr, 0.9, 0.0, p.schedule),
                  augment=ctx.augment if p.augment else "none", seed=ctx.seed, description=self.name,
                  params=[{"params": list(model.parameters())}, *balance.extra_params()], min_steps=p.min_steps)
        if p.recalibrate_bn:
            recalibrate_batchnorm(model, sub, 256)
        ctx.info.update({
            "forget_inputs": len(forget_x), "balance": p.balance, "final_weights": balance.weights,
            "weights_trace": balance.trace[:: max(1, len(balance.trace) // 20)],
            "final_losses": dict(zip(("forget", "recover"), balance.values)) or {"forget": None, "recover": None},
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

    @dataclass
    class Params(FCALBParams):
        """FCALB's defaults, except that for sample requests BatchNorm uses its running statistics on the forget
        batch (``auto``: ``running`` for samples, ``batch`` for classes).

        The forget batch holds only forget samples. In train mode, BatchNorm normalises it with its own
        statistics, which no eval-mode input ever gets, and the forget loss can be met through them alone.
        Full Fashion-MNIST, resnet8, 300 poisoned images, KL, no distillation, 6 epochs, seed 0
        (benchmarks/README.md, 2026-12-04): forget loss 0.002 yet backdoor ASR 98.9 % with ``batch``; 2.0 % with
        ``running`` (retrain 1.3). Digits ``cnn``, 40 poisoned, the preset, seeds 0–2: 36–55 % → 8–13 % (retrain 0).
        Class requests keep ``batch``, as zero-glance ``fcalb`` does: the class results were measured with it, and
        on the 54k resnet8, class 0, seed 0, ``running`` gave 93.5 % kept-class test accuracy against ``batch``'s
        94.0 (retrain 94.1; forget 0 % with both)."""

        forget_bn: str = param("auto", choices=("auto", *FORGET_BN))  # auto: running for sample requests

    #: Deleting poisoned samples (a planted backdoor): pull the *outputs* on them toward the random teacher (KL)
    #: and halve the distillation from the original, which otherwise re-teaches the trigger it still holds.
    #: Full Fashion-MNIST, resnet8, 300 poisoned, seed 0, ``forget_bn=running`` (benchmarks/README.md, 2026-12-04;
    #: ASR / test %, retrain 1.3 / 92.5): defaults 22.6 / 91.1; KL + no distillation + 6 epochs (the slice's
    #: earlier preset) 2.0 / 88.7; KL + distill 0.5 + 3 epochs 2.2 / 91.1. Chosen on those figures; on seed 1,
    #: held out: 2.1 / 89.6 (retrain 1.5 / 92.8), the trigger gone but 3.3 points lost. SalUn: 2.8 / 91.4.
    presets = {"poisoned": {"forget_loss": "kl", "distill": 0.5, "epochs": 3.0}}

    def forget_inputs(self, ctx, p):
        return ctx.forget.float_inputs()
