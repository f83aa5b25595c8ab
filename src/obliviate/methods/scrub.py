"""SCRUB (Kurmanji et al., NeurIPS 2023): a student that disobeys θ₀ on D_f and obeys it on D_r.

The student starts as θ₀ (the teacher, frozen). Each epoch first runs *max-steps* over D_f —
maximise KL(teacher ‖ student) at temperature T, pushing the student away — but only in the first
``msteps`` epochs; then *min-steps* over D_r — minimise γ·CE + α·KL(teacher ‖ student), pulling it
back where it should agree. One optimiser carries its state across all passes; the learning rate
is divided by 10 at each epoch listed in ``lr_decay_epochs`` (the authors' schedule).

KL is the authors' distillation loss: sum over classes, mean over the batch, times T².
Authors' presets (verified in their notebooks): ``large`` — SGD 5e-4, momentum 0.9, wd 5e-4,
γ 0.99, α 0.001, msteps 2, 3 epochs, T 4; ``small`` — Adam 5e-4, wd 0.1, γ 1, α 0.5, msteps 3,
10 epochs, T 2, lr ÷10 after epochs 5, 8, 9; batches 128 (retain) / 32 (forget) (the batch
sizes of the large-scale notebook are inferred). On the small CNN both presets barely move a
forgotten class in their few steps, so the default is the ``small`` recipe with wd 5e-4 at the
authors' Adam lr 5e-4. Measured on the demo's CNN (Fashion-MNIST, 1,000 per class, 8 epochs): class 0
forget 0.00, test-retain 0.869 → 0.813 at lr 5e-4 (0.790 at 1e-3); classes 0+2: 0.873 → 0.745 (0.553 at
1e-3); the ``large`` preset forgot too but fell to 0.44 / 0.13. On large forget sets SCRUB's max-steps
cost retain accuracy here; the msteps/epochs knobs are the place to tune. Tried on the benchmark slice
(1,000 per class, classes 0+2, seeds 0–2, 2026-11-29; test-retain vs retrain, test-forget): defaults −18.9
points / 0 %; msteps 2 −8.2 / 0–0.7 %; forget batch 128 with msteps 5 −7.3 / 0 %; forget batch 128 −2.8 but
8–16 % left; msteps 1 28 % left. Every setting that forgets the classes costs 7+ points here, so the
defaults stay the authors'.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..data.pipeline import BatchStream
from ..errors import ObliviateError
from ..models import Classifier
from ..params import OPTIMIZERS, param
from ..training.loop import OptimConfig, make_optimizer, run_epochs
from .base import FORGET, RETAIN, Method, MethodContext, register
from .common import FORGET_BN, batchnorm_frozen


def distill_kl(student_logits, teacher_logits, t: float):
    """KL(teacher ‖ student) at temperature ``t``: summed over classes, batch mean, scaled by t²."""
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits.float() / t, 1),
                    reduction="batchmean") * t * t


@register
class Scrub(Method):
    name = "scrub"
    summary = "max-steps away from θ₀ on D_f, min-steps toward θ₀ plus CE on D_r (reads D_f and D_r)"
    needs = frozenset({FORGET, RETAIN})

    @dataclass
    class Params:
        epochs: int = param(10, ge=1)
        msteps: int = param(3, ge=0)
        temperature: float = param(2.0, gt=0)
        gamma: float = param(1.0, ge=0)  # weight of CE on D_r
        alpha: float = param(0.5, ge=0)  # weight of KL on D_r
        optimizer: str = param("adam", choices=OPTIMIZERS)
        lr: float = param(5e-4, gt=0)
        momentum: float = param(0.9, ge=0, lt=1)
        weight_decay: float = param(5e-4, ge=0)
        lr_decay_epochs: str = "5,8,9"  # comma list of epochs (1-based) after which lr /= 10; "" = none
        batch_size: int = param(128, ge=1)
        forget_batch_size: int = param(32, ge=1)
        forget_bn: str = param("batch", choices=FORGET_BN)  # max-steps: own batch stats (authors') or running

    presets = {
        "large": {"optimizer": "sgd", "lr": 5e-4, "momentum": 0.9, "weight_decay": 5e-4, "gamma": 0.99,
                  "alpha": 0.001, "msteps": 2, "epochs": 3, "temperature": 4.0, "lr_decay_epochs": "3,5,9"},
        "small": {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.1, "gamma": 1.0, "alpha": 0.5,
                  "msteps": 3, "epochs": 10, "temperature": 2.0, "lr_decay_epochs": "5,8,9"},
    }

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        try:
            decay = sorted({int(e) for e in p.lr_decay_epochs.replace(" ", "").split(",") if e})
        except ValueError as exc:
            raise ObliviateError(f"scrub: lr_decay_epochs={p.lr_decay_epochs!r} is not a comma list of epochs") from exc
        model, teacher, t = ctx.model, ctx.original, p.temperature
        forget = BatchStream(ctx.forget, p.forget_batch_size, augment=ctx.augment, seed=ctx.seed + 1)
        retain = BatchStream(ctx.retain, p.batch_size, augment=ctx.augment, seed=ctx.seed)
        opt = make_optimizer(model.parameters(), OptimConfig(p.optimizer, p.lr, p.momentum, p.weight_decay))

        def maximise(m, batch):
            with batchnorm_frozen(m, enabled=p.forget_bn == "running"):
                return -distill_kl(m(batch.x), teacher(batch.x), t)

        def minimise(m, batch):
            out = m(batch.x)
            return p.gamma * F.cross_entropy(out, batch.y) + p.alpha * distill_kl(out, teacher(batch.x), t)

        for epoch in range(p.epochs):
            lr = p.lr * 0.1 ** sum(epoch + 1 > e for e in decay)  # the authors' sgda_adjust_learning_rate
            for group in opt.param_groups:
                group["lr"] = lr
            if epoch < p.msteps:  # run_epochs(epochs=e+1, start_step=e*len) runs exactly epoch e's shuffle
                run_epochs(model, forget, maximise, opt, epochs=epoch + 1, start_step=epoch * len(forget),
                           description=f"scrub max {epoch + 1}")
            run_epochs(model, retain, minimise, opt, epochs=epoch + 1, start_step=epoch * len(retain),
                       description=f"scrub min {epoch + 1}")
        return model
