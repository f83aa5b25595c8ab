"""Where do the forgotten samples go? The distribution of D_f's predicted classes.

After forgetting a class, a good method spreads its samples over the retained classes the way a
retrained model does (to the classes they resemble); a poor one piles them onto one retained class,
which is itself a tell that something was done to that class. Summaries:

* ``entropy_retained``: entropy of the predictions that fall in retained classes, renormalised over
  those classes and divided by log |R|: 1 = spread evenly, 0 = all on one class;
* ``max_share_retained``: the largest share of D_f predicted as one retained class;
* ``forgotten_share`` (class requests): share of D_f still predicted as a forgotten class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.dataset import ArrayData
from .outputs import logits_of
from .plots import save_figure


@dataclass
class PredictionDistribution:
    counts: list[int]  # per class, sums to len(data)
    fractions: list[float]
    entropy_retained: float
    max_share_retained: float
    forgotten_share: float  # NaN for sample requests (no forgotten class)


def prediction_distribution(model: torch.nn.Module, data: ArrayData, num_classes: int,
                            forgotten_classes=()) -> PredictionDistribution:
    """Histogram of argmax predictions over ``data`` with the spread summaries described above."""
    n = len(data)
    if n == 0:
        nan = float("nan")
        return PredictionDistribution([0] * num_classes, [nan] * num_classes, nan, nan, nan)
    pred = logits_of(model, data).argmax(1).cpu()
    counts = torch.bincount(pred, minlength=num_classes)[:num_classes].tolist()
    forgotten = set(int(c) for c in forgotten_classes)
    retained = [c for c in range(num_classes) if c not in forgotten]
    kept = [counts[c] for c in retained]
    total = sum(kept)
    if total > 0 and len(retained) > 1:
        h = -sum(k / total * math.log(k / total) for k in kept if k > 0)
        ent = max(0.0, h / math.log(len(retained)))  # max: no -0.0 when all fall in one class
    else:
        ent = float("nan")
    return PredictionDistribution(
        counts=counts, fractions=[c / n for c in counts], entropy_retained=ent,
        max_share_retained=max(kept) / n if kept else float("nan"),
        forgotten_share=sum(counts[c] for c in forgotten) / n if forgotten else float("nan"))


def plot_prediction_distribution(dist: PredictionDistribution, class_names: list[str], path: str | Path,
                                 forgotten_classes=(), reference: PredictionDistribution | None = None,
                                 title: str = "predicted class of the forget set") -> Path:
    """Bar chart of D_f's predicted-class fractions (forgotten classes in red), retrained beside it."""
    from matplotlib.figure import Figure

    k = len(dist.counts)
    fig = Figure(figsize=(max(5.0, 0.45 * k + 2), 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    w = 0.4 if reference is not None else 0.8
    x = list(range(k))
    colors = ["tab:red" if c in set(forgotten_classes) else "tab:blue" for c in x]
    ax.bar([i - (w / 2 if reference is not None else 0) for i in x], dist.fractions, width=w, color=colors,
           label="unlearned")
    if reference is not None:
        ax.bar([i + w / 2 for i in x], reference.fractions, width=w, color="tab:gray", label="retrained")
        ax.legend(fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels([str(n)[:10] for n in class_names[:k]], rotation=45 if k > 10 else 0, fontsize=7)
    ax.set_ylabel("fraction of D_f")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    return save_figure(fig, path)
