"""Trainer: determinism, snapshots with consumed ids, resume, block mode, atomic and safe run dirs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from obliviate import io as oio
from obliviate.api import load_checkpoint
from obliviate.errors import CheckpointError, ObliviateError
from obliviate.training import TrainConfig, assign_blocks, load_model_file, open_run, train

FAST = dict(model="cnn", batch_size=64, lr=0.05, seed=0)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights_different_seed_different(digits):
    a = train(digits, TrainConfig(epochs=2, **FAST)).model
    b = train(digits, TrainConfig(epochs=2, **FAST)).model
    c = train(digits, TrainConfig(epochs=2, **{**FAST, "seed": 1})).model
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_trained_model_learns_and_run_json_records_everything(digits_run):
    rec = digits_run.record
    assert rec["accuracy"]["test"] > 0.9
    on_disk = json.loads((digits_run.run.path / "run.json").read_text())
    for key in ("config", "seed", "data", "versions", "seconds", "accuracy", "started", "finished"):
        assert key in on_disk
    assert on_disk["data"]["source_hash"] and on_disk["versions"]["torch"] == torch.__version__


def test_snapshots_record_the_ids_each_step_consumed(digits, tmp_path):
    cfg = TrainConfig(epochs=2, snapshot_every=5, **FAST)
    res = train(digits, cfg, tmp_path / "run")
    snaps = tmp_path / "run" / "snapshots"
    steps_per_epoch = -(-len(digits.train) // 64)
    total = 2 * steps_per_epoch
    assert res.record["steps"] == total
    ids = np.concatenate([np.load(p) for p in sorted(snaps.glob("ids_*.npy"))])
    assert ids.shape == (total, 64)
    first_epoch = ids[:steps_per_epoch].reshape(-1)
    first_epoch = first_epoch[first_epoch >= 0]
    assert sorted(first_epoch.tolist()) == sorted(digits.train.ids.tolist())  # every sample once per epoch
    assert len(list(snaps.glob("step_*.pt"))) == -(-total // 5)


def test_killed_run_resumes_from_last_snapshot_to_identical_weights(digits, tmp_path):
    cfg = TrainConfig(epochs=2, snapshot_every=4, **FAST)
    full = train(digits, cfg).model
    partial = train(digits, cfg, tmp_path / "run", max_steps=23)  # "crash" after step 23
    assert "interrupted_at_step" in partial.record
    assert not (tmp_path / "run" / "run.json").exists()  # nothing looks finished
    with pytest.raises(CheckpointError, match="not a finished run"):
        open_run(tmp_path / "run")
    resumed = train(digits, cfg, tmp_path / "run")  # resumes at step 20
    assert _same_weights(full, resumed.model)


def test_resume_refuses_snapshots_of_another_config(digits, tmp_path):
    train(digits, TrainConfig(epochs=2, snapshot_every=4, **FAST), tmp_path / "run", max_steps=9)
    with pytest.raises(CheckpointError, match="different run"):
        train(digits, TrainConfig(epochs=3, snapshot_every=4, **FAST), tmp_path / "run")


def test_block_mode_stores_a_snapshot_per_block_and_resumes(digits, tmp_path):
    cfg = TrainConfig(blocks=4, epochs_per_block=2, schedule="cosine", **FAST)
    blocks = assign_blocks(digits.train, 4, 0)
    for c in range(10):  # class-stratified: each class spread evenly over blocks
        counts = np.bincount(blocks[digits.train.y.numpy() == c], minlength=4)
        assert counts.max() - counts.min() <= 1
    full = train(digits, cfg, tmp_path / "full")
    snaps = tmp_path / "full" / "snapshots"
    assert sorted(p.name for p in snaps.glob("block_*.pt")) == [f"block_{j:03d}.pt" for j in range(5)]
    assert full.record["snapshots"]["mode"] == "blocks"
    train(digits, cfg, tmp_path / "part", max_steps=1)  # stops after block 1
    resumed = train(digits, cfg, tmp_path / "part")
    assert _same_weights(full.model, resumed.model)


def test_bad_configs_are_refused(digits):
    with pytest.raises(ObliviateError, match="choose one"):
        train(digits, TrainConfig(blocks=2, snapshot_every=3, **FAST))
    with pytest.raises(ObliviateError, match="unknown model"):
        train(digits, TrainConfig(**{**FAST, "model": "resnet99"}))
    with pytest.raises(ObliviateError, match=r"train: lr=-1.0 is out of range \(allowed: > 0\)"):
        train(digits, TrainConfig(**{**FAST, "lr": -1.0}))


def test_finished_run_is_not_overwritten_without_force(digits, digits_run):
    with pytest.raises(CheckpointError, match="already holds a finished run"):
        train(digits, TrainConfig(epochs=1, **FAST), digits_run.run.path)


def test_corrupt_checkpoint_gives_clear_error(digits_run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(digits_run.run.path, bad)
    data = (bad / "model.pt").read_bytes()
    (bad / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_model_file(bad / "model.pt")
    (bad / "run.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        open_run(bad)


def test_checkpoint_with_other_data_is_refused(digits_run):
    from obliviate.data import load_data

    other = load_data("mnist-5k")
    with pytest.raises(CheckpointError, match="differs from the one"):
        load_checkpoint(digits_run.run.path, data=other)


def test_atomic_write_leaves_old_file_intact_on_crash(tmp_path):
    target = tmp_path / "metrics.json"
    oio.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with oio.atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "half')
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_many_small_blocks_train_with_every_schedule(digits, schedule):
    """48 blocks of 28-29 digits at batch 8 are 4 steps each: torch's OneCycleLR divided by zero there."""
    cfg = TrainConfig(model="cnn", blocks=48, epochs_per_block=1, batch_size=8, lr=0.05, schedule=schedule, seed=0)
    result = train(digits, cfg)
    assert result.record["steps"] == 48 * 4
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert result.record["accuracy"]["test"] > 0.5  # it learned across the blocks


def _lrs(make, total: int, lr: float) -> list[float]:
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=lr)
    sched = make(opt, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_one_cycle_keeps_torchs_learning_rates_and_works_for_any_length():
    from obliviate.training.loop import OptimConfig, make_scheduler

    def ours(opt, total):
        return make_scheduler(opt, OptimConfig(lr=opt.param_groups[0]["lr"], schedule="onecycle"), total)

    def torchs(opt, total):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=total,
                                                   pct_start=0.25, anneal_strategy="linear", div_factor=10.0,
                                                   final_div_factor=100.0, cycle_momentum=False)

    for total in [*range(5, 120), 391, 1000, 4690]:  # every length where torch's works: identical floats
        for lr in (0.1, 0.05, 0.013):
            assert _lrs(ours, total, lr) == _lrs(torchs, total, lr), (total, lr)
    with pytest.raises(ZeroDivisionError):
        _lrs(torchs, 4, 0.1)
    for total in range(1, 5):  # too short to warm up: start at the peak, end at peak/1000
        lrs = _lrs(ours, total, 0.1)
        assert lrs[0] == 0.1 and all(a > b for a, b in zip(lrs, lrs[1:]))
        assert total == 1 or lrs[-1] == pytest.approx(1e-4)
