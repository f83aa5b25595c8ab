"""DeepObliviate (He et al. 2021, arXiv 2105.06209): delete samples by retraining a suffix of blocks.

The original model must come from block-incremental training (``obliviate train ... --blocks B
--epochs-per-block E``): D is split into B class-stratified blocks trained one after another, with
θ_j (and the optimiser state) stored after each. A sample in block d influences only θ_j for j ≥ d.
To delete samples S:

1. restart from θ_{d−1}, the last model that never saw S (d = first block holding any of S);
2. retrain blocks d, d+1, … on D_j \\ S, giving θ'_j, and after each measure the temporal residual
   memory Δ_j = ‖(θ_j − θ_{j−1}) − (θ'_j − θ'_{j−1})‖₁ — how differently the block moved the model;
3. once past the last block holding any of S, fit f(x) = a·x^(−h) + b to the Δ series and stop at
   block t when the fitted curve is flat (|f′(t)| < ε): later original updates are then taken to be
   nearly independent of S;
4. stitch θ = θ'_t + (θ_B − θ_t): the retrained prefix plus the original updates of the rest
   (parameters only; BatchNorm statistics are re-estimated on D_r, see ``stitch``).

If the stopping rule never fires the result is exact retraining from θ_{d−1} (ε = 0 forces that).
A class request touches every block (blocks are class-stratified), so d = 1 and it degenerates to
retraining everything. No official code is public; inferred choices are marked in ``Params``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CheckpointError, ObliviateError
from ..training.checkpoint import open_run
from ..training.loop import make_optimizer
from ..training.trainer import TrainConfig, load_block_assignment, load_block_snapshot, train_block
from .base import FORGET_IDS, RETAIN, SNAPSHOTS, Method, register
from .common import recalibrate_batchnorm


def power_law(x, a, h, b):
    return a * np.power(x, -h) + b


def fit_power_law(deltas: list[float], h0: float) -> tuple[float, float, float] | None:
    """Least-squares fit of f(x) = a·x^(−h) + b to Δ_1..Δ_k (x = 1..k), with a ≥ 0 and h ≥ 0; None if it fails."""
    from scipy.optimize import curve_fit

    y = np.asarray(deltas, dtype=np.float64)
    x = np.arange(1, len(y) + 1, dtype=np.float64)
    p0 = [max(float(y[0] - y[-1]), 1e-12), h0, float(y[-1])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, h, b), _ = curve_fit(power_law, x, y, p0=p0, bounds=([0.0, 0.0, -np.inf], [np.inf, np.inf, np.inf]),
                                     maxfev=20_000)
    except (RuntimeError, ValueError):
        return None
    if not all(map(math.isfinite, (a, h, b))):
        return None
    return float(a), float(h), float(b)


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


def _config(ctx, run_path) -> TrainConfig:
    """The recipe the snapshots were made with: the run's own record first, else what the caller passed."""
    try:
        cfg = open_run(run_path).record.get("config")
    except CheckpointError:
        cfg = None
    if cfg:
        return TrainConfig.from_dict(cfg)
    if ctx.train_config is not None:
        return ctx.train_config
    raise ObliviateError(f"deepobliviate: cannot find the training recipe of {run_path} (no run.json config)")


@register
class DeepObliviate(Method):
    name = "deepobliviate"
    summary = ("DeepObliviate: retrain blocks from the first one holding a deleted sample, stitch the rest "
               "(needs a run trained with --blocks; reads D_r + snapshots; a class request touches every "
               "block, so it degenerates to full retraining)")
    needs = frozenset({FORGET_IDS, RETAIN, SNAPSHOTS})

    @dataclass
    class Params:
        """``epsilon`` is on the per-parameter scale: Δ is divided by the number of parameters (mean
        absolute difference per weight), so one threshold serves models of any size (inferred; the
        paper does not say). ``min_deltas`` is small because test runs have few blocks (the
        third-party version needs 15). ``h0`` starts the fit's exponent at 1 instead of DFA (inferred).
        epsilon = 1e-5 kept from the spec after measuring on the digits CNN (8 blocks x 4 epochs, 10 ids
        deleted): per-parameter Δ_j were 1.5e-3–7e-3 and did *not* decay monotonically (e.g. 2.1e-3,
        7.2e-3, 4.4e-3, 3.2e-3, ...). With three points the bounded fit then goes flat (slope ~1e-11),
        so the rule fires as soon as ``min_deltas`` values past the last deleted block exist; any ε
        from 1e-5 to 1e-4 behaved the same. On such short series the stop is driven by ``min_deltas``,
        not by a real decay — raise it (the third-party version uses 15) for more retraining.
        """

        epsilon: float = 1e-5
        min_deltas: int = 3
        normalise: bool = True  # Δ per parameter (divide by parameter count); False: raw L1 norm
        h0: float = 1.0
        bn_samples: int = 2048  # retain samples that re-estimate BatchNorm statistics after stitching

    def run(self, ctx, p):
        run_path = ctx.snapshots
        if p.min_deltas < 1:
            raise ObliviateError(f"deepobliviate: min_deltas must be >= 1, got {p.min_deltas}")
        if p.epsilon < 0:
            raise ObliviateError(f"deepobliviate: epsilon must be >= 0, got {p.epsilon}")
        try:
            ids, blocks = load_block_assignment(run_path)
        except CheckpointError as exc:
            raise ObliviateError(
                f"deepobliviate needs a block-incrementally trained run, and {run_path} has no block snapshots: "
                "retrain it with `obliviate train ... --blocks B --epochs-per-block E` (plain training, even with "
                "step snapshots, re-reads every sample every epoch, so no suffix of it is free of the deleted samples)"
            ) from exc
        cfg = _config(ctx, run_path)
        n_blocks = int(cfg.blocks) if cfg.blocks else int(blocks.max()) + 1
        order = np.argsort(ids)
        sorted_ids, sorted_blocks = ids[order], blocks[order]

        def block_of(query: np.ndarray) -> np.ndarray:
            pos = np.clip(np.searchsorted(sorted_ids, query), 0, max(0, len(sorted_ids) - 1))
            found = sorted_ids[pos] == query if len(sorted_ids) else np.zeros(len(query), bool)
            return np.where(found, sorted_blocks[pos], -1)

        forget_blocks = block_of(np.asarray(ctx.forget_ids, np.int64))
        if (forget_blocks < 0).any():
            bad = int(np.asarray(ctx.forget_ids)[forget_blocks < 0][0])
            raise ObliviateError(f"deepobliviate: sample id {bad} is not in the block assignment of {run_path} "
                                 "(was that run trained on this data set?)")
        first, last = int(forget_blocks.min()), int(forget_blocks.max())  # 0-based block indices

        retain = ctx.retain
        retain_blocks = torch.as_tensor(block_of(retain.ids.cpu().numpy()), device=retain.device)
        # retain ids absent from the assignment were never trained on (the run excluded them): leave them out

        theta_b = load_block_snapshot(run_path, n_blocks)["model"]
        final = ctx.original.state_dict()
        for k, v in theta_b.items():
            if k in final and v.is_floating_point() and not torch.allclose(final[k].detach().cpu().float(), v.float(),
                                                                           atol=1e-6, rtol=1e-5):
                raise ObliviateError(f"deepobliviate: the model to unlearn is not the final model of {run_path} "
                                     f"(parameter {k} differs); pass the run's own model")

        start = load_block_snapshot(run_path, first)
        model = ctx.model
        model.load_state_dict(start["model"])
        optimizer = make_optimizer(model.parameters(), cfg.optim())
        optimizer.load_state_dict(start["optimizer"])
        augment = cfg.augment if cfg.augment is not None else ctx.augment

        names = [n for n, _ in model.named_parameters()]
        count = sum(q.numel() for q in model.parameters())
        scale = 1.0 / count if p.normalise else 1.0

        def param_state(state: dict) -> dict:
            return {n: state[n].detach().to(ctx.device, torch.float32) for n in names}

        orig_prev = param_state(start["model"])
        new_prev = {n: v.clone() for n, v in orig_prev.items()}
        deltas: list[float] = []
        retrained: list[int] = []
        fits: list[dict] = []
        stop = n_blocks  # θ'_stop is the last retrained model (1-based block count)
        for j in range(first, n_blocks):
            part = torch.nonzero(retain_blocks == j).flatten()
            if len(part):
                train_block(model, optimizer, retain.subset(part), cfg, j, augment,
                            description=f"deepobliviate block {j + 1}/{n_blocks}")
            retrained.append(j + 1)
            orig_next = param_state(load_block_snapshot(run_path, j + 1)["model"])
            new_next = param_state(model.state_dict())
            delta = sum(((orig_next[n] - orig_prev[n]) - (new_next[n] - new_prev[n])).abs().sum().item()
                        for n in names) * scale
            deltas.append(delta)
            orig_prev, new_prev = orig_next, new_next
            if j < last or len(deltas) < p.min_deltas or p.epsilon <= 0 or j + 1 == n_blocks:
                continue
            fit = fit_power_law(deltas, p.h0)
            if fit is None:
                continue
            a, h, b = fit
            t = float(len(deltas))
            slope = a * h * t ** (-h - 1.0)
            fits.append({"block": j + 1, "a": a, "h": h, "b": b, "slope": slope})
            if slope < p.epsilon:
                stop = j + 1
                break

        stitched = stop < n_blocks
        if stitched:
            stitch(model, theta_b, load_block_snapshot(run_path, stop)["model"], retain, p.bn_samples, ctx.seed)
        ctx.info.update({
            "blocks": n_blocks, "first_block": first + 1, "last_block": last + 1,
            "retrained_blocks": retrained, "stopped_at": stop, "stitched": stitched,
            "deltas": deltas, "delta_scale": "per-parameter mean |.|" if p.normalise else "L1",
            "fits": fits, "speedup_estimate": n_blocks / max(1, len(retrained)),
            "note": "class request: every block holds the class, so this is full retraining"
            if ctx.request.kind == "class" else "",
        })
        return model
