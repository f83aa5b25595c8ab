"""Issue 25.1: under which block-training recipe does DeepObliviate's stitch hold?

For one recipe and seed: train a block-incremental run, delete one random training sample, retrain every
block from the one holding it to the end (θ'_j, the last is exact retraining), and at each block k stitch
θ'_k + (θ_B − θ_k) (BatchNorm re-estimated, as the method does). Prints one JSON line: the Δ series, each
stitch's test accuracy and its retain-sample check (what the method can see), exact retraining's test
accuracy, and the speed-up a stitch at k would give (B / blocks retrained). ``--repair-block`` adds each
stitch's accuracy after a one-block repair on retained samples (one change: not what the method does).

    PYTHONPATH=src python benchmarks/deepobliviate_recipe.py --blocks 50 --epochs-per-block 10 \\
        --block-schedule global --seed 0 >> benchmarks/results/deepobliviate-recipe.jsonl
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

import numpy as np
import torch

from obliviate.backdoor_runs import plan_backdoor, poisoned
from obliviate.data import load_data
from obliviate.data.splits import default_augment
from obliviate.methods.deepobliviate import stitch
from obliviate.metrics import backdoor_asr
from obliviate.metrics.accuracy import accuracy
from obliviate.training import TrainConfig, load_block_assignment, load_block_snapshot, train
from obliviate.training.loop import make_optimizer
from obliviate.training.trainer import train_block


def _params(state: dict, names) -> dict:
    return {n: state[n].detach().float().clone() for n in names}


def repaired(cand, retain, cfg: TrainConfig, size: int, at_block: int, augment: str, seed: int):
    """The stitch followed by one block's training on ``size`` random retained samples, at the learning rates
    the schedule gives block ``at_block``: does a short repair bring a refused stitch back to exact retraining?"""
    fixed = copy.deepcopy(cand)
    pick = torch.randperm(len(retain), generator=torch.Generator().manual_seed(seed))[:size]
    train_block(fixed, make_optimizer(fixed.parameters(), cfg.optim()), retain.subset(pick), cfg, at_block, augment)
    return fixed


def suffix_study(bundle, run, cfg: TrainConfig, forget: np.ndarray, bn_samples: int, every: int, asr=None,
                 repair_block: int | None = None) -> dict:
    path = run.run.path
    ids, blocks = load_block_assignment(path)
    d = int(blocks[np.isin(ids, forget)].min())
    model = copy.deepcopy(run.model)
    start = load_block_snapshot(path, d)
    model.load_state_dict(start["model"])
    opt = make_optimizer(model.parameters(), cfg.optim())
    opt.load_state_dict(start["optimizer"])
    names = [n for n, _ in model.named_parameters()]
    scale = 1.0 / sum(q.numel() for q in model.parameters())
    keep = torch.as_tensor(~np.isin(bundle.train.ids.numpy(), forget))
    retain = bundle.train.subset(torch.nonzero(keep).flatten())
    pos = {int(i): b for i, b in zip(ids, blocks)}
    rblocks = torch.as_tensor([pos[int(i)] for i in retain.ids])
    theta_b = load_block_snapshot(path, cfg.blocks)["model"]
    g = torch.Generator().manual_seed(0x57C)
    sample = retain.subset(torch.randperm(len(retain), generator=g)[:bn_samples])
    ref_check = accuracy(run.model, sample)
    o_prev, n_prev = _params(start["model"], names), _params(start["model"], names)
    augment = cfg.augment or default_augment(bundle.name)
    rows, t0 = [], time.perf_counter()
    for j in range(d, cfg.blocks):
        part = retain.subset(torch.nonzero(rblocks == j).flatten())
        train_block(model, opt, part, cfg, j, augment)
        theta_j = load_block_snapshot(path, j + 1)["model"]
        o_next, n_next = _params(theta_j, names), _params(model.state_dict(), names)
        delta = sum(((o_next[n] - o_prev[n]) - (n_next[n] - n_prev[n])).abs().sum().item() for n in names) * scale
        # the block's own update sizes: Δ relative to them is not shrunk by a decaying learning rate
        update = sum((o_next[n] - o_prev[n]).abs().sum().item() for n in names) * scale
        new_update = sum((n_next[n] - n_prev[n]).abs().sum().item() for n in names) * scale
        o_prev, n_prev = o_next, n_next
        row = {"block": j + 1, "delta": delta, "update": update, "new_update": new_update,
               "speedup": cfg.blocks / (j + 1 - d)}
        if (j - d) < 10 or (j + 1 - d) % every == 0 or j + 1 == cfg.blocks:
            cand = copy.deepcopy(model)
            stitch(cand, theta_b, theta_j, retain, bn_samples, 0)
            row.update(stitch_test=accuracy(cand, bundle.test), stitch_check=accuracy(cand, sample))
            if asr is not None:
                row["stitch_asr"] = asr(cand)
            if repair_block is not None:
                fixed = repaired(cand, retain, cfg, len(retain) // cfg.blocks, repair_block - 1, augment, 0x7E9 + j)
                row.update(repair_test=accuracy(fixed, bundle.test), repair_check=accuracy(fixed, sample))
        rows.append(row)
    return {"first_block": d + 1, "retrain_seconds_suffix": time.perf_counter() - t0,
            "exact_test": accuracy(model, bundle.test), "ref_check": ref_check, "per_block": rows,
            **({"exact_asr": asr(model), "original_asr": asr(run.model)} if asr is not None else {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist-5k")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--blocks", type=int, default=50)
    ap.add_argument("--epochs-per-block", type=int, default=10)
    ap.add_argument("--block-schedule", default="restart")
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-samples", type=int, default=2048)
    ap.add_argument("--every", type=int, default=5, help="after the first 10 blocks, stitch every N blocks")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backdoor", type=int, default=0, help="plant a trigger in N samples of one block, "
                    "delete those (default: delete one random sample)")
    ap.add_argument("--backdoor-block", type=int, default=None, help="the block (1..B) holding the trigger "
                    "(default: the middle one)")
    ap.add_argument("--width", type=int, default=None, help="the model's width option (resnet8: 24 by default)")
    ap.add_argument("--augment", default=None, help="none / flip / crop+flip (default: the data set's)")
    ap.add_argument("--train-per-class", type=int, default=None, help="a class-stratified slice of the data set "
                    "(with 200 test images per class)")
    ap.add_argument("--sample-block", type=int, default=None, help="delete one random sample of this block "
                    "(1..B) instead of one drawn from the whole training set: where it sits decides the speed-up")
    ap.add_argument("--repair-block", type=int, default=None, help="after each stitch, train it on one block's "
                    "worth of random retained samples at the learning rates of this block (1..B): repair_test")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sliced = {"train_per_class": a.train_per_class, "test_per_class": 200, "val_fraction": 0.0} \
        if a.train_per_class else {}
    bundle = load_data(a.dataset, **sliced)
    cfg = TrainConfig(model=a.model, blocks=a.blocks, epochs_per_block=a.epochs_per_block, batch_size=a.batch_size,
                      lr=a.lr, schedule=a.schedule, block_schedule=a.block_schedule, seed=a.seed, augment=a.augment,
                      model_options={"width": a.width} if a.width else {})
    asr, extra = None, {}
    if a.backdoor:
        plan = plan_backdoor(bundle, a.backdoor, 0, seed=a.seed, blocks=a.blocks, block=a.backdoor_block)
        bundle = poisoned(bundle, plan)
        forget = np.asarray(plan.ids)
        extra = {"pinned_blocks": plan.pinned_blocks()}
        asr = lambda m: backdoor_asr(m, bundle.test, plan.target, plan.patch)  # noqa: E731
    else:
        forget = np.random.default_rng(a.seed + 1000).choice(bundle.train.ids.numpy(), 1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(bundle, cfg, f"{tmp}/run", device="cpu", **extra)
        train_s = time.perf_counter() - t0
        if a.sample_block is not None and not a.backdoor:
            ids, blocks = load_block_assignment(run.run.path)
            forget = np.random.default_rng(a.seed + 1000).choice(ids[blocks == a.sample_block - 1], 1)
        out = suffix_study(bundle, run, cfg, forget, a.bn_samples, a.every, asr, a.repair_block)
    print(json.dumps({"recipe": vars(a), "forget_ids": forget.tolist()[:20], "train_seconds": train_s,
                      "original_test": accuracy(run.model, bundle.test), **out}), flush=True)


if __name__ == "__main__":
    main()
