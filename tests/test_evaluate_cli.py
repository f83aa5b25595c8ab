"""``obliviate evaluate`` end to end on run directories (tiny digits runs, CPU)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from obliviate.api import forget
from obliviate.cli.main import app
from obliviate.data import ForgetRequest, load_data
from obliviate.training import TrainConfig, train

RECIPE = TrainConfig(model="mlp", epochs=8, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0,
                     schedule="constant", seed=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    data = load_data("digits", train_per_class=15, val_fraction=0.0)
    request = ForgetRequest.for_classes(2)
    split = request.resolve(data.train, data.num_classes)
    train(data, RECIPE, root / "original")
    train(data, RECIPE, root / "retrained", exclude_ids=split.forget_ids(data.train), kind="retrain")
    forget(root / "original", request, "finetune", out=root / "unlearned", params={"epochs": 2}, device="cpu")
    # an unlearning run on other splits of the same source (different data spec)
    other = load_data("digits", train_per_class=10, val_fraction=0.0)
    train(other, RECIPE, root / "other")
    forget(root / "other", request, "finetune", out=root / "other-unlearned", params={"epochs": 1}, device="cpu")
    return root


def _run(*args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_evaluate_cli_writes_metrics_and_figures(runs, tmp_path):
    out = tmp_path / "eval"
    res = _run("--original", runs / "original", "--unlearned", runs / "unlearned", "--retrained", runs / "retrained",
               "--out", out, "--seed", 1)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "finetune" and m["request"] == "classes 2" and m["seed"] == 1
    assert m["forget_acc_retrained"] == 0.0 and m["mia_entropy_gap"] is not None
    assert m["speedup_vs_retrain"] > 0 and m["relearn_steps"] is not None
    assert (out / "weight_distance.png").exists() and (out / "forget_predictions.png").exists()
    assert not (out / "gradcam.png").exists()  # an MLP has no convolutional layer to explain
    assert "forget_acc" in res.output and "mia_svc_efficacy" in res.output


def test_evaluate_cli_no_figures_and_no_retrained(runs, tmp_path):
    res = _run("--original", runs / "original", "--unlearned", runs / "unlearned", "--out", tmp_path,
               "--no-figures", "--no-relearn")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["figures"] == [] and m["js_to_retrained"] is None and m["relearn_steps"] is None
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("args, message", [
    (("--unlearned", "other-unlearned"), "evaluate runs of one data set"),
    (("--unlearned", "retrained"), "not an unlearning run"),
    (("--unlearned", "unlearned", "--retrained", "other"), "evaluate runs of one data set"),
    (("--unlearned", "unlearned", "--retrained", "original"), "retrain without exactly the forget set"),
    (("--unlearned", "missing"), "does not exist"),
])
def test_evaluate_cli_refuses_mismatched_runs_with_one_clear_line(runs, tmp_path, args, message):
    flags = [runs / a if i % 2 else a for i, a in enumerate(args)]
    res = _run("--original", runs / "original", *flags, "--out", tmp_path / "x")
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not (tmp_path / "x" / "metrics.json").exists()
