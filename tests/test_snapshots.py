"""An unusable snapshot, whatever is wrong with it, meets one rule: the run stops with one line naming it and
``--force``; with ``--force`` the snapshots go and training starts over exactly as a fresh run would."""
from __future__ import annotations

import pytest
import torch

from obliviate.errors import CheckpointError
from obliviate.io import torch_save
from obliviate.training import TrainConfig, train

CFG = TrainConfig(model="mlp", epochs=2, batch_size=64, lr=0.05, seed=0, snapshot_every=4)


def test_a_snapshot_that_does_not_fit_stops_the_run_and_force_starts_over_from_scratch(digits, tmp_path):
    fresh = train(digits, CFG).model
    out = tmp_path / "run"
    train(digits, CFG, out, max_steps=9)
    newest = sorted((out / "snapshots").glob("step_*.pt"))[-1]
    blob = torch.load(newest, weights_only=True)
    blob["rng"] = {"cpu": torch.zeros(3, dtype=torch.uint8), "cuda": None}  # readable, but no RNG state
    torch_save(newest, blob)  # the model and optimiser states load before the RNG state fails
    with pytest.raises(CheckpointError, match=r"does not fit this run: .*; or pass --force") as err:
        train(digits, CFG, out)
    assert "\n" not in str(err.value)
    res = train(digits, CFG, out, overwrite=True)
    assert res.record["steps"] == 2 * 22 and (out / "run.json").exists()
    for name, value in fresh.state_dict().items():  # the half-loaded state was put back before starting over
        assert torch.equal(value, res.model.state_dict()[name]), name
