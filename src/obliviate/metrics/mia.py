"""Membership-inference attacks, each named by what it is.

Code bases report "MIA" for at least four different attacks with different training sets, features
and read-outs, so the numbers are not comparable across papers. Each function here is one attack,
with the source it follows and where obliviate departs from it (see ``docs/metrics.md``):

* ``mia_loss_lr``: the NeurIPS 2023 unlearning challenge kit — logistic regression on the per-sample
  loss, forget (member) vs unseen (non-member), balanced, cross-validated accuracy. 0.5 = cannot tell.
* ``mia_entropy``: Bad Teacher / SSD — logistic regression (class-balanced) on output entropy, trained
  on retain (member) vs test (non-member), then applied to the forget set; fraction predicted member.
* ``mia_svc_efficacy``: SalUn — RBF SVC (C = 3, gamma = "auto") on the true-class confidence, trained on
  retain vs test; "MIA-efficacy" = fraction of the forget set predicted non-member.
* ``mia_loss_threshold``: Yeom et al. 2018 — member iff loss < mean training (retain) loss; fraction of
  the forget set predicted member.

Every attack subsamples each side to at most ``max_per_side`` samples (seeded) so that it stays fast on
CIFAR-sized sets; with fewer than ``MIN_PER_SIDE`` samples on a side the attack is undefined (NaN).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.dataset import ArrayData
from .outputs import entropy, per_sample_loss, softmax_outputs, subsample, true_class_confidence

MIN_PER_SIDE = 5
MAX_PER_SIDE = 5000


def _too_small(*sets: ArrayData | None) -> bool:
    return any(s is None or len(s) < MIN_PER_SIDE for s in sets)


def mia_loss_lr(model: torch.nn.Module, forget: ArrayData, unseen: ArrayData | None, *, n_splits: int = 10,
                max_per_side: int = MAX_PER_SIDE, seed: int = 0) -> float:
    """NeurIPS 2023 kit attack: mean cross-validated accuracy of a logistic regression on the loss.

    Members are forget samples, non-members ``unseen`` samples (the test split; for a class request
    obliviate passes the test samples *of the forgotten classes*, as SCRUB does, so the attack tests
    membership and not class). The larger side is subsampled to the smaller (the kit cuts the forget
    losses to the test count). Cross-validation is the kit's ``StratifiedShuffleSplit(n_splits=10)``
    (10 random 90/10 splits, not K-fold; at least 2 test samples, one a side, on tiny sets). 0.5 means the
    forget set looks like unseen data.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    if _too_small(forget, unseen):
        return float("nan")
    rng = np.random.default_rng(seed)
    n = min(len(forget), len(unseen), max_per_side)
    f_loss = per_sample_loss(model, subsample(forget, n, rng))
    u_loss = per_sample_loss(model, subsample(unseen, n, rng))
    x = np.concatenate([u_loss, f_loss]).reshape(-1, 1)
    y = np.concatenate([np.zeros(len(u_loss)), np.ones(len(f_loss))])
    # the kit's 10 % test share, but never fewer than one sample of each side: sklearn refuses a 1-sample
    # test split (5 + 5 samples), and for 20+ samples this is exactly its own ceil(0.1 * n)
    cv = StratifiedShuffleSplit(n_splits=n_splits, test_size=max(2, math.ceil(0.1 * len(y))), random_state=seed)
    return float(np.mean(cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")))


def mia_entropy(model: torch.nn.Module, retain: ArrayData, unseen: ArrayData | None, forget: ArrayData, *,
                max_per_side: int = MAX_PER_SIDE, seed: int = 0) -> float:
    """Bad Teacher / SSD attack: fraction of the forget set that an entropy classifier calls member.

    A logistic regression with ``class_weight="balanced"`` is fit on the output entropy of retain
    samples (label 1) and unseen samples (label 0), then predicts the forget samples. Retain and unseen
    are each capped at ``max_per_side`` (the authors use the full loaders; the class weighting makes the
    fit insensitive to the ratio). A retrained model gives roughly the unseen data's member rate.
    """
    from sklearn.linear_model import LogisticRegression

    if _too_small(retain, unseen, forget):
        return float("nan")
    rng = np.random.default_rng(seed)
    h_r = entropy(softmax_outputs(model, subsample(retain, max_per_side, rng))).numpy()
    h_u = entropy(softmax_outputs(model, subsample(unseen, max_per_side, rng))).numpy()
    h_f = entropy(softmax_outputs(model, subsample(forget, max_per_side, rng))).numpy()
    clf = LogisticRegression(class_weight="balanced")
    clf.fit(np.concatenate([h_r, h_u]).reshape(-1, 1), np.concatenate([np.ones(len(h_r)), np.zeros(len(h_u))]))
    return float(clf.predict(h_f.reshape(-1, 1)).mean())


def mia_svc_efficacy(model: torch.nn.Module, retain: ArrayData, unseen: ArrayData | None, forget: ArrayData, *,
                     max_per_side: int = MAX_PER_SIDE, seed: int = 0) -> float:
    """SalUn's MIA-efficacy: fraction of the forget set that an SVC on p(y|x) calls *non*-member.

    ``SVC(C=3, gamma="auto", kernel="rbf")`` is fit on the true-class confidence of a retain sample as
    large as the unseen set (label 1; SalUn takes the first ``len(test)`` retain samples, obliviate a
    seeded random draw) and the unseen set (label 0); when the retain set is the smaller one, the
    unseen side is cut to its size instead (an unweighted SVC on unbalanced sides predicts the majority).
    Higher = more of D_f looks unseen; the original model scores low, the retrained one near the unseen data's
    non-member rate.
    """
    from sklearn.svm import SVC

    if _too_small(retain, unseen, forget):
        return float("nan")
    rng = np.random.default_rng(seed)
    n = min(len(retain), len(unseen), max_per_side)
    shadow_in, shadow_out = subsample(retain, n, rng), subsample(unseen, n, rng)
    target = subsample(forget, max_per_side, rng)
    c_in = true_class_confidence(softmax_outputs(model, shadow_in), shadow_in.y).numpy()
    c_out = true_class_confidence(softmax_outputs(model, shadow_out), shadow_out.y).numpy()
    c_f = true_class_confidence(softmax_outputs(model, target), target.y).numpy()
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(np.concatenate([c_in, c_out]).reshape(-1, 1), np.concatenate([np.ones(len(c_in)), np.zeros(len(c_out))]))
    return float(1.0 - clf.predict(c_f.reshape(-1, 1)).mean())


def mia_loss_threshold(model: torch.nn.Module, retain: ArrayData, forget: ArrayData, *,
                       max_per_side: int = MAX_PER_SIDE, seed: int = 0) -> float:
    """Yeom et al. (2018) loss-threshold attack: fraction of D_f whose loss is below the mean retain loss.

    No learned attack model: the threshold is the average training loss, which the attacker is assumed
    to know. The original model marks most of D_f member; a model that never saw D_f marks about as
    many as it would of unseen data.
    """
    if _too_small(retain, forget):
        return float("nan")
    rng = np.random.default_rng(seed)
    tau = per_sample_loss(model, subsample(retain, max_per_side, rng)).mean()
    return float((per_sample_loss(model, subsample(forget, max_per_side, rng)) < tau).mean())


MIA_ATTACKS = ("mia_loss_lr", "mia_entropy", "mia_svc_efficacy", "mia_loss_threshold")


def all_attacks(model: torch.nn.Module, forget: ArrayData, retain: ArrayData, unseen_same_classes: ArrayData | None,
                unseen_retained: ArrayData | None, *, max_per_side: int = MAX_PER_SIDE,
                seed: int = 0) -> dict[str, float]:
    """Run the four attacks with obliviate's choice of non-member sets (see each function)."""
    return {
        "mia_loss_lr": mia_loss_lr(model, forget, unseen_same_classes, max_per_side=max_per_side, seed=seed),
        "mia_entropy": mia_entropy(model, retain, unseen_retained, forget, max_per_side=max_per_side, seed=seed),
        "mia_svc_efficacy": mia_svc_efficacy(model, retain, unseen_retained, forget, max_per_side=max_per_side,
                                             seed=seed),
        "mia_loss_threshold": mia_loss_threshold(model, retain, forget, max_per_side=max_per_side, seed=seed),
    }
