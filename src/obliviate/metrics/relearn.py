"""Relearn time and the anamnesis index (AIN, Chundawat et al., "Zero-shot machine unlearning").

Idea: knowledge that was only hidden comes back after a few steps of fine-tuning on D_f; knowledge
that was removed takes about as long to relearn as for a model that never saw D_f. Relearn time is the
number of optimiser steps of fine-tuning on D_f (fixed learning rate and batch size, constant
schedule) until forget accuracy is back within ``alpha`` (absolute) of the original model's;
AIN = steps(unlearned) / steps(retrained), ideally close to 1. The fine-tuning runs through the shared
training loop (``run_epochs``) on a copy; the model passed in is not modified.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import ArrayData
from ..data.pipeline import BatchStream
from ..errors import ObliviateError
from ..training.loop import OptimConfig, cross_entropy, make_optimizer, run_epochs
from .accuracy import accuracy
from .outputs import subsample


@dataclass
class RelearnResult:
    steps: int  # optimiser steps until forget accuracy >= goal (max_steps when capped)
    capped: bool  # True: the goal was not reached within max_steps
    goal: float  # reference forget accuracy minus alpha
    final_acc: float  # forget accuracy (on the probe) when it stopped


class _Reached(Exception):
    def __init__(self, step: int):
        self.step = step


def relearn_time(model: torch.nn.Module, forget: ArrayData, reference: torch.nn.Module | float, *,
                 alpha: float = 0.1, lr: float = 1e-3, optimizer: str = "adam", batch_size: int = 64,
                 max_steps: int = 200, probe_size: int = 1000, seed: int = 0) -> RelearnResult:
    """Fine-tune a copy of ``model`` on ``forget`` and count steps until forget accuracy >= ref − alpha.

    ``reference`` is the original model (its accuracy on the same probe is the target) or that
    accuracy as a number. Accuracy is checked after every step on a fixed, seeded probe of at most
    ``probe_size`` forget samples (the whole set when smaller) so the check stays cheap on large D_f.
    Step 0 counts: a model already within ``alpha`` needs 0 steps. Defaults (Adam, lr 1e-3, batch 64,
    no weight decay, constant rate, cap 200 steps) are obliviate's choice; measured on digits (MLP and
    small CNN, 150-sample random forget set) a randomly initialised model needed 15–93 steps and the
    original 0, so the cap leaves room above a from-scratch relearn on small sets.
    """
    if forget is None or len(forget) == 0:
        raise ObliviateError("relearn time needs a non-empty forget set")
    if max_steps < 1 or batch_size < 1 or lr <= 0:
        raise ObliviateError("relearn needs max_steps >= 1, batch_size >= 1 and lr > 0")
    device = next(model.parameters()).device
    work = copy.deepcopy(model).to(device)
    for p in work.parameters():
        p.requires_grad_(True)
    data = forget.to(device)
    probe = subsample(data, probe_size, np.random.default_rng(seed))
    ref_acc = float(reference) if isinstance(reference, (int, float)) else accuracy(reference, probe)
    goal = ref_acc - alpha
    acc = accuracy(work, probe)
    if acc >= goal:
        return RelearnResult(0, False, goal, acc)
    stream = BatchStream(data, min(batch_size, len(data)), shuffle=True, seed=seed)
    opt = make_optimizer(work.parameters(), OptimConfig(optimizer=optimizer, lr=lr, momentum=0.0,
                                                       weight_decay=0.0, schedule="constant"))

    def on_step(step: int, batch) -> None:
        if accuracy(work, probe) >= goal:
            raise _Reached(step)

    try:
        with torch.enable_grad():
            run_epochs(work, stream, cross_entropy(), opt, None, epochs=math.ceil(max_steps / len(stream)),
                       on_step=on_step, description="relearn", max_steps=max_steps)
    except _Reached as done:
        return RelearnResult(done.step, False, goal, accuracy(work, probe))
    return RelearnResult(max_steps, True, goal, accuracy(work, probe))


def anamnesis_index(unlearned: RelearnResult, retrained: RelearnResult) -> float:
    """AIN = steps(unlearned) / steps(retrained); NaN when the retrained model needs 0 steps (it is
    already within alpha of the original, as after most random-sample requests: AIN is undefined)."""
    if retrained.steps == 0:
        return float("nan")
    return unlearned.steps / retrained.steps
