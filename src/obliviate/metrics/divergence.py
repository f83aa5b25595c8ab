"""Output-space distances between two models on the forget set: JS divergence, activation distance, ZRF.

All three compare softmax outputs sample by sample and then average over the samples. The
Jensen–Shannon divergence is the textbook one with base-2 logarithms, so it lies in [0, 1]: 0 for equal
distributions, 1 for distributions with disjoint support. Bad Teacher's code (``JSDiv``) computes a
different quantity under the same name — ``0.5*F.kl_div(log p, m) + 0.5*F.kl_div(log q, m)``, i.e.
KL(m‖p)+KL(m‖q) with the arguments reversed, natural log, averaged over samples *and classes* (so
divided by the class count) — and its ZRF is 1 minus that; obliviate does not copy it.
"""
from __future__ import annotations

import copy

import torch

from ..data.dataset import ArrayData
from .outputs import softmax_outputs


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen–Shannon divergence in bits: ½·KL(p‖m) + ½·KL(q‖m), m = (p+q)/2, 0·log 0 = 0.

    ``p`` and ``q`` are (N, C) probability rows (or one row, shape (C,)); returns (N,) values in [0, 1].
    """
    p, q = p.double(), q.double()
    m = 0.5 * (p + q)
    xlogy = torch.special.xlogy
    kl_pm = (xlogy(p, p) - xlogy(p, m)).sum(-1)
    kl_qm = (xlogy(q, q) - xlogy(q, m)).sum(-1)
    ln2 = torch.log(torch.tensor(2.0, dtype=torch.float64))
    return (0.5 * (kl_pm + kl_qm) / ln2).clamp(0.0, 1.0)


def mean_js(model_a: torch.nn.Module, model_b: torch.nn.Module, data: ArrayData) -> float:
    """Mean over ``data`` of the per-sample JS divergence (bits) between the two models' softmax outputs."""
    if data is None or len(data) == 0:
        return float("nan")
    return js_divergence(softmax_outputs(model_a, data), softmax_outputs(model_b, data)).mean().item()


def activation_distance(model_a: torch.nn.Module, model_b: torch.nn.Module, data: ArrayData) -> float:
    """Mean over ``data`` of the L2 distance between the two models' softmax vectors (Bad Teacher's
    "activation distance"; 0 = identical outputs, at most √2)."""
    if data is None or len(data) == 0:
        return float("nan")
    return (softmax_outputs(model_a, data) - softmax_outputs(model_b, data)).norm(dim=1).mean().item()


def random_init_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised model of the same architecture (the "incompetent teacher" of ZRF), in eval
    mode on the same device; the global RNG is left untouched."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = model.fresh() if hasattr(model, "fresh") else _reset_copy(model)
    return fresh.to(device).eval()


def _reset_copy(model: torch.nn.Module) -> torch.nn.Module:
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return fresh


def zrf_score(model: torch.nn.Module, data: ArrayData, *, seed: int = 0,
              reference: torch.nn.Module | None = None) -> float:
    """ZRF (Chundawat et al., Bad Teacher): 1 − mean JS(model, random model) over ``data`` (paper form).

    The random model is ``reference`` or a fresh initialisation of the same architecture seeded by
    ``seed``. JS is in bits, so ZRF is in [0, 1]: 1 = the outputs on D_f match the random model's;
    a model that still classifies D_f confidently scores lower.
    """
    if data is None or len(data) == 0:
        return float("nan")
    ref = reference if reference is not None else random_init_like(model, seed)
    return 1.0 - mean_js(model, ref, data)
