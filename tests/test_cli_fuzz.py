"""Bad input at every command: exit code 2, one line on stderr, no traceback, nothing left behind.

A table of what users get wrong — unknown names, out-of-range and non-finite numbers, values of the wrong
type, missing and corrupt files, a pickle that would run code — for train, forget, evaluate, bench,
results and report. Each case must exit 2 with exactly one line on stderr (the message, naming the
problem), and leave no output directory and no store row.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_study_yaml
from typer.testing import CliRunner

from obliviate.api import forget
from obliviate.cli.main import app
from obliviate.data import ForgetRequest
from obliviate.harness.store import Store
from obliviate.training.checkpoint import load_model_file, save_model

STUDY = tiny_study_yaml(name="fuzz")


class _RunsCode:
    """Unpickling this touches ``marker``: what a malicious model.pt would do with its own payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def files(digits_run, tmp_path_factory) -> dict[str, Path]:
    """Real runs and deliberately broken copies of them."""
    root = tmp_path_factory.mktemp("fuzz")
    orig = digits_run.run.path
    unlearned = root / "unlearned"
    forget(orig, ForgetRequest.for_classes(3), "finetune", params={"epochs": 0.2}, out=unlearned)

    def copy_of(src: Path, name: str) -> Path:
        dst = root / name
        shutil.copytree(src, dst)
        return dst

    nan = copy_of(unlearned, "nan")
    model = load_model_file(nan / "model.pt")
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    save_model(nan / "model.pt", model)
    evil = copy_of(orig, "evil")
    torch.save(_RunsCode(root / "PWNED"), evil / "model.pt")
    truncated = copy_of(orig, "truncated")
    data = (truncated / "model.pt").read_bytes()
    (truncated / "model.pt").write_bytes(data[: len(data) // 3])
    bad_json = copy_of(orig, "bad-json")
    (bad_json / "run.json").write_text('{"kind": "train", "data": ')
    (root / "garbage.npy").write_bytes(b"\x93NUMPY\x00garbage" * 10)
    (root / "empty-ids.txt").write_text("")
    (root / "a-file").write_text("not a folder")
    (root / "garbage.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    Store(root / "empty.sqlite").close()
    studies = {"study.yaml": STUDY, "syntax.yaml": STUDY.replace("models: [cnn]", "models: [cnn"),
               "nan-param.yaml": tiny_study_yaml(name="fuzz", methods=("retrain", {"name": "finetune",
                                                                                 "params": {"lr": ".nan"}})),
               "neg-lr.yaml": STUDY.replace("lr: 0.05", "lr: -0.05"),
               "unknown-method.yaml": tiny_study_yaml(name="fuzz", methods=("retrain", "finetuning")),
               "neg-seed.yaml": tiny_study_yaml(name="fuzz", seeds=(-1,)),
               "list.yaml": "- just\n- a list\n"}
    for name, text in studies.items():
        (root / name).write_text(text)
    return {"root": root, "orig": orig, "unlearned": unlearned, "nan": nan, "evil": evil, "truncated": truncated,
            "bad-json": bad_json}


T = ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "1"]
F = ["forget", "--checkpoint", "{orig}", "--method", "finetune"]
E = ["evaluate", "--original", "{orig}", "--no-figures", "--no-relearn"]

CASES = {
    # train: names, numbers, types, modes
    "train unknown data set": (["train", "--dataset", "nope"], "unknown dataset 'nope'"),
    "train unknown model": (T + ["--model", "resnet99"], "unknown model 'resnet99'"),
    "train epochs 0": (T + ["--epochs", "0"], "epochs=0 is out of range"),
    "train epochs not a number": (T + ["--epochs", "ten"], "Invalid value for '--epochs'"),
    "train lr nan": (T + ["--lr", "nan"], "lr=nan is not a finite number"),
    "train lr inf": (T + ["--lr", "inf"], "lr=inf is not a finite number"),
    "train lr negative": (T + ["--lr", "-0.1"], "lr=-0.1 is out of range (allowed: > 0)"),
    "train lr diverges": (T + ["--lr", "1e4"], "the trained model has NaN weights"),
    "train batch size 0": (T + ["--batch-size", "0"], "batch_size=0 is out of range (allowed: >= 1)"),
    "train unknown optimizer": (T + ["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    "train unknown schedule": (T + ["--schedule", "linear"], "unknown schedule 'linear'"),
    "train unknown augment": (T + ["--augment", "rotate"], "unknown augment 'rotate'"),
    "train weight decay nan": (T + ["--weight-decay", "nan"], "weight_decay=nan is not a finite number"),
    "train label smoothing 1.5": (T + ["--label-smoothing", "1.5"], "label_smoothing=1.5 is out of range"),
    "train val fraction nan": (T + ["--val-fraction", "nan"], "val_fraction=nan is not a finite number"),
    "train val fraction 1": (T + ["--val-fraction", "1"], "val_fraction=1.0 is out of range"),
    "train per class 0": (T + ["--train-per-class", "0"], "train_per_class=0 is out of range"),
    "train per class negative": (T + ["--train-per-class", "-5"], "train_per_class=-5 is out of range"),
    "train blocks negative": (T + ["--blocks", "-1"], "blocks=-1 is out of range"),
    "train more blocks than samples": (T + ["--blocks", "100000"], "at most one block per sample"),
    "train epochs per block 0": (T + ["--blocks", "4", "--epochs-per-block", "0"], "epochs_per_block=0"),
    "train two modes": (T + ["--blocks", "2", "--snapshot-every", "3"], "two training modes"),
    "train unknown option": (T + ["--epoch", "3"], "No such option: --epoch"),
    "train no cuda": (T + ["--device", "cuda:7"], "not available"),
    "train unknown device": (T + ["--device", "toaster"], "device"),
    "train out is a file": (T + ["--out", "{root}/a-file"], "is not a directory"),
    "train finished run": (T + ["--out", "{orig}"], "already holds a finished run"),
    # forget: methods, parameters, requests, checkpoints
    "forget unknown method": (["forget", "--checkpoint", "{orig}", "--method", "nosuch", "--forget-class", "1"],
                              "unknown method 'nosuch'"),
    "forget lr nan": (F + ["--forget-class", "1", "--param", "lr=nan"], "finetune: lr=nan is not a finite number"),
    "forget lr negative": (F + ["--forget-class", "1", "--param", "lr=-1"], "finetune: lr=-1.0 is out of range"),
    "forget lr diverges": (F + ["--forget-class", "1", "--param", "lr=1e4", "--param", "epochs=0.3"],
                           "the unlearned model has NaN weights"),
    "forget epochs 0": (F + ["--forget-class", "1", "--param", "epochs=0"], "finetune: epochs=0.0 is out of range"),
    "forget epochs inf": (F + ["--forget-class", "1", "--param", "epochs=inf"], "epochs=inf is not a finite number"),
    "forget batch size not int": (F + ["--forget-class", "1", "--param", "batch_size=1.5"], "expected int"),
    "forget unknown optimizer": (F + ["--forget-class", "1", "--param", "optimizer=rmsprop"], "unknown optimizer"),
    "forget unknown parameter": (F + ["--forget-class", "1", "--param", "bogus=1"], "unknown parameter 'bogus'"),
    "forget parameter without value": (F + ["--forget-class", "1", "--param", "lr"], "expected key=value"),
    "forget unknown preset": (F + ["--forget-class", "1", "--param", "preset=fast"], "unknown preset 'fast'"),
    "salun mask ratio 2": (["forget", "--checkpoint", "{orig}", "--method", "salun", "--forget-class", "1",
                            "--param", "mask_ratio=2"], "salun: mask_ratio=2.0 is out of range (allowed: in (0, 1])"),
    "unsir noise lr inf": (["forget", "--checkpoint", "{orig}", "--method", "unsir", "--forget-class", "1",
                            "--param", "noise_lr=inf"], "unsir: noise_lr=inf is not a finite number"),
    "forget class out of range": (F + ["--forget-class", "12"], "class 12 out of range"),
    "forget class negative": (F + ["--forget-class", "-1"], "out of range"),
    "forget class not a number": (F + ["--forget-class", "three"], "Invalid value for '--forget-class'"),
    "forget no request": (F, "exactly one"),
    "forget negative seed": (F + ["--forget-fraction", "0.1", "--seed", "-1"], "Invalid value for '--seed'"),
    "train negative seed": (T + ["--seed", "-1"], "train: seed=-1 is out of range (allowed: in [0, "),
    "forget two requests": (F + ["--forget-class", "1", "--forget-fraction", "0.1"], "exactly one"),
    "forget fraction 1.5": (F + ["--forget-fraction", "1.5"], "fraction must be in (0, 1)"),
    "forget fraction nan": (F + ["--forget-fraction", "nan"], "fraction"),
    "forget fraction 0": (F + ["--forget-fraction", "0"], "fraction must be in (0, 1)"),
    "forget ids missing": (F + ["--forget-ids", "{root}/none.txt"], "does not exist"),
    "forget ids garbage": (F + ["--forget-ids", "{root}/garbage.npy"], "not a list of integer ids"),
    "forget ids empty": (F + ["--forget-ids", "{root}/empty-ids.txt"], "empty"),
    "forget subset 0": (F + ["--forget-class", "1", "--subset-per-class", "0"], "subset"),
    "forget checkpoint missing": (["forget", "--checkpoint", "{root}/none", "--method", "finetune",
                                   "--forget-class", "1"], "does not exist"),
    "forget checkpoint corrupt run.json": (["forget", "--checkpoint", "{bad-json}", "--method", "finetune",
                                            "--forget-class", "1"], "corrupt"),
    "forget checkpoint truncated": (["forget", "--checkpoint", "{truncated}", "--method", "finetune",
                                     "--forget-class", "1"], "corrupt checkpoint"),
    "forget checkpoint runs code": (["forget", "--checkpoint", "{evil}", "--method", "finetune",
                                     "--forget-class", "1"], "could run code"),
    "forget checkpoint is a file": (["forget", "--checkpoint", "{root}/a-file", "--method", "finetune",
                                     "--forget-class", "1"], "does not exist"),
    # evaluate
    "evaluate original missing": (["evaluate", "--original", "{root}/none", "--unlearned", "{unlearned}"],
                                  "does not exist"),
    "evaluate unlearned missing": (E + ["--unlearned", "{root}/none"], "does not exist"),
    "evaluate unlearned is a training run": (E + ["--unlearned", "{orig}"], "is not an unlearning run"),
    "evaluate unlearned has NaN weights": (E + ["--unlearned", "{nan}"], "the unlearned model has NaN weights"),
    "evaluate unlearned runs code": (E + ["--unlearned", "{evil}"], "not an unlearning run"),
    "evaluate original runs code": (["evaluate", "--original", "{evil}", "--unlearned", "{unlearned}"],
                                    "could run code"),
    "evaluate retrained corrupt": (E + ["--unlearned", "{unlearned}", "--retrained", "{bad-json}"], "corrupt"),
    "evaluate out is a file": (E + ["--unlearned", "{unlearned}", "--out", "{root}/a-file"], "not a folder"),
    "evaluate seed not a number": (E + ["--unlearned", "{unlearned}", "--seed", "x"], "Invalid value for '--seed'"),
    "evaluate negative seed": (E + ["--unlearned", "{unlearned}", "--seed", "-3"], "Invalid value for '--seed'"),
    "bench negative seed": (["bench", "{root}/neg-seed.yaml"],
                            "seeds: must be a non-empty list of distinct integers in 0.."),
    "bench workers 0": (["bench", "{root}/study.yaml", "--executor", "ray", "--workers", "0"], "--workers"),
    # bench
    "bench study missing": (["bench", "{root}/none.yaml"], "does not exist"),
    "bench study syntax": (["bench", "{root}/syntax.yaml"], "YAML syntax error"),
    "bench study not a mapping": (["bench", "{root}/list.yaml"], "a study is a mapping"),
    "bench study is a folder": (["bench", "{root}"], "study"),
    "bench unknown method": (["bench", "{root}/unknown-method.yaml"], "unknown method 'finetuning'"),
    "bench param nan": (["bench", "{root}/nan-param.yaml"], "finetune: lr=nan is not a finite number"),
    "bench train lr negative": (["bench", "{root}/neg-lr.yaml"], "train: lr=-0.05 is out of range"),
    "bench unknown executor": (["bench", "{root}/study.yaml", "--executor", "slurm"], "unknown executor 'slurm'"),
    "bench bad data root": (["bench", "{root}/study.yaml", "--data-root", "digits"], "expected DATASET=PATH"),
    "bench store is garbage": (["bench", "{root}/study.yaml", "--store", "{root}/garbage.sqlite"],
                               "not a readable obliviate results store"),
    # results and report
    "results store missing": (["results", "--store", "{root}/none.sqlite"], "does not exist"),
    "results store garbage": (["results", "--store", "{root}/garbage.sqlite"], "not a readable obliviate results"),
    "results store empty": (["results", "--store", "{root}/empty.sqlite"], "holds no results yet"),
    "results unknown format": (["results", "--store", "{root}/empty.sqlite", "--format", "xml"], "unknown format"),
    "results unknown study": (["results", "--store", "{root}/empty.sqlite", "--study", "x"], "no study 'x'"),
    "report store missing": (["report", "--store", "{root}/none.sqlite"], "does not exist"),
    "report store garbage": (["report", "--store", "{root}/garbage.sqlite"], "not a readable obliviate results"),
    "report store empty": (["report", "--store", "{root}/empty.sqlite"], "holds no results yet"),
    "report unknown option": (["report", "--store", "{root}/empty.sqlite", "--format", "pdf"], "No such option"),
}

#: Where each command would write: none of these may exist afterwards.
OUTPUTS = {"train": "--out", "forget": "--out", "evaluate": "--out"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, files, tmp_path):
    args, message = CASES[case]
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    command = args[0]
    out = tmp_path / "out"
    if command in OUTPUTS and "--out" not in args:
        args += ["--out", str(out)]
    store = tmp_path / "store.sqlite"
    if command == "bench" and "--store" not in args:
        args += ["--store", str(store)]
    before = {p: p.stat().st_mtime_ns for p in files["root"].rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, args)
    stderr = result.stderr
    assert result.exit_code == 2, f"{case}: exit {result.exit_code}\n{result.output}\n{stderr}"
    assert "Traceback" not in result.output + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), f"{case}: {stderr!r}"
    assert message in lines[0], f"{case}: {lines[0]!r}"
    assert not out.exists() and not store.exists(), case
    assert not (files["root"] / "PWNED").exists()  # the pickle's payload never ran
    after = {p: p.stat().st_mtime_ns for p in files["root"].rglob("*") if p.is_file()}
    changed = {p for p in before if after.get(p) != before[p]} | set(after) - set(before)
    assert not {p for p in changed if p.suffix != ".sqlite-shm" and not p.name.endswith(("-wal", "-shm"))}, changed
