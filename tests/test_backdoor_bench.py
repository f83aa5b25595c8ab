"""Backdoor verification in a study: a data set with ``backdoor: {n, target}`` trains its original model on
poisoned data, a ``backdoor: true`` request deletes exactly the poisoned samples, and every row reports the
attack success rate of the unlearned, original and retrained model."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from obliviate.backdoor_runs import plan_backdoor
from obliviate.cli.main import app
from obliviate.errors import ObliviateError
from obliviate.harness.runner import check_study, load_bundle, make_plan
from obliviate.harness.store import Store
from obliviate.harness.study import load_study

STUDY = """\
name: bd
datasets:
  - name: digits
    backdoor: {n: 40, target: 0}
models: [cnn]
train: {epochs: 12, batch_size: 32, lr: 0.05, schedule: cosine}
requests:
  - backdoor: true
    subset_per_class: 50
methods: [retrain, finetune]
seeds: [0]
evaluate: {relearn: false, figures: false}
"""


def _study(tmp_path, text: str = STUDY):
    path = tmp_path / "bd.yaml"
    path.write_text(text)
    return path


def test_a_backdoor_request_forgets_exactly_the_planted_samples(tmp_path, digits):
    plan = make_plan(load_study(_study(tmp_path)))
    planted = plan_backdoor(digits, 40, 0, seed=0)
    assert len(plan.tasks) == 2
    for t in plan.tasks:
        assert t.request == "backdoor" and t.request_spec["ids"] == list(planted.ids)
        assert t.source_hash != digits.source_hash  # the original trains on the poisoned data
        # what a Ray worker loads from the task's spec is the very data the driver planned with
        assert load_bundle(t.data_spec).source_hash == t.source_hash
    clean = dict(zip(digits.train.ids.tolist(), digits.train.y.tolist()))
    assert all(clean[i] != 0 for i in planted.ids)


def test_bench_reports_the_attack_success_before_and_after(tmp_path):
    store = tmp_path / "bd.sqlite"
    r = CliRunner().invoke(app, ["bench", str(_study(tmp_path)), "--store", str(store), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["results", "--store", str(store), "--study", "bd"])
    assert r.exit_code == 0 and "backdoor ASR" in r.output, r.output  # the table shows it for a backdoor study
    with Store(store) as st:
        rows = {x["method"]: x["metrics"] for x in st.rows("bd")}
    assert set(rows) == {"retrain", "finetune"}
    retrain, finetune = rows["retrain"], rows["finetune"]
    assert retrain["forget_size"] == finetune["forget_size"] == 40
    before, after = retrain["backdoor_asr_original"], retrain["backdoor_asr_retrained"]
    assert before > after + 0.25, (before, after)  # the backdoor took, and retraining without the poison removed it
    assert retrain["backdoor_asr"] == pytest.approx(after)
    assert finetune["backdoor_asr_original"] == pytest.approx(before)
    assert 0.0 <= finetune["backdoor_asr"] <= 1.0


@pytest.mark.parametrize("edit, where, message", [
    (("    backdoor: {n: 40, target: 0}\n", ""), "bd.yaml:7", "needs a data set with a backdoor"),
    (("target: 0}", "target: 10}"), "bd.yaml:4", "backdoor target 10 out of range"),
    (("n: 40", "n: 5000"), "bd.yaml:4", "backdoor n 5000: choose 1..1"),
    (("{n: 40, target: 0}", "{target: 0}"), "bd.yaml:4", "backdoor needs n:"),
    (("{n: 40, target: 0}", "{n: 0, target: 0}"), "bd.yaml:4", "backdoor n must be >= 1"),
    (("{n: 40, target: 0}", "{n: 4, target: 0, trigger: x}"), "bd.yaml:4", "unknown backdoor key 'trigger'"),
    (("  - backdoor: true", "  - backdoor: false"), "bd.yaml:8", "backdoor: true forgets"),
    (("  - backdoor: true", "  - backdoor: true\n    classes: [1]"), "bd.yaml:8", "exactly one of"),
])
def test_bad_backdoor_studies_name_the_line(tmp_path, edit, where, message):
    text = STUDY.replace(*edit)
    assert text != STUDY
    with pytest.raises(ObliviateError) as exc:
        check_study(load_study(_study(tmp_path, text)))
    assert message in str(exc.value) and where in str(exc.value), str(exc.value)
