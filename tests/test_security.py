"""Hostile inputs: no code runs from a run folder or a data file, no path escapes its folder, no work is
lost to an unwritable --out, files follow the umask, and every bad input is one line with exit code 2."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.errors import CheckpointError, ObliviateError
from obliviate.training import TrainConfig, load_block_assignment, open_run, train

runner = CliRunner()
MLP = dict(model="mlp", batch_size=64, lr=0.05, seed=0)


class Payload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): proof that a load ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_line_error(result, *needles: str) -> str:
    """The CLI failed with exit code 2 and printed exactly one line, ``error: ...``, holding ``needles``."""
    assert result.exit_code == 2, result.output
    text = result.stderr if hasattr(result, "stderr") else result.output
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def cli(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def mlp_run(digits, tmp_path_factory):
    """A finished plain run (MLP, 1 epoch) with step snapshots."""
    return train(digits, TrainConfig(epochs=1, snapshot_every=5, **MLP), tmp_path_factory.mktemp("sec") / "run")


@pytest.fixture(scope="module")
def block_run(digits, tmp_path_factory):
    """A finished block-incremental run (3 blocks x 1 epoch) for DeepObliviate."""
    cfg = TrainConfig(blocks=3, epochs_per_block=1, schedule="cosine", **MLP)
    return train(digits, cfg, tmp_path_factory.mktemp("sec") / "blocks")


def copy_run(run, dest: Path) -> Path:
    shutil.copytree(run.run.path, dest)
    return dest


# ------------------------------------------------------------------ no code runs from a run folder
def test_poisoned_model_file_is_refused_and_runs_nothing(mlp_run, tmp_path):
    bad = copy_run(mlp_run, tmp_path / "bad")
    marker = tmp_path / "ran"
    torch.save({"format": "obliviate-model/1", "spec": Payload(marker), "state_dict": {}}, bad / "model.pt")
    r = cli("forget", "--checkpoint", bad, "--method", "finetune", "--forget-class", "1", "--out", tmp_path / "o")
    one_line_error(r, "model.pt", "refused")
    assert not marker.exists()
    assert not (tmp_path / "o").exists()


def test_poisoned_step_snapshot_is_refused_on_resume(digits, tmp_path):
    out = tmp_path / "run"
    train(digits, TrainConfig(epochs=2, snapshot_every=4, **MLP), out, max_steps=9)  # a killed run
    newest = sorted((out / "snapshots").glob("step_*.pt"))[-1]
    marker = tmp_path / "ran"
    blob = torch.load(newest, weights_only=True)
    torch.save({**blob, "rng": Payload(marker)}, newest)
    r = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", 2, "--snapshot-every", 4,
            "--batch-size", 64, "--lr", 0.05, "--out", out)
    one_line_error(r, newest.name, "refused")
    assert not marker.exists() and not (out / "run.json").exists()


def test_poisoned_block_snapshot_is_refused_by_deepobliviate(block_run, digits, tmp_path):
    bad = copy_run(block_run, tmp_path / "bad")
    marker = tmp_path / "ran"
    for p in sorted((bad / "snapshots").glob("block_*.pt")):
        blob = torch.load(p, weights_only=True)
        torch.save({**blob, "optimizer": Payload(marker)}, p)
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(map(str, digits.train.ids[:5].tolist())))
    r = cli("forget", "--checkpoint", bad, "--method", "deepobliviate", "--forget-ids", ids, "--out", tmp_path / "o")
    one_line_error(r, "snapshot", "refused")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_snapshots_hold_only_tensors_and_plain_values(mlp_run, block_run):
    """What obliviate writes must load weights-only, or a resume or DeepObliviate could not read it."""
    files = list((mlp_run.run.path / "snapshots").glob("step_*.pt")) + \
        list((block_run.run.path / "snapshots").glob("block_*.pt"))
    assert len(files) >= 5
    for p in files:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        assert {"key", "model", "optimizer", "rng", "seconds"} <= blob.keys()


def test_corrupt_snapshot_is_one_error_and_force_starts_over(digits, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(epochs=2, snapshot_every=4, **MLP)
    train(digits, cfg, out, max_steps=9)
    newest = sorted((out / "snapshots").glob("step_*.pt"))[-1]
    newest.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"corrupt snapshot .*--force"):
        train(digits, cfg, out)
    res = train(digits, cfg, out, overwrite=True)  # --force: the unreadable snapshots go, training starts over
    assert res.record["steps"] == 2 * 22 and (out / "run.json").exists()
    assert newest.exists() and torch.load(newest, weights_only=True)["step"] == 8


def test_force_clears_snapshots_of_another_config(digits, tmp_path):
    out = tmp_path / "run"
    train(digits, TrainConfig(epochs=2, snapshot_every=4, **MLP), out, max_steps=9)
    r = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--snapshot-every", 4,
            "--batch-size", 64, "--lr", 0.05, "--out", out)
    one_line_error(r, "different run", "--force")
    r = cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--snapshot-every", 4,
            "--batch-size", 64, "--lr", 0.05, "--out", out, "--force")
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["epochs"] == 1 and rec["steps"] == 22
    steps = sorted(int(p.stem.split("_")[1]) for p in (out / "snapshots").glob("step_*.pt"))
    assert steps == [4, 8, 12, 16, 20, 22]  # only the new run's snapshots remain
    ids = sorted(int(p.stem.split("_")[1]) for p in (out / "snapshots").glob("ids_*.npy"))
    assert ids == steps


def test_resumed_run_records_steps_and_seconds_of_every_segment(digits, tmp_path):
    cfg = TrainConfig(blocks=3, epochs_per_block=1, schedule="cosine", **MLP)
    full = train(digits, cfg, tmp_path / "full")
    part = train(digits, cfg, tmp_path / "part", max_steps=1)  # stops after block 1
    first_seconds = torch.load(tmp_path / "part" / "snapshots" / "block_001.pt", weights_only=True)["seconds"]
    assert part.record == {"interrupted_at_block": 1} and first_seconds > 0
    resumed = train(digits, cfg, tmp_path / "part")
    assert resumed.record["steps"] == full.record["steps"]
    assert resumed.record["seconds"] > first_seconds
    plain = TrainConfig(epochs=2, snapshot_every=4, **MLP)
    train(digits, plain, tmp_path / "p", max_steps=9)
    before = torch.load(tmp_path / "p" / "snapshots" / "step_00000008.pt", weights_only=True)["seconds"]
    resumed = train(digits, plain, tmp_path / "p")
    assert resumed.record["steps"] == 44 and resumed.record["seconds"] > before


# ------------------------------------------------------------------ damaged run folders
def test_corrupt_block_assignment_is_one_line(block_run, tmp_path):
    bad = copy_run(block_run, tmp_path / "bad")
    (bad / "snapshots" / "blocks.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_block_assignment(bad)
    np.save(bad / "snapshots" / "blocks.npy", np.zeros(7, np.float32))
    with pytest.raises(CheckpointError, match=r"\(n, 2\) integer array"):
        load_block_assignment(bad)
    r = cli("forget", "--checkpoint", bad, "--method", "retrain", "--forget-class", "1", "--out", tmp_path / "o")
    one_line_error(r, "blocks.npy")


def test_npy_files_holding_pickles_are_refused(block_run, mlp_run, tmp_path):
    marker = tmp_path / "ran"
    poisoned = np.array([Payload(marker), 1], dtype=object)
    bad = copy_run(block_run, tmp_path / "bad")
    np.save(bad / "snapshots" / "blocks.npy", poisoned, allow_pickle=True)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_block_assignment(bad)
    ids = tmp_path / "ids.npy"
    np.save(ids, poisoned, allow_pickle=True)
    r = cli("forget", "--checkpoint", mlp_run.run.path, "--method", "finetune", "--forget-ids", ids,
            "--out", tmp_path / "o")
    one_line_error(r, "ids.npy")
    assert not marker.exists()


@pytest.mark.parametrize("content, needle", [("null", "expected a JSON object"), ("[1, 2]", "expected a JSON object"),
                                             ('{"data": {}}', "lacks"), ("data-spec", "lacks")])
def test_damaged_run_json_is_one_line(mlp_run, tmp_path, content, needle):
    bad = copy_run(mlp_run, tmp_path / "bad")
    if content == "data-spec":  # a real record whose data entry lost its spec
        rec = json.loads((bad / "run.json").read_text())
        rec["data"] = {}
        content = json.dumps(rec)
    (bad / "run.json").write_text(content)
    r = cli("forget", "--checkpoint", bad, "--method", "finetune", "--forget-class", "1", "--out", tmp_path / "o")
    one_line_error(r, "run.json", needle)


def test_run_json_and_model_file_of_different_architectures_are_refused(mlp_run, digits, tmp_path):
    bad = copy_run(mlp_run, tmp_path / "bad")
    cnn = train(digits, TrainConfig(epochs=1, **{**MLP, "model": "cnn"}), tmp_path / "cnn")
    shutil.copy(cnn.run.model_path, bad / "model.pt")
    with pytest.raises(CheckpointError, match="'mlp' model.*'cnn' model"):
        open_run(bad).load_model()
    r = cli("forget", "--checkpoint", bad, "--method", "finetune", "--forget-class", "1", "--out", tmp_path / "o")
    one_line_error(r, "'mlp'", "'cnn'")


# ------------------------------------------------------------------ no path escapes its folder
def test_study_label_with_path_syntax_is_refused_with_its_line(tmp_path):
    from obliviate.harness.study import StudyError, load_study

    for section, entry in (("datasets", '  - {name: digits, label: "../../../../tmp/x"}'),
                           ("models", '  - {name: mlp, label: "a/b"}')):
        text = textwrap.dedent("""\
            datasets:
              - digits
            models: [mlp]
            requests: [{classes: [1]}]
            methods: [finetune]
            """)
        text = text.replace("  - digits\n", entry + "\n") if section == "datasets" else \
            text.replace("models: [mlp]\n", "models:\n" + entry + "\n")
        study = tmp_path / "study.yaml"
        study.write_text(text)
        with pytest.raises(StudyError, match=r"study\.yaml:\d+: .*label .* names a folder"):
            load_study(study)


def test_work_folders_stay_inside_the_work_folder_whatever_the_label(tmp_path):
    from obliviate.harness.runner import Task, original_dir, retrain_dir

    task = Task("s", "../../../../tmp/x", {"name": "digits"}, "h", "../m/..", {}, "r", {}, "finetune", "finetune",
                {}, 0, {})
    work = tmp_path / "work"
    for d in (original_dir(task, work), retrain_dir(task, work)):
        assert d.resolve().parent.parent == work.resolve() and ".." not in d.name and "/" not in d.name


# ------------------------------------------------------------------ an unwritable --out fails before any work
def unwritable_outs(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return [a_file, a_file / "out", Path("/proc/obliviate-out")]


def test_train_refuses_an_unwritable_out_before_loading_data(tmp_path, monkeypatch):
    import obliviate.cli.train_cmd as train_cmd

    monkeypatch.setattr(train_cmd, "load_data", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    for out in unwritable_outs(tmp_path):
        one_line_error(cli("train", "--dataset", "digits", "--model", "mlp", "--out", out), "--out", str(out))


def test_forget_and_evaluate_refuse_an_unwritable_out_before_any_work(mlp_run, tmp_path, monkeypatch):
    import obliviate.api as api

    monkeypatch.setattr(api, "unlearn", lambda *a, **k: pytest.fail("unlearned before --out was checked"))
    ck = mlp_run.run.path
    for out in unwritable_outs(tmp_path):
        r = cli("forget", "--checkpoint", ck, "--method", "finetune", "--forget-class", "1", "--out", out)
        one_line_error(r, "--out", str(out))
    monkeypatch.setattr(api, "load_checkpoint", lambda *a, **k: pytest.fail("loaded before --out was checked"))
    for out in unwritable_outs(tmp_path):
        one_line_error(cli("evaluate", "--original", ck, "--unlearned", ck, "--out", out), "--out", str(out))


def test_bench_and_report_refuse_an_unwritable_store_work_or_out(tmp_path, monkeypatch):
    import obliviate.harness.study as study_mod

    monkeypatch.setattr(study_mod, "load_study", lambda *a, **k: pytest.fail("study loaded before the checks"))
    study = tmp_path / "s.yaml"
    study.write_text("name: s\n")
    for out in unwritable_outs(tmp_path)[1:]:
        one_line_error(cli("bench", study, "--store", out / "r.sqlite"), "--store")
        one_line_error(cli("bench", study, "--store", tmp_path / "r.sqlite", "--work", out), "--work", str(out))
        one_line_error(cli("report", "--out", out, "--store", tmp_path / "none.sqlite"), "--out", str(out))
    one_line_error(cli("bench", study, "--store", tmp_path), "--store")  # a folder, not a file


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    from obliviate.io import check_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ObliviateError, match="cannot be written"):
            check_writable_dir(ro / "out")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------ files follow the umask
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    from obliviate.io import torch_save, write_json, write_npy

    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        write_npy(tmp_path / "b.npy", np.arange(3))
        torch_save(tmp_path / "c.pt", {"w": torch.zeros(2)})
    finally:
        os.umask(old)
    for name in ("a.json", "b.npy", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode


# ------------------------------------------------------------------ data pickles cannot run code
def write_cifar_batches(root: Path, per_batch: int = 4) -> Path:
    """A tiny cifar-10-batches-py folder in the official format (dicts of numpy arrays, pickle protocol 2)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "labels": rng.integers(0, 10, per_batch).tolist(),
                 "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_official_cifar_pickles_are_read_without_running_code(tmp_path):
    from obliviate.data.sources import _read_cifar10

    root = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    raw = _read_cifar10(root)
    assert raw.x_train.shape == (20, 3, 32, 32) and raw.x_test.shape == (4, 3, 32, 32)
    first = pickle.loads((root / "data_batch_1").read_bytes())
    assert np.array_equal(raw.x_train[:4].reshape(4, -1), first["data"]) and raw.y_train[:4].tolist() == first["labels"]
    marker = tmp_path / "ran"
    (root / "test_batch").write_bytes(pickle.dumps({"data": Payload(marker), "labels": [1]}, protocol=2))
    with pytest.raises(ObliviateError, match="refused global"):
        _read_cifar10(root)
    assert not marker.exists()
    r = cli("train", "--dataset", "cifar10", "--data-root", root, "--model", "mlp", "--out", tmp_path / "o")
    one_line_error(r, "test_batch", "refused global")
    assert not marker.exists()


# ------------------------------------------------------------------ other bad input: one line, exit 2
def test_bad_paths_and_devices_are_one_line(mlp_run, tmp_path):
    ck = mlp_run.run.path
    folder = tmp_path / "ids"
    folder.mkdir()
    r = cli("forget", "--checkpoint", ck, "--method", "finetune", "--forget-ids", folder, "--out", tmp_path / "o")
    one_line_error(r, "forget-ids", "folder")
    r = cli("forget", "--checkpoint", ck, "--method", "finetune", "--forget-class", "1", "--device", "foo",
            "--out", tmp_path / "o")
    one_line_error(r, "unknown device 'foo'")
    one_line_error(cli("train", "--dataset", "digits", "--model", "mlp", "--device", "nope:0", "--out", tmp_path / "t"),
                   "unknown device")
    study = tmp_path / "study.yaml"
    study.mkdir()
    one_line_error(cli("bench", study, "--store", tmp_path / "r.sqlite"), "study.yaml", "folder")
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()


def test_bench_dry_run_creates_no_store(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(textwrap.dedent("""\
        datasets: [digits]
        models: [mlp]
        train: {epochs: 1}
        requests: [{classes: [1]}]
        methods: [finetune]
        """))
    store = tmp_path / "results" / "r.sqlite"
    r = cli("bench", study, "--store", store, "--dry-run")
    assert r.exit_code == 0 and "1 to run" in r.output, r.output
    assert not store.exists() and not store.parent.exists()
    one_line_error(cli("bench", study, "--store", store, "--device", "foo"), "unknown device 'foo'")
    assert not store.exists()


def test_results_export_to_an_unwritable_out_is_one_line(tmp_path):
    from obliviate.harness.store import Store

    Store(tmp_path / "r.sqlite").close()
    one_line_error(cli("results", "--store", tmp_path / "r.sqlite", "--format", "csv", "--out", tmp_path), "folder")
    one_line_error(cli("results", "--store", tmp_path / "r.sqlite", "--format", "csv", "--out", "/proc/x/r.csv"),
                   "--out")
