"""UNSIR (Tarun et al., IEEE TNNLS 2023): zero-glance class forgetting with error-maximising noise.

1. Noise: per forgotten class c, a block of inputs the frozen original model finds least like c
   (``common.error_maximising_noise``), labelled c.
2. Impair: one epoch over noise ∪ D_sub — fitting c onto inputs built to maximise the loss for c
   takes large steps that wreck the weights class c relies on.
3. Repair: epochs on D_sub alone, to restore what the impair step damaged on the other classes — by
   default with a decaying lr and distillation from the original with the forgotten logits masked
   (obliviate's addition, measured below); then BatchNorm statistics are re-estimated on D_sub (the noise
   would otherwise stay in them).

Only D_sub (a retain subset) and the class labels are read; never a forget sample.

The noise is not what forgets here (issue 27, measured 2026-12-04 on the digits fixture model, class 3,
seeds 0–1, forget test accuracy with the error-maximising noise vs the same noise set to all zeros):
defaults 0.00/0.00 vs 0.00/0.00; without repair distillation 0.00/0.00 vs 0.03/0.00; impair only (no repair)
0.76/0.70 vs 0.70/0.57; impair only at Adam 1e-2 0.00/0.03 vs 0.00/0.00. Impairing on *any* inputs labelled c
next to D_sub, then repairing on D_sub without c (and the masked teacher), removes c; the optimised noise
adds nothing measurable on this model. Kept as the cited method; no test claims the noise matters.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..data.dataset import concat
from ..models import Classifier
from ..params import OPTIMIZERS, param
from ..training.loop import OptimConfig, fine_tune
from .base import RETAIN_SUBSET, Method, MethodContext, register
from .common import error_maximising_noise, recalibrate_batchnorm, retain_distillation


def noise_for(ctx, p, salt: int = 0x5EED):
    """The forgotten classes' noise blocks, from θ₀ in eval mode (or ctx.model in train mode, the notebook's way)."""
    model = ctx.model if p.noise_train_mode else ctx.original
    return error_maximising_noise(model, ctx.forget_classes, tuple(ctx.model.spec.input_shape), n=p.noise_n,
                                  steps=p.noise_steps, lr=p.noise_lr, lam=p.noise_lam, device=ctx.device,
                                  generator=ctx.generator(salt), train_mode=p.noise_train_mode,
                                  space=p.noise_space)


@register
class UNSIR(Method):
    name = "unsir"
    summary = "UNSIR: error-maximising noise per class, impair + repair (zero-glance; reads D_sub only; classes only)"
    needs = frozenset({RETAIN_SUBSET})
    zero_glance = True
    request_kinds = frozenset({"class"})

    @dataclass
    class Params:
        """Noise values are the notebook's (verified); the rest was chosen by measurement on the small CNN.

        Measured (digits fixture model; Fashion-MNIST 300/class slice; classes 3 and {1, 7}; seeds 0, 1):
        * the noise is drawn N(0, 1) in the model's *normalised* space (``noise_space``), the scale the
          notebook's noise had (its data were normalised outside the model). N(0, 1) in [0, 1] input
          space is ~3x larger after normalisation and wrecked BatchNorm: retain 0.17–0.65 on digits.
        * the impair batches mix noise with real data, so BatchNorm running statistics absorb the noise;
          a 1-epoch repair (5 batches on digits) cannot wash that out. Much of the "forgetting" at Adam
          1e-3 was this artefact: after re-estimating the statistics the class came back (0.78–0.91).
          ``recalibrate_bn`` re-estimates them on D_sub after repair (an addition, off in ``notebook``).
        * with both, impair Adam 1e-2 for 1 epoch and repair Adam 3e-3 for 3 epochs forgot the class(es)
          (train and test forget <= 0.03) with retain within 3 points of the original on both sets
          (digits 0.998 → 0.97–0.99; Fashion-MNIST retain unchanged or higher). Impair 2e-3–5e-3 left
          the class at 0.1–0.9; 2e-2 forgot it but cost 5–40 points of retain accuracy.
        * full Fashion-MNIST, resnet8 width 16, D_sub 1,000/class, seed-0 original (2026-11-29, one run each;
          test accuracy on the kept classes; retrain 94.3 / 95.6 for class 0 / classes 0+2; the original with
          the forgotten logits masked 94.1 / 95.5): the old recipe (impair 1e-2, 6 constant repair epochs) 92.2;
          cosine repair 92.5; + impair 5e-3 93.3; + repair distillation from the masked original
          (``repair_distill`` 0.5) 93.7 / 95.3 — 0.6 / 0.35 points below retrain, forget 0.0 % on train and
          test. Distillation 0.9 gave the same; 4 repair epochs the same as 6 (23 vs 33 s), so 4.
          D_sub 500 / 250 per class: 93.2 / 92.5 (class 0). Seeds 0–2 with that recipe (benchmarks/README.md):
          −0.4 ± 0.3 / −0.4 ± 0.3 points vs retrain at 6–7× its speed; small-CNN slice −0.9 / −2.3.
        * the small-CNN slice (D_sub 200/class, seeds 0–2, 2026-11-29): 4 repair epochs there are ~30 steps.
          ``repair_min_steps`` 48 (~6 epochs there; nothing changes at full data, 144 steps) −2.2 → −1.5 points
          (classes 0+2); with impair Adam 2e-3 −1.1 (class 0: −1.0 → −0.4), forget 0.0 %. At full data (seed 0)
          impair 2e-3 kept forget at 0.0 % and gave 93.8 / 95.4 against 5e-3's 93.7 / 95.1, so 2e-3.
          Seeds 0–2 with the current defaults: full data −0.2 ± 0.4 / −0.1 ± 0.3 points at 7–8× retrain;
          D_sub 250 per class −0.6 ± 0.3 at 22× (benchmarks/README.md).
        ``preset=paper`` restores the notebook's Adam 0.02 / 0.01 and one repair epoch (forgets, retain
        0.70–0.89 on these models); ``preset=notebook`` also its train-mode noise optimisation and no
        recalibration (its noise is N(0, 1) where its network's first layer sees it: the notebook normalised the
        data outside the model, so that is obliviate's normalised space, not [0, 1] input space).
        """

        noise_n: int = param(256, ge=1)
        noise_steps: int = param(40, ge=0)
        noise_lr: float = param(0.1, gt=0)
        noise_lam: float = param(0.1, ge=0)
        noise_train_mode: bool = False  # True: the notebook's BatchNorm-drifting train mode
        noise_copies: int = param(1, ge=1)  # repeat each noise block in the impair set (notebook-style copies)
        impair_lr: float = param(2e-3, gt=0)
        repair_lr: float = param(3e-3, gt=0)
        impair_epochs: float = param(1.0, gt=0)
        repair_epochs: float = param(4.0, ge=0)
        repair_min_steps: int = param(48, ge=0)  # at least this many repair steps, however small D_sub is
        repair_distill: float = param(0.5, ge=0, le=1)  # weight of distillation from θ₀ (forgotten logits masked)
        distill_temperature: float = param(2.0, gt=0)
        repair_schedule: str = param("cosine", choices=("constant", "cosine"))  # repair lr: flat, or decayed to 0
        batch_size: int = param(256, ge=1)
        optimizer: str = param("adam", choices=OPTIMIZERS)
        augment: bool = False  # the notebook impairs and repairs without augmentation
        recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on D_sub after repair (not in the notebook)
        # N(0,1) noise as the model's first layer sees it (the notebook's scale)
        noise_space: str = param("normalised", choices=("normalised", "input"))

    _published = {"impair_lr": 0.02, "repair_lr": 0.01, "repair_epochs": 1.0, "repair_schedule": "constant",
                  "repair_distill": 0.0, "repair_min_steps": 0}
    presets = {"paper": _published,
               "notebook": {**_published, "noise_train_mode": True, "recalibrate_bn": False}}

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        noise = noise_for(ctx, p)
        ctx.info["noise"] = {"classes": list(ctx.forget_classes), "per_class": p.noise_n,
                             "labels": sorted(set(noise.y.tolist()))}
        sub = ctx.retain_subset
        augment = ctx.augment if p.augment else "none"
        impair_set = concat(*([noise] * max(1, p.noise_copies)), sub)
        fine_tune(ctx.model, impair_set, epochs=p.impair_epochs, batch_size=p.batch_size,
                  optim=OptimConfig(p.optimizer, p.impair_lr, 0.9, 0.0, "constant"), augment=augment,
                  seed=ctx.seed, description="unsir impair")
        repair_loss = retain_distillation(ctx.original, ctx.forget_classes, p.repair_distill, p.distill_temperature)
        fine_tune(ctx.model, sub, repair_loss, epochs=p.repair_epochs, batch_size=p.batch_size,
                  optim=OptimConfig(p.optimizer, p.repair_lr, 0.9, 0.0, p.repair_schedule), augment=augment,
                  seed=ctx.seed + 1, description="unsir repair", min_steps=p.repair_min_steps)
        if p.recalibrate_bn:
            recalibrate_batchnorm(ctx.model, sub, p.batch_size)
        return ctx.model
