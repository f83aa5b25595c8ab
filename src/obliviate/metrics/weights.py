"""Layer-wise weight distance: where in the network did unlearning change the weights, and by how much.

For every parameter tensor l (``named_parameters``: weights and biases, not BatchNorm running
statistics, which are buffers) the distance is ‖θ_l − θ'_l‖₂ over the flattened tensor; the total is
the L2 norm over all parameters, √(Σ_l ‖θ_l − θ'_l‖²). Compared against the original θ₀ it shows how
far a method moved; against the retrained model, how close it came to the exact answer (two networks
trained from different seeds are far apart in weight space, so read it beside the retrained model's
own distance to θ₀).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ObliviateError
from .plots import save_figure


def layer_distances(model_a: torch.nn.Module, model_b: torch.nn.Module) -> dict[str, float]:
    """{parameter name: L2 distance} between two models of the same architecture."""
    pa, pb = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    if pa.keys() != pb.keys():
        missing = sorted(set(pa) ^ set(pb))
        raise ObliviateError(f"models differ in architecture: parameter {missing[0]!r} is in only one of them")
    out = {}
    for name, a in pa.items():
        b = pb[name]
        if a.shape != b.shape:
            raise ObliviateError(f"models differ in architecture: {name} has shape {tuple(a.shape)} "
                                 f"vs {tuple(b.shape)}")
        out[name] = (a.detach().double().cpu() - b.detach().double().cpu()).norm().item()
    return out


def total_distance(distances: dict[str, float]) -> float:
    """L2 norm over all parameters from the per-tensor distances."""
    return math.sqrt(sum(d * d for d in distances.values()))


def weight_distance(model_a: torch.nn.Module, model_b: torch.nn.Module) -> float:
    """Total L2 distance between all parameters of two models of the same architecture."""
    return total_distance(layer_distances(model_a, model_b))


def plot_layer_distances(to_original: dict[str, float], to_retrained: dict[str, float] | None, path: str | Path,
                         title: str = "layer-wise L2 weight distance") -> Path:
    """Horizontal bar chart, log-scale x axis, one row per parameter tensor (zeros are not drawn)."""
    names = list(to_original)
    fig, ax = _figure(len(names))
    y = list(range(len(names)))
    h = 0.4 if to_retrained is not None else 0.8
    vals = [v if v > 0 else float("nan") for v in to_original.values()]
    ax.barh([i - (h / 2 if to_retrained is not None else 0) for i in y], vals, height=h, label="to original θ₀",
            color="tab:blue")
    if to_retrained is not None:
        vals_r = [to_retrained.get(n, float("nan")) for n in names]
        ax.barh([i + h / 2 for i in y], [v if v > 0 else float("nan") for v in vals_r], height=h,
                label="to retrained", color="tab:orange")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=6)
    ax.invert_yaxis()
    positive = [v for v in list(to_original.values()) + list((to_retrained or {}).values()) if v > 0]
    if positive:
        ax.set_xscale("log")
    ax.set_xlabel("‖θ_l − θ'_l‖₂")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def _figure(rows: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, max(3.0, 0.16 * rows + 1.2)), layout="constrained")
    return fig, fig.add_subplot(1, 1, 1)
