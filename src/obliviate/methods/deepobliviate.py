"""DeepObliviate (He et al. 2021, arXiv 2105.06209): delete samples by retraining a suffix of blocks.

The original model must come from block-incremental training (``obliviate train ... --blocks B
--epochs-per-block E``): D is split into B class-stratified blocks trained one after another, with
θ_j (and the optimiser state) stored after each. A sample in block d influences only θ_j for j ≥ d.
To delete samples S:

1. restart from θ_{d−1}, the last model that never saw S (d = first block holding any of S);
2. retrain blocks d, d+1, … on D_j \\ S, giving θ'_j, and after each measure the temporal residual
   memory Δ_j = ‖(θ_j − θ_{j−1}) − (θ'_j − θ'_{j−1})‖₁ — how differently the block moved the model;
3. once past the last block holding any of S, decide whether to stop at block t. The paper fits
   f(x) = a·x^(−h) + b to the Δ series and stops when the curve is flat (|f′(t)| < ε; ``stop_rule
   power_law``). Measured on MNIST-5k (benchmarks/README.md), Δ falls as the learning rate falls, not
   as S's influence fades: Δ relative to the block's own update, r_t = Δ_t / ‖θ'_t − θ'_{t−1}‖₁, stays
   flat at a floor of 0.1–0.6 while Δ drops 1,000-fold. So the default (``plateau``) stops once r_t is
   at most 1 and no longer falling: S then changes the later updates no more than run-to-run noise does
   (40 backdoored samples start at r 3–9 and are waited out; one random sample is at the floor at once);
4. stitch θ = θ'_t + (θ_B − θ_t): the retrained prefix plus the original updates of the rest
   (parameters only; BatchNorm statistics are re-estimated on D_r, see ``stitch``);
5. obliviate's guard (not in the paper): the stitched model must score on a retain sample within
   ``max_stitch_drop`` points of θ_B, else retraining goes on and the stitch is retried one block later.
   On full Fashion-MNIST an unchecked stitch 14 blocks after the deletion lost 18 points; a user cannot
   see that without a retrained model to compare with, so the method checks it itself. Checks are paid
   from ``max_check_cost`` (5 %) of retraining's cost; once spent, retraining runs to the end, so the
   method never costs more than ``retrain`` plus that share (``info.cost``, ``info.decisions``).

The stitch holds when the blocks were trained with one learning-rate schedule across all of them
(``--block-schedule global``): Δ then decays and the later updates are small; with the schedule restarted
per block Δ stays flat and 40 deleted samples made stitches lose up to 27 points (benchmarks/README.md).

If the stopping rule never fires the result is exact retraining from θ_{d−1} (ε = 0 forces that).
A class request touches every block (blocks are class-stratified), so d = 1 and it degenerates to
retraining everything. No official code is public; inferred choices are marked in ``Params``.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import CheckpointError, ObliviateError
from ..models import Classifier
from ..models.foreign import FOREIGN_PREFIX
from ..params import param
from ..training.accuracy import accuracy
from ..training.checkpoint import Snapshots
from ..training.loop import make_optimizer
from ..training.trainer import TrainConfig, train_block
from .base import FORGET_IDS, RETAIN, SNAPSHOTS, TRAINED_WITHOUT, Method, MethodContext, register
from .common import recalibrate_batchnorm


def power_law(x, a, h, b):
    return a * np.power(x, -h) + b


def dfa_exponent(series) -> float | None:
    """Detrended fluctuation analysis: the scaling exponent α of a series (None when too short to say).

    The profile (cumulative sum of the mean-removed series) is cut into windows of size s; in each a
    linear trend is removed and the RMS of what is left is F(s); α is the slope of log F(s) on log s.
    Used only to start the power-law fit's exponent (the spec's choice; inferred mapping h₀ = α,
    clipped to [0.1, 3]): with fewer than 8 values there are too few windows and the caller's default
    is used instead.
    """
    y = np.asarray(series, dtype=np.float64)
    n = len(y)
    if n < 8 or not np.all(np.isfinite(y)):
        return None
    profile = np.cumsum(y - y.mean())
    scales = sorted({int(s) for s in np.geomspace(3, n // 2, num=6)} - {0, 1, 2})
    fluct = []
    for s in scales:
        x = np.arange(s)
        rms = [np.sqrt(np.mean((seg - np.polyval(np.polyfit(x, seg, 1), x)) ** 2))
               for seg in (profile[i * s:(i + 1) * s] for i in range(n // s))]
        fluct.append(np.mean(rms))
    fluct = np.asarray(fluct)
    if len(scales) < 2 or np.any(fluct <= 0):
        return None
    return float(np.polyfit(np.log(scales), np.log(fluct), 1)[0])


def fit_power_law(deltas, h0: float) -> tuple[float, float, float] | None:
    """Least-squares fit of f(x) = a·x^(−h) + b to Δ_1..Δ_k (x = 1..k); None if it fails.

    ``a`` is free in sign (a rising series fits a < 0, which the stop rule then refuses: bounding it at
    0 made rising or bumpy series fit flat and stop at once); h is kept in [0, 20].
    """
    from scipy.optimize import curve_fit

    y = np.asarray(deltas, dtype=np.float64)
    x = np.arange(1, len(y) + 1, dtype=np.float64)
    p0 = [float(y[0] - y[-1]) or 1e-12, h0, float(y[-1])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, h, b), _ = curve_fit(power_law, x, y, p0=p0, bounds=([-np.inf, 0.0, -np.inf], [np.inf, 20.0, np.inf]),
                                     maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    if not all(map(math.isfinite, (a, h, b))):
        return None
    return float(a), float(h), float(b)


def stop_decision(deltas, epsilon: float, min_deltas: int, min_r2: float, h0: float | None = None,
                  min_drop: float = 0.5) -> dict:
    """Has the residual memory Δ faded? Fit f(x) = a·x^(−h) + b to Δ/Δ_peak from the peak on, and decide.

    Stop only on a real decay: at least ``min_deltas`` values from the peak on, a > 0 and h > 0 (the curve
    falls), a fit that explains the series (R² >= ``min_r2``), the median of the last three Δ at most
    (1 − ``min_drop``) of the peak, and the fitted curve now flat — its slope |f′(t)| = a·h·t^(−h−1) below
    ``epsilon`` *relative to the peak Δ* (so one threshold serves any model size and any lr).
    The drop is what keeps noise out: a power law fits a flat noisy series with R² near 1 and a tiny
    slope (it fired on 31–64 % of flat ±1–10 % series without it), and a slow decay fits a degenerate
    h ≈ 0 curve that looks flat while Δ is still near its peak. A flat, bumpy, rising or slowly decaying
    series does not stop: retraining then continues, towards exact retraining (the safe side).
    """
    y = np.asarray(deltas, dtype=np.float64)
    if not np.all(np.isfinite(y)):
        return {"stop": False, "points": len(y), "reason": "non-finite Δ"}
    peak = int(np.argmax(y)) if len(y) else 0
    y = y[peak:]  # the decay phase: Δ often rises for a block or two after the deletion before it fades
    out: dict = {"stop": False, "points": len(y), "peak_block_offset": peak}
    if len(y) < max(3, min_deltas) or y[0] <= 0:
        return {**out, "reason": f"{len(y)} of {max(3, min_deltas)} values since the peak"}
    rel = y / y[0]
    out["recent"] = recent = float(np.median(rel[-3:]))
    if recent > 1.0 - min_drop:  # checked first: it needs no fit
        return {**out, "reason": f"Δ still at {recent:.0%} of its peak"}
    alpha = dfa_exponent(rel)
    h_init = h0 if h0 is not None else (float(np.clip(alpha, 0.1, 3.0)) if alpha is not None else 1.0)
    fit = fit_power_law(rel, h_init)
    if fit is None:
        return {**out, "reason": "fit failed", "h0": h_init}
    a, h, b = fit
    x = np.arange(1, len(y) + 1, dtype=np.float64)
    ss_tot = float(np.sum((rel - rel.mean()) ** 2))
    r2 = 1.0 - float(np.sum((rel - power_law(x, a, h, b)) ** 2)) / ss_tot if ss_tot > 0 else 0.0
    slope = a * h * float(len(y)) ** (-h - 1.0)
    out.update(a=a, h=h, b=b, r2=r2, slope=slope, h0=h_init)
    if not (a > 0 and h > 0):
        return {**out, "reason": "not decaying"}
    if r2 < min_r2:
        return {**out, "reason": f"poor fit (R² {r2:.2f})"}
    if slope >= epsilon:
        return {**out, "reason": "still falling"}
    return {**out, "stop": True, "reason": "residual memory faded"}


def plateau_decision(ratios, max_ratio: float, plateau: float) -> dict:
    """Has the deleted samples' influence sunk to the noise floor? Decide on r_j = Δ_j / u'_j.

    u'_j is the retrained block's own update size, so r_j does not shrink just because the learning rate
    does (Δ alone does: under one schedule across blocks Δ fell 1,000-fold while r stayed at 0.1–0.6,
    benchmarks/README.md). r starts above 1 when the deleted samples changed what their block taught
    (40 backdoored samples: 3–9), falls while the effect washes out, and levels off at the run-to-run floor
    of two trajectories that merely started apart (0.1–0.6 on MNIST-5k). Stop once r is at most
    ``max_ratio`` and no longer falling: at least ``plateau`` × the r of the block before. Two values at
    least. (Against the previous value, not the lowest so far: deleted samples spread over several blocks
    make r dip and spike, and a spike still falling must not pass for a floor because of an earlier dip.)
    """
    r = np.asarray(ratios, dtype=np.float64)
    out: dict = {"stop": False, "points": len(r), "ratio": float(r[-1]) if len(r) else None}
    if len(r) < 2:
        return {**out, "reason": f"{len(r)} of 2 values"}
    if not np.all(np.isfinite(r)):
        return {**out, "reason": "non-finite Δ ratio"}
    if r[-1] > max_ratio:
        return {**out, "reason": f"Δ still {r[-1]:.2f}× the block's own update (needs <= {max_ratio:g})"}
    if r[-1] < plateau * r[-2]:
        return {**out, "reason": f"Δ ratio still falling ({r[-1]:.2f} < {plateau:g} × {r[-2]:.2f})"}
    return {**out, "stop": True, "reason": "Δ ratio at its floor: the deleted samples' influence is run-to-run noise"}


def decide_stop(p, deltas: list[float], ratios: list[float]) -> dict:
    """The stop rule ``p.stop_rule`` names, on the series measured so far."""
    if p.stop_rule == "plateau":
        return plateau_decision(ratios, p.max_ratio, p.plateau)
    return stop_decision(deltas, p.epsilon, p.min_deltas, p.min_r2, p.h0, p.min_drop)


def stitch(model: torch.nn.Module, theta_b: dict, theta_t: dict, retain, max_samples: int | None = None,
           seed: int = 0) -> None:
    """θ = θ'_t + (θ_B − θ_t) on the parameters; BatchNorm statistics re-estimated on D_r.

    Running statistics are not parameters: adding another run's variance change to θ'_t's variance
    can make it negative (seen on Fashion-MNIST: the stitched CNN then output NaN and scored 10 %).
    They are recomputed for the stitched weights on the retain set, which never holds S (on at most
    ``max_samples`` of it, seeded: a few thousand samples estimate the statistics well).
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, q in params.items():
            q.add_(theta_b[name].to(q.device, q.dtype) - theta_t[name].to(q.device, q.dtype))
    for name, buf in model.named_buffers():
        if not buf.is_floating_point() and name in theta_b:  # num_batches_tracked: the served model's count
            buf.copy_(theta_b[name].to(buf.device))
    if max_samples is not None and len(retain) > max_samples:
        g = torch.Generator().manual_seed(seed)
        retain = retain.subset(torch.randperm(len(retain), generator=g)[:max_samples])
    recalibrate_batchnorm(model, retain)


def _config(ctx, source: Snapshots) -> TrainConfig:
    """The recipe the snapshots were made with: the run's own record first, else what the caller passed."""
    cfg = source.config()
    if cfg:
        return TrainConfig.from_dict(cfg)
    if ctx.train_config is not None:
        return ctx.train_config
    raise ObliviateError(f"deepobliviate: cannot find the training recipe of {source} (no run.json config)")


@dataclass
class _Snapshots:
    """The block-incremental run as DeepObliviate reads it: recipe, block of every id, θ_j loader."""

    source: Snapshots
    cfg: TrainConfig
    n_blocks: int
    sorted_ids: np.ndarray
    sorted_blocks: np.ndarray
    _last: tuple[int, dict] | None = field(default=None, repr=False)  # θ_t is read for Δ and then to stitch

    @classmethod
    def open(cls, ctx, source: Snapshots) -> "_Snapshots":
        try:
            ids, blocks = source.block_assignment()
        except CheckpointError as exc:
            if source.has_blocks():
                raise  # there but unreadable: say it is corrupt, not that it is missing
            name = ctx.model.spec.name
            yours = f" --model-class {name[len(FOREIGN_PREFIX):]}" if name.startswith(FOREIGN_PREFIX) else ""
            raise ObliviateError(
                f"deepobliviate needs a block-incrementally trained run, and {source} has no block snapshots: "
                f"retrain it with `obliviate train{yours} ... --blocks B --epochs-per-block E` (plain training, even "
                "with step snapshots, re-reads every sample every epoch, so no suffix of it is free of the deleted "
                "samples)"
            ) from exc
        cfg = _config(ctx, source)
        order = np.argsort(ids)
        n_blocks = int(cfg.blocks) if cfg.blocks else int(blocks.max()) + 1
        if len(blocks) and blocks.max() >= n_blocks:  # negative blocks and repeated ids: load_block_assignment
            raise CheckpointError(f"corrupt block index of {source}: block numbers up to {int(blocks.max())}, "
                                  f"the run has blocks 0..{n_blocks - 1}")
        return cls(source, cfg, n_blocks, ids[order], blocks[order])

    def block_of(self, query: np.ndarray) -> np.ndarray:
        """0-based block of each id; -1 for an id the run never trained on."""
        if not len(self.sorted_ids):
            return np.full(len(query), -1)
        pos = np.clip(np.searchsorted(self.sorted_ids, query), 0, len(self.sorted_ids) - 1)
        return np.where(self.sorted_ids[pos] == query, self.sorted_blocks[pos], -1)

    def model(self, j: int) -> dict:
        if self._last is None or self._last[0] != j:
            self._last = (j, self.source.block(j)["model"])
        return self._last[1]

    def check_final(self, original: torch.nn.Module) -> dict:
        """The model to unlearn must be θ_B of this run, or stitching adds the wrong updates; returns θ_B."""
        final, theta_b = original.state_dict(), self.model(self.n_blocks)
        for k, v in theta_b.items():
            if k in final and v.is_floating_point() and not torch.allclose(
                    final[k].detach().cpu().float(), v.float(), atol=1e-6, rtol=1e-5):
                raise ObliviateError(f"deepobliviate: the model to unlearn is not the final model of {self.source} "
                                     f"(parameter {k} differs); pass the run's own model")
        return theta_b


@register
class DeepObliviate(Method):
    name = "deepobliviate"
    summary = ("DeepObliviate: retrain blocks from the first one holding a deleted sample, stitch the rest "
               "(needs a run trained with --blocks; reads D_r + snapshots; a class request touches every "
               "block, so it degenerates to full retraining)")
    needs = frozenset({FORGET_IDS, RETAIN, SNAPSHOTS})

    @dataclass
    class Params:
        """``stop_rule`` "plateau" (default, ``plateau_decision``): stop once Δ_j / u'_j <= ``max_ratio`` and >=
        ``plateau`` × its previous value. "power_law" (the paper's, ``stop_decision``) fits f(x) =
        a·x^(−h) + b to Δ/Δ_peak from the largest Δ on and stops once the fit shows a real decay (a, h > 0, R²
        >= ``min_r2``, recent Δ fallen by ``min_drop`` of the peak) whose slope fell below ``epsilon`` (relative
        to the peak, so one value serves any model: inferred, the paper gives ε = 1e-5 on its own unstated
        scale). Δ is the mean absolute difference per parameter (``normalise``). ``h0`` None: start the exponent
        from detrended fluctuation analysis of the series (>= 8 values), else 1. ``min_deltas``: at least this
        many Δ values are fitted, counted from the peak Δ (a series that is still rising has no decay to fit
        yet), never fewer than 3; retraining always runs through the last block holding a deleted sample.
        Defaults measured on block-trained models (see benchmarks/README.md); ``min_drop`` 0.5 bounds false
        stops on flat noisy Δ (tests/test_seed_quality.py).
        """

        # "plateau": stop when Δ relative to the block's own update stops falling (``plateau_decision``);
        # "power_law": the paper's fit of Δ itself (``stop_decision``), which under a decaying lr times the lr
        stop_rule: str = param("plateau", choices=("plateau", "power_law"))
        max_ratio: float = param(1.0, gt=0)  # plateau: Δ_j / u'_j at most this before a stop
        plateau: float = param(0.8, gt=0, le=1)  # plateau: "no longer falling" = r_j >= plateau × r_{j-1}
        epsilon: float = param(0.02, ge=0)  # power_law's slope bound; 0 (either rule): never stop, exact retraining
        min_deltas: int = param(4, ge=1)
        min_r2: float = param(0.7, ge=0, le=1)
        min_drop: float = param(0.5, ge=0, lt=1)  # recent Δ at most (1 − min_drop) × its peak before a stop
        normalise: bool = True  # Δ per parameter (divide by parameter count); False: raw L1 norm
        h0: float | None = param(None, gt=0)
        bn_samples: int = param(2048, ge=1)  # retain samples that re-estimate BatchNorm statistics after stitching
        # points a stitch may lose against θ_B on a retain sample (else retrain on); None: no check
        max_stitch_drop: float | None = param(1.0, ge=0)
        check_samples: int = param(1024, ge=1)  # retain samples the stitch check scores (paired with θ_B's)
        # stitch checks may cost at most this share of retraining's forward-backward passes; when spent,
        # no more stitches are tried and retraining runs to the end (exact): never slower than ``retrain``
        max_check_cost: float = param(0.05, ge=0)

    def run(self, ctx: MethodContext, p: Params) -> Classifier:
        if p.min_deltas < 1:
            raise ObliviateError(f"deepobliviate: min_deltas must be >= 1, got {p.min_deltas}")
        if p.epsilon < 0:
            raise ObliviateError(f"deepobliviate: epsilon must be >= 0, got {p.epsilon}")
        snaps = _Snapshots.open(ctx, ctx.snapshots)
        forget_blocks = snaps.block_of(np.asarray(ctx.forget_ids, np.int64))
        if (forget_blocks < 0).any():
            bad = int(np.asarray(ctx.forget_ids)[forget_blocks < 0][0])
            raise ObliviateError(f"deepobliviate: sample id {bad} is not in the block assignment of {snaps.source} "
                                 "(was that run trained on this data set?)")
        first, last = int(forget_blocks.min()), int(forget_blocks.max())  # 0-based block indices
        theta_b = snaps.check_final(ctx.original)
        retain = ctx.retain
        # retain ids absent from the assignment were never trained on (the run excluded them): block -1, left out
        retain_blocks = torch.as_tensor(snaps.block_of(retain.ids.cpu().numpy()), device=retain.device)
        check = _StitchCheck(ctx, p, snaps, theta_b, retain)
        stop, (deltas, ratios), decisions = _retrain_suffix(ctx, p, snaps, retain, retain_blocks, first, last, check)
        stitched = stop < snaps.n_blocks
        retrained = list(range(first + 1, stop + 1))
        ctx.info.update({
            "blocks": snaps.n_blocks, "first_block": first + 1, "last_block": last + 1,
            "retrained_blocks": retrained, "stopped_at": stop, "stitched": stitched,
            "exact_retraining": not stitched, TRAINED_WITHOUT: not stitched,
            "deltas": deltas, "delta_ratios": ratios, "stop_rule": p.stop_rule,
            "stitch_checks": check.log,
            "delta_scale": "per-parameter mean |.|" if p.normalise else "L1", "decisions": decisions,
            "speedup_estimate": snaps.n_blocks / max(1, len(retrained)),
            "cost": {"steps": check.steps, "retrain_steps": _retrain_steps(snaps, retain_blocks),
                     "check_samples": check.cost, "check_budget": int(check.budget)},
            "note": _note(ctx, first, stitched, decisions),
        })
        return ctx.model


def _retrain_steps(snaps: _Snapshots, retain_blocks: torch.Tensor) -> int:
    """Optimiser steps ``retrain`` takes on this run: every block from scratch on D_j minus S."""
    bs, counts = snaps.cfg.batch_size, torch.bincount(retain_blocks[retain_blocks >= 0], minlength=snaps.n_blocks)
    return int(sum(-(-int(n) // bs) for n in counts.tolist()) * snaps.cfg.epochs_per_block)


def _note(ctx, first: int, stitched: bool, decisions: list[dict]) -> str:
    if ctx.request.kind == "class":
        return "class request: every block holds the class, so this is full retraining"
    if stitched:
        return f"retrained from block {first + 1}, stopped when the residual memory faded, stitched the rest"
    why = decisions[-1]["reason"] if decisions else "no block after the last deleted one"
    return f"retrained from block {first + 1} to the end: the stop rule never fired ({why}), so this is exact"


class _StitchCheck:
    """Stitch at block t and accept it only if a retain sample's accuracy stays within ``max_stitch_drop``
    points of θ_B's; on success the stitched weights become ``ctx.model``.

    Checks are paid from a budget of ``max_check_cost`` × retraining's cost (counted in samples through the
    network, a training sample as 3: forward and backward), so a run whose stitches all fail costs at most
    retraining plus that share; ``spent`` says when the budget cannot pay for another check."""

    def __init__(self, ctx, p, snaps: _Snapshots, theta_b: dict, retain):
        self.ctx, self.p, self.snaps, self.theta_b, self.retain, self.log = ctx, p, snaps, theta_b, retain, []
        self.sample, self.reference, self.cost, self.steps = None, None, 0, 0
        self.budget = p.max_check_cost * 3 * snaps.cfg.epochs_per_block * len(retain)
        self.bn_samples, n_check = self._sizes(p, len(retain))
        self.per_check = min(self.bn_samples, len(retain))
        if p.max_stitch_drop is not None:
            g = torch.Generator().manual_seed(ctx.seed + 0x57C)
            self.sample = retain.subset(torch.randperm(len(retain), generator=g)[:n_check])
            self.per_check += len(self.sample)
            self.reference = accuracy(ctx.original, self.sample)
            self.cost = len(self.sample)

    def _sizes(self, p, n: int) -> tuple[int, int]:
        """(BatchNorm samples, check samples) per stitch; on small runs shrunk so the budget pays for the
        reference and three checks (at digits' size 2,048 + 1,024 exceed 5 % of retraining at once)."""
        bn, check = min(p.bn_samples, n), (min(p.check_samples, n) if p.max_stitch_drop is not None else 0)
        if check + 3 * (bn + check) > self.budget:
            cap = max(32, int(self.budget / (8 if check else 3)))
            bn, check = min(bn, cap), min(check, cap)
        return bn, check

    @property
    def spent(self) -> bool:
        return self.cost + self.per_check > self.budget

    def __call__(self, t: int) -> bool:
        candidate = copy.deepcopy(self.ctx.model) if self.sample is not None else self.ctx.model
        stitch(candidate, self.theta_b, self.snaps.model(t), self.retain, self.bn_samples, self.ctx.seed)
        self.cost += self.per_check
        if self.sample is None:
            return True
        acc = accuracy(candidate, self.sample)
        ok = acc >= self.reference - self.p.max_stitch_drop / 100
        self.log.append({"block": t, "accuracy": round(acc, 4), "reference": round(self.reference, 4), "accepted": ok})
        if ok:
            self.ctx.model.load_state_dict(candidate.state_dict())
        return ok


def _retrain_suffix(ctx, p, snaps: _Snapshots, retain, retain_blocks, first: int, last: int, try_stitch):
    """Retrain blocks first.. on D_j minus S from θ_first, measuring Δ_j and Δ_j / u'_j (u'_j: the retrained
    block's own update); return (stop, (Δs, ratios), decisions).

    When the stop rule fires at block t, ``try_stitch(t)`` stitches; a rejected stitch means: go on."""
    start = snaps.source.block(first)
    model, cfg = ctx.model, snaps.cfg
    model.load_state_dict(start["model"])
    optimizer = make_optimizer(model.parameters(), cfg.optim())
    optimizer.load_state_dict(start["optimizer"])
    augment = cfg.augment if cfg.augment is not None else ctx.augment
    names = [n for n, _ in model.named_parameters()]
    scale = 1.0 / sum(q.numel() for q in model.parameters()) if p.normalise else 1.0

    def param_state(state: dict) -> dict:  # a copy: ``.to`` of a live float32 parameter would alias it
        return {n: state[n].detach().to(ctx.device, torch.float32, copy=True) for n in names}

    orig_prev = param_state(start["model"])
    new_prev = {n: v.clone() for n, v in orig_prev.items()}
    deltas: list[float] = []
    ratios: list[float] = []  # Δ_j / u'_j: Δ against the retrained block's own update
    decisions: list[dict] = []
    for j in range(first, snaps.n_blocks):
        part = torch.nonzero(retain_blocks == j).flatten()
        if len(part):
            try_stitch.steps += train_block(model, optimizer, retain.subset(part), cfg, j, augment,
                                            description=f"deepobliviate block {j + 1}/{snaps.n_blocks}")
        orig_next, new_next = param_state(snaps.model(j + 1)), param_state(model.state_dict())
        deltas.append(sum(((orig_next[n] - orig_prev[n]) - (new_next[n] - new_prev[n])).abs().sum().item()
                          for n in names) * scale)
        update = sum((new_next[n] - new_prev[n]).abs().sum().item() for n in names) * scale
        ratios.append(deltas[-1] / update if update > 0 else math.inf)
        orig_prev, new_prev = orig_next, new_next
        if j < last or p.epsilon <= 0 or j + 1 == snaps.n_blocks:
            continue
        decision = decide_stop(p, deltas, ratios)
        if decision["stop"] and try_stitch.spent:
            decision = {**decision, "stop": False, "reason": "stitch check budget spent: retraining to the end"}
        elif decision["stop"] and not try_stitch(j + 1):
            decision = {**decision, "stop": False, "reason": "stitch check failed: the stitched model lost accuracy"}
        decisions.append({"block": j + 1, **decision})
        if decision["stop"]:
            return j + 1, (deltas, ratios), decisions
    return snaps.n_blocks, (deltas, ratios), decisions
