"""Backdoor verification from the command line (issue 11): plant a trigger at training time, delete the
poisoned samples with `forget --forget-ids <out>/backdoor_ids.txt`, and read the attack success rate."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from obliviate.api import load_checkpoint
from obliviate.backdoor_runs import IDS_FILE, plan_backdoor, poisoned
from obliviate.cli.main import app
from obliviate.data import ForgetRequest
from obliviate.metrics import backdoor_info
from obliviate.training import assign_blocks, load_block_assignment

runner = CliRunner()
RECIPE = ["--dataset", "digits", "--model", "cnn", "--blocks", "4", "--epochs-per-block", "4", "--batch-size", "32",
          "--lr", "0.05", "--schedule", "cosine", "--device", "cpu"]


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    """40 digits of classes 1..9 carry a 2x2 corner trigger and label 0, all in block 3 (of 4, the default)."""
    out = tmp_path_factory.mktemp("backdoor") / "poisoned"
    r = _run("train", *RECIPE, "--plant-backdoor", 40, "--backdoor-target", 0, "--out", out)
    assert r.exit_code == 0, r.output
    assert "backdoor: 40 samples in block 3" in r.output
    return out


def test_train_records_the_backdoor_and_writes_the_ids_file(poisoned_run, digits):
    rec = json.loads((poisoned_run / "run.json").read_text())
    bd = rec["backdoor"]
    assert bd["n"] == 40 and bd["target"] == 0 and bd["block"] == 3 and bd["ids_file"] == IDS_FILE
    assert bd["trigger"]["corner"] == "br" and len(bd["ids"]) == 40
    request = ForgetRequest.from_ids_file(poisoned_run / IDS_FILE)  # the file round-trips to the recorded ids
    assert list(request.ids) == bd["ids"] == sorted(set(bd["ids"])) == rec["data"]["spec"]["backdoor"]["ids"]
    clean_label = dict(zip(digits.train.ids.tolist(), digits.train.y.tolist()))
    assert all(clean_label[i] != 0 for i in bd["ids"])  # relabelling a target-class sample teaches nothing
    ids, blocks = load_block_assignment(poisoned_run)
    assert set(blocks[np.isin(ids, bd["ids"])].tolist()) == {2}  # all in block 3 (0-based 2)
    # reloading re-plants the trigger on exactly those samples: the data hash matches the recorded one
    ck = load_checkpoint(poisoned_run, "cpu")
    assert ck.data.source_hash == rec["data"]["source_hash"] != digits.source_hash
    assert backdoor_info(ck.data)["ids"] == bd["ids"]
    hit = np.isin(ck.data.train.ids.numpy(), bd["ids"])
    assert (ck.data.train.y.numpy()[hit] == 0).all() and (ck.data.train.x.numpy()[hit][:, :, -2:, -2:] == 255).all()


def test_deleting_the_poison_brings_attack_success_to_the_retrained_level(poisoned_run, tmp_path):
    ids_file = poisoned_run / IDS_FILE
    for method in ("deepobliviate", "retrain"):
        r = _run("forget", "--checkpoint", poisoned_run, "--method", method, "--forget-ids", ids_file,
                 "--out", tmp_path / method, "--device", "cpu")
        assert r.exit_code == 0, r.output
    do = json.loads((tmp_path / "deepobliviate" / "run.json").read_text())
    assert do["info"]["first_block"] == 3 and do["forget_size"] == 40  # restarted from θ_2, not from scratch
    r = _run("evaluate", "--original", poisoned_run, "--unlearned", tmp_path / "deepobliviate", "--retrained",
             tmp_path / "retrain", "--out", tmp_path / "eval", "--no-figures", "--no-relearn", "--device", "cpu")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    before, after, retrained = m["backdoor_asr_original"], m["backdoor_asr"], m["backdoor_asr_retrained"]
    assert before > retrained + 0.25, (before, after, retrained)  # the backdoor took
    assert abs(after - retrained) <= 0.05, (before, after, retrained)  # and deleting the poison removed it
    assert "backdoor attack success" in r.output and "backdoor_asr_original" in r.output


def test_an_edited_backdoor_record_is_refused_like_any_other_data_mismatch(poisoned_run, tmp_path):
    for edit in ("drop-one-id", "no-backdoor", "malformed"):
        run = tmp_path / edit
        run.mkdir()
        shutil.copy(poisoned_run / "model.pt", run / "model.pt")
        rec = json.loads((poisoned_run / "run.json").read_text())
        spec = rec["data"]["spec"]
        if edit == "drop-one-id":
            spec["backdoor"]["ids"] = spec["backdoor"]["ids"][1:]
        elif edit == "no-backdoor":
            del spec["backdoor"]
        else:
            spec["backdoor"]["patch"] = "white square"
        (run / "run.json").write_text(json.dumps(rec))
        r = _run("forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1,
                 "--out", tmp_path / f"{edit}-out")
        assert r.exit_code == 2, r.output
        assert ("differs from the one" if edit != "malformed" else "backdoor record is malformed") in r.output
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
        assert not (tmp_path / f"{edit}-out").exists()


@pytest.mark.parametrize("args, message", [
    (["--plant-backdoor", 0, "--backdoor-target", 0], "--plant-backdoor 0: poison at least 1 sample"),
    (["--plant-backdoor", 10_000, "--backdoor-target", 0], "(block 3 of 4 holds"),
    (["--plant-backdoor", 5, "--backdoor-target", 10], "--backdoor-target 10 out of range"),
    (["--plant-backdoor", 5, "--backdoor-target", -1], "--backdoor-target -1 out of range"),
    (["--plant-backdoor", 5, "--backdoor-target", 0, "--backdoor-block", 0], "--backdoor-block 0 out of range"),
    (["--plant-backdoor", 5, "--backdoor-target", 0, "--backdoor-block", 5], "blocks 1..4"),
    (["--plant-backdoor", 5], "needs --backdoor-target"),
    (["--backdoor-target", 3], "need --plant-backdoor"),
])
def test_bad_backdoor_options_are_one_line_and_leave_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    r = _run("train", *RECIPE, *args, "--out", out)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not out.exists()


def test_backdoor_block_needs_block_training(tmp_path):
    r = _run("train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--plant-backdoor", 5,
             "--backdoor-target", 0, "--backdoor-block", 2, "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--backdoor-block needs block-incremental training" in r.output


def test_plan_is_seeded_and_pinned_to_its_block(digits):
    a, b = (plan_backdoor(digits, 20, 7, seed=s, blocks=5, block=2) for s in (0, 0))
    assert a == b and a != plan_backdoor(digits, 20, 7, seed=1, blocks=5, block=2)
    clean = assign_blocks(digits.train, 5, 0)
    assert set(clean[np.isin(digits.train.ids.numpy(), a.ids)].tolist()) == {1}
    # relabelled to 7 the samples would follow class 7 over the blocks; the pins keep them in block 2
    data = poisoned(digits, a)
    placed = assign_blocks(data.train, 5, 0, a.pinned_blocks())
    assert set(placed[np.isin(data.train.ids.numpy(), a.ids)].tolist()) == {1}
    assert np.array_equal(assign_blocks(data.train, 5, 0), assign_blocks(data.train, 5, 0, None))
    plain = plan_backdoor(digits, 20, 7, seed=0)  # without blocks: from the whole training set
    assert plain.block is None and plain.pinned_blocks() is None and len(plain.ids) == 20
