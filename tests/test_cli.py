"""The CLI as a user scripts it: train, forget, methods; errors are one line with exit code 2."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from obliviate.cli.main import app

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_train_then_forget_from_the_command_line(tmp_path):
    out = tmp_path / "orig"
    r = _run("train", "--dataset", "digits", "--model", "cnn", "--epochs", "4", "--seed", "1", "--batch-size", "64",
             "--lr", "0.05", "--snapshot-every", "10", "--out", str(out))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["seed"] == 1 and rec["config"]["snapshot_every"] == 10 and rec["accuracy"]["test"] > 0.8
    assert (out / "snapshots").is_dir()
    ids = tmp_path / "ids.txt"
    first_step = np.load(sorted((out / "snapshots").glob("ids_*.npy"))[0])[0]
    ids.write_text("\n".join(str(i) for i in first_step[:5]))
    r = _run("forget", "--checkpoint", str(out), "--method", "finetune", "--forget-class", "3", "--forget-class", "5",
             "--param", "epochs=1", "--out", str(tmp_path / "ft"))
    assert r.exit_code == 3 and "forgotten: NO" in r.output, r.output  # one epoch of finetune: saved, not forgotten
    frec = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert frec["method"] == "finetune" and frec["request"]["classes"] == [3, 5] and frec["params"]["epochs"] == 1.0
    r = _run("forget", "--checkpoint", str(out), "--method", "finetune", "--forget-ids", str(ids),
             "--out", str(tmp_path / "ft-ids"))  # 5 samples at 0.98 unseen accuracy: nothing can show it, saved
    assert r.exit_code == 3 and "forgotten: NOT SHOWN" in r.output, r.output
    assert (tmp_path / "ft-ids" / "certificate.json").exists()


def test_block_training_flags(tmp_path):
    r = _run("train", "--dataset", "digits", "--model", "cnn", "--blocks", "3", "--epochs-per-block", "1",
             "--batch-size", "64", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "b" / "snapshots").glob("block_*.pt"))) == 4


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    text = result.stderr if hasattr(result, "stderr") else result.output
    assert "error:" in text
    return text


def test_user_errors_are_one_clear_line(digits_run, tmp_path):
    ck = str(digits_run.run.path)
    cases = [
        (["forget", "--checkpoint", ck, "--method", "nosuch", "--forget-class", "1", "--out", str(tmp_path / "x")],
         "unknown method 'nosuch'"),
        (["forget", "--checkpoint", ck, "--method", "finetune", "--forget-class", "12", "--out", str(tmp_path / "x")],
         "class 12 out of range"),
        (["forget", "--checkpoint", ck, "--method", "finetune", "--out", str(tmp_path / "x")], "exactly one"),
        (["forget", "--checkpoint", str(tmp_path / "none"), "--method", "finetune", "--forget-class", "1",
          "--out", str(tmp_path / "x")], "does not exist"),
        (["forget", "--checkpoint", ck, "--method", "finetune", "--forget-class", "1", "--param", "bogus=1",
          "--out", str(tmp_path / "x")], "unknown parameter 'bogus'"),
        (["forget", "--checkpoint", ck, "--method", "finetune", "--forget-class", "1", "--param", "epochs=many",
          "--out", str(tmp_path / "x")], "expected float"),
        (["train", "--dataset", "nope", "--out", str(tmp_path / "y")], "unknown dataset 'nope'"),
        (["train", "--dataset", "digits", "--model", "nope", "--out", str(tmp_path / "y")], "unknown model 'nope'"),
        (["train", "--dataset", "digits", "--model", "cnn", "--out", ck], "already holds a finished run"),
    ]
    for args, message in cases:
        text = _error(runner.invoke(app, args))
        assert message in text, (args, text)
        assert not (tmp_path / "x" / "run.json").exists()


def test_catalogue_commands_list_everything():
    r = _run("methods")
    assert r.exit_code == 0 and "finetune" in r.output
    r = _run("datasets")
    assert all(n in r.output for n in ("fashion-mnist", "cifar10", "cifar100", "svhn", "digits", "mnist-5k", "letter"))
    r = _run("models")
    assert all(n in r.output for n in ("resnet18", "allcnn", "mobilenetv2", "vit", "cnn", "mlp"))
