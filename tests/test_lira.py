"""The per-example membership attack (LiRA) on known answers: a model retrained without the deleted samples
must look as if it never saw them (AUC ≈ 0.5), the original that trained on them must not.

One small data set serves every test: 400 digits (40 per class) of which 20 carry a wrong label, an MLP
trained to 100 % training accuracy (so it memorises), and one set of 8 shadows shared through its cache.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from obliviate.data import ForgetRequest, load_data
from obliviate.data.dataset import ArrayData
from obliviate.errors import ObliviateError
from obliviate.metrics import evaluate, lira
from obliviate.metrics.lira import PerExampleMIA, ShadowSet, logit_confidence, membership, per_example_metrics
from obliviate.metrics.outputs import part_of
from obliviate.training import TrainConfig, train

RECIPE = TrainConfig(model="mlp", epochs=30, batch_size=16, lr=0.05, weight_decay=0.0, model_options={"hidden": 64})
K = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These are 64-wide MLPs on batches of 16: a second thread only adds synchronisation, which on a busy
    machine costs 20x (measured 484 s against 25 s for the fixture below)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """Data with 20 mislabelled samples, 150 other random samples, the original and a retrain without each set."""
    data = load_data("digits", train_per_class=40, val_fraction=0.0)
    perm = np.random.default_rng(1).permutation(len(data.train))
    flipped, random_ = np.sort(perm[:20]), np.sort(perm[20:170])
    y = data.train.y.clone()
    y[flipped] = (y[flipped] + 1) % 10
    data = dataclasses.replace(data, train=ArrayData(data.train.x, y, data.train.ids),
                               source_hash=data.source_hash + "-flipped", spec={**data.spec, "flipped": 20})
    cfg = PerExampleMIA(K, RECIPE, cache=str(tmp_path_factory.mktemp("shadows")))
    original = train(data, RECIPE).model
    out = {"data": data, "cfg": cfg, "original": original}
    for name, pos in (("random", random_), ("flipped", flipped)):
        retrained = train(data, RECIPE, exclude_ids=data.train.ids[pos].numpy()).model
        rest = np.setdiff1d(np.arange(len(data.train)), pos)
        out[name] = per_example_metrics({"_original": original, "_retrained": retrained}, data,
                                        part_of(data.train, pos), part_of(data.train, rest), cfg)
        out[name + "_models"] = (pos, retrained)
    return out


def test_retrained_model_looks_unseen_and_original_does_not_on_random_samples(known):
    m = known["random"]
    assert m["lira_deleted"] == 150 and m["lira_unseen"] == 359 and m["lira_shadows"] == K
    # measured 0.53 (retrained) vs 0.66 (original); 150 vs 359 samples give the AUC a standard error of ~0.03
    assert abs(m["lira_auc_retrained"] - 0.5) <= 0.08
    assert m["lira_auc_original"] >= 0.6 and m["lira_auc_original"] - m["lira_auc_retrained"] >= 0.08
    # the retained samples are members of both models: the attack sees them in each
    assert m["lira_retain_auc_original"] >= 0.6 and m["lira_retain_auc_retrained"] >= 0.6


def test_memorised_samples_are_found_per_example(known):
    """Mislabelled samples are learnt only by memorising them: the original gives them away one by one."""
    m = known["flipped"]
    assert m["lira_auc_original"] >= 0.95 and m["lira_tpr_at_1fpr_original"] >= 0.8
    # a set chosen by a property (here: wrong labels) is not exchangeable with unseen test samples, so the
    # retrained value is the reference, not 0.5 (docs/metrics.md); it is far from the original's
    assert m["lira_auc_retrained"] <= 0.5 and m["lira_tpr_at_1fpr_retrained"] <= 0.1


def test_scores_side_with_the_shadows_the_sample_was_in():
    """Fails when IN and OUT are swapped: a φ at the IN shadows' level is a member, at the OUT level not."""
    keep = membership(K, 50, seed=3)
    assert (keep.sum(axis=0) == K // 2).all() and 0 < keep.sum(axis=1).min()
    rng = np.random.default_rng(0)
    phi = np.where(keep, 4.0, -1.0) + rng.normal(0, 0.5, keep.shape)
    shadows = ShadowSet("k", keep, phi, n_train=50)
    pos = np.arange(50)
    assert (shadows.scores(np.full(50, 4.0), pos) > 5).all()
    assert (shadows.scores(np.full(50, -1.0), pos) < -5).all()
    assert 0.35 < shadows.sd_in < 0.65 and 0.35 < shadows.sd_out < 0.65  # the within-sample spread, pooled


def test_logit_confidence_is_the_log_odds_of_the_true_class():
    logits = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(20) % 5
    p = torch.softmax(logits.double(), 1)[torch.arange(20), y]
    assert np.allclose(logit_confidence(logits, y), torch.log(p / (1 - p)).numpy())


def test_shadows_are_cached_and_a_lost_one_is_retrained_alone(known, monkeypatch):
    data, cfg = known["data"], known["cfg"]
    folder = cfg.folder(data)
    assert len(list(folder.glob("phi-*.npy"))) == K and (folder / "keep.npy").exists()
    first = lira.shadow_set(cfg, data)
    (folder / "phi-003.npy").unlink()
    calls = []
    real = lira.train
    monkeypatch.setattr(lira, "train", lambda *a, **kw: calls.append(kw["exclude_ids"]) or real(*a, **kw))
    torch.manual_seed(5)
    again = lira.shadow_set(cfg, data)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))  # training a shadow leaves the caller's random state alone
    assert len(calls) == 1 and np.array_equal(np.sort(calls[0]), np.flatnonzero(~first.keep[3]))
    assert np.allclose(again.phi, first.phi, atol=1e-4)  # the retrained shadow is the same shadow
    monkeypatch.setattr(lira, "train", lambda *a, **kw: pytest.fail("a cached shadow was trained again"))
    lira.shadow_set(cfg, data)
    assert dataclasses.replace(cfg, seed=1).key(data) != cfg.key(data)
    assert dataclasses.replace(cfg, recipe=dataclasses.replace(RECIPE, seed=7)).key(data) == cfg.key(data)


def test_evaluate_reports_the_attack_for_the_unlearned_model(known):
    data, cfg = known["data"], known["cfg"]
    pos, retrained = known["random_models"]
    request = ForgetRequest.for_ids(data.train.ids[pos].tolist())
    m = evaluate(known["original"], retrained, data, request, retrained=retrained, relearn=False, figures=False,
                 per_example_mia=cfg)
    assert m["lira_auc"] == m["lira_auc_retrained"] == known["random"]["lira_auc_retrained"]
    assert m["lira_auc_original"] == known["random"]["lira_auc_original"]
    assert "lira_auc" not in evaluate(known["original"], retrained, data, request, relearn=False, figures=False)


@pytest.mark.parametrize("kw, message", [
    ({"shadows": 2}, "K >= 4"),
    ({"shadows": 8, "max_epochs": 0}, "max_epochs"),
    ({"shadows": 8.5}, "expected an integer"),
    ({"shadows": 8, "recipe": {"epochs": 3}}, "recipe must be a TrainConfig"),
])
def test_bad_settings_are_one_clear_line(kw, message):
    with pytest.raises(ObliviateError, match=message):
        PerExampleMIA(**{"recipe": RECIPE, **kw})


def test_class_requests_are_refused_before_any_work():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ObliviateError, match="class request"):
        evaluate(model, model, None, ForgetRequest.for_classes(3), per_example_mia=PerExampleMIA(4, RECIPE))


# ------------------------------------------------------------------ the CLI flag and the study key
SMALL = TrainConfig(model="mlp", epochs=4, batch_size=32, lr=0.05, seed=0, model_options={"hidden": 32})


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """An original, a fine-tuned forget of 30 ids and of class 2, and the retrain without the ids."""
    from obliviate.api import forget

    root = tmp_path_factory.mktemp("liracli")
    data = load_data("digits", train_per_class=15, val_fraction=0.0)
    train(data, SMALL, root / "original")
    ids = data.train.ids[:30].tolist()
    (root / "ids.txt").write_text("\n".join(map(str, ids)) + "\n")
    train(data, SMALL, root / "retrained", exclude_ids=ids, kind="retrain")
    forget(root / "original", ForgetRequest.for_ids(ids), "finetune", out=root / "unlearned", params={"epochs": 1},
           device="cpu")
    forget(root / "original", ForgetRequest.for_classes(2), "finetune", out=root / "class", params={"epochs": 1},
           device="cpu")
    return root


def _evaluate_cli(runs, unlearned, out, *flags):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    return CliRunner().invoke(app, ["evaluate", "--original", str(runs / "original"), "--unlearned",
                                    str(runs / unlearned), "--out", str(out), "--no-figures", "--no-relearn",
                                    *map(str, flags)])


def test_evaluate_cli_runs_the_attack_and_reuses_its_shadows(cli_runs, tmp_path):
    import json

    shadows = tmp_path / "shadows"
    flags = ("--retrained", cli_runs / "retrained", "--per-example-mia", 4, "--shadow-epochs", 2,
             "--shadow-dir", shadows)
    res = _evaluate_cli(cli_runs, "unlearned", tmp_path / "a", *flags)
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert m["lira_shadows"] == 4 and m["lira_shadow_epochs"] == 2 and m["lira_deleted"] == 30
    assert all(m[k] is not None for k in ("lira_auc", "lira_auc_original", "lira_auc_retrained",
                                          "lira_tpr_at_1fpr"))
    assert "per-example attack (LiRA, 4 shadows)" in " ".join(res.output.split())
    files = sorted(shadows.glob("*/phi-*.npy"))
    assert len(files) == 4
    stamp = [f.stat().st_mtime_ns for f in files]
    res = _evaluate_cli(cli_runs, "unlearned", tmp_path / "b", *flags)
    assert res.exit_code == 0, res.output
    assert [f.stat().st_mtime_ns for f in files] == stamp  # read, not trained again
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["lira_auc"] == m["lira_auc"]


@pytest.mark.parametrize("unlearned, flags, message", [
    ("class", ("--per-example-mia", 4), "is a class request"),
    ("unlearned", ("--per-example-mia", 2), "K >= 4"),
    ("unlearned", ("--shadow-epochs", 2), "add --per-example-mia K"),
])
def test_evaluate_cli_refuses_a_bad_attack_in_one_line(cli_runs, tmp_path, unlearned, flags, message):
    res = _evaluate_cli(cli_runs, unlearned, tmp_path / "x", *flags, "--shadow-dir", tmp_path / "s")
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not (tmp_path / "x" / "metrics.json").exists()


STUDY = """name: lira-tiny
datasets:
  - {name: digits, train_per_class: 15, val_fraction: 0.0}
models:
  - {name: mlp, options: {hidden: 32}}
train: {epochs: 4, batch_size: 32, lr: 0.05}
requests:
  - {fraction: 0.1}
  - {classes: [3], subset_per_class: 10}
methods: [finetune]
seeds: [0, 1]
evaluate: {relearn: false, figures: false, per_example_mia: {shadows: 4, max_epochs: 2}}
"""


def test_study_key_adds_the_attack_to_sample_requests_with_one_shadow_set(tmp_path):
    from typer.testing import CliRunner

    from obliviate.cli.main import app
    from obliviate.harness.executor import bench
    from obliviate.harness.store import Store

    path = tmp_path / "lira.yaml"
    path.write_text(STUDY)
    result = bench(path, tmp_path / "s.sqlite", work=tmp_path / "work")
    assert [r.get("error") for r in result.outcome.failed] == []
    with Store(tmp_path / "s.sqlite") as store:
        rows = store.rows("lira-tiny")
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    for r in rows:
        has = r["metrics"].get("lira_auc") is not None
        assert has == (r["request"] != "class 3"), r["request"]
        assert ("lira_p_kept" in r["metrics"]) == has  # the verdict's rank tests, for sample requests
        assert r["metrics"]["verdict_yes"] + r["metrics"]["verdict_no"] <= 1.0  # yes, NO, or not shown
    assert len(list((tmp_path / "work" / "shadows").glob("*/phi-*.npy"))) == 4  # both seeds, every method: one set
    res = CliRunner().invoke(app, ["results", "--store", str(tmp_path / "s.sqlite")])
    assert res.exit_code == 0 and "LiRA AUC" in res.output and "verdict yes" in res.output, res.output


def test_ray_runs_on_one_node_share_one_shadow_set(tmp_path):
    """A Ray worker runs each task in a folder per original and retrain; the shadows depend on neither, so
    the two seeds' runs (two originals) must read one set per node, not train one set per folder."""
    pytest.importorskip("ray")
    import shutil

    from obliviate.harness import study as study_file
    from obliviate.harness.executor import _node_cache, bench
    from obliviate.harness.runner import SHADOWS, load_bundle, make_plan

    path = tmp_path / "lira.yaml"
    path.write_text(STUDY.replace("  - {classes: [3], subset_per_class: 10}\n", ""))
    task = make_plan(study_file.load_study(path)).tasks[0]
    attack = PerExampleMIA(shadows=4, max_epochs=2, recipe=TrainConfig.from_dict(task.train))  # STUDY's
    key = attack.key(load_bundle(task.data_spec))
    node = _node_cache()
    for old in [node / SHADOWS / key, *node.glob(f"*/{SHADOWS}/{key}")]:  # trained by this test, not read
        shutil.rmtree(old, ignore_errors=True)
    result = bench(path, tmp_path / "s.sqlite", work=tmp_path / "work", executor="ray", workers=2)
    assert not result.outcome.failed and len(result.outcome.done) == 2
    assert len(list((node / SHADOWS / key).glob("phi-*.npy"))) == 4
    assert not list(node.glob(f"*/{SHADOWS}/{key}")), "a per-run-folder shadow set was trained"


def test_a_block_recipe_shares_the_plain_recipes_shadows_when_they_train_alike():
    """Shadows train plain either way; a block run of 10 epochs per block and a plain 10-epoch run of the
    same net, lr and schedule must not pay for two identical shadow sets (16 shadows: hours on a CPU)."""
    data = load_data("digits", train_per_class=5, val_fraction=0.0)
    plain = TrainConfig(model="cnn", epochs=10, lr=0.1, schedule="onecycle")
    blocks = dataclasses.replace(plain, epochs=3, blocks=20, epochs_per_block=10, block_schedule="restart")
    a, b = (PerExampleMIA(shadows=4, recipe=r) for r in (plain, blocks))
    assert a.shadow_recipe() == b.shadow_recipe() and a.key(data) == b.key(data)
    other = PerExampleMIA(shadows=4, recipe=dataclasses.replace(blocks, lr=0.05))
    assert other.key(data) != a.key(data)  # a recipe that trains differently keeps its own set


@pytest.mark.parametrize("value, message", [
    ("2", "K >= 4"),
    ("{shadows: 8, epochs: 2}", "unknown"),
    ("{max_epochs: 2}", "needs shadows"),
    ("yes", "a number of shadow models K"),
])
def test_study_key_errors_name_the_line(value, message):
    from obliviate.harness.study import StudyError, parse_study

    text = STUDY.replace("per_example_mia: {shadows: 4, max_epochs: 2}", f"per_example_mia: {value}")
    with pytest.raises(StudyError, match=message) as exc:
        parse_study(text, "s.yaml")
    assert "s.yaml:12" in str(exc.value)


def test_study_key_needs_a_sample_request_and_leaves_other_studies_alone():
    from obliviate.harness.study import StudyError, parse_study

    only_class = STUDY.replace("  - {fraction: 0.1}\n", "")
    with pytest.raises(StudyError, match="only classes"):
        parse_study(only_class, "s.yaml")
    plain = parse_study(STUDY.replace(", per_example_mia: {shadows: 4, max_epochs: 2}", ""), "s.yaml")
    assert "per_example_mia" not in plain.evaluate  # run keys of studies without it do not change
    assert parse_study(STUDY.replace("{shadows: 4, max_epochs: 2}", "4"), "s.yaml").evaluate["per_example_mia"] == \
        {"shadows": 4}


# ------------------------------------------------------------------ the attack in the verdict
def _verdict_of(model, known, request, attack):
    from obliviate.certificate import measure_evidence
    from obliviate.verdict import VerdictRule, judge

    ev = measure_evidence(model, known["data"], [request], attack=attack, original=known["original"])
    return judge(ev, [False], VerdictRule().resolve(10)), ev


def test_the_attack_shows_five_memorised_samples_gone_where_accuracy_cannot(known):
    """Five mislabelled samples: too few for accuracy (5 of 5 right is likely at unseen accuracy), but each is
    calibrated by its shadows. A model retrained without them is shown forgotten, the original is not."""
    from obliviate.verdict import answer

    data = known["data"]
    pos = known["flipped_models"][0][:5]
    request = ForgetRequest.for_ids(data.train.ids[pos].tolist())
    retrained = train(data, RECIPE, exclude_ids=data.train.ids[pos].numpy()).model
    verdict, ev = _verdict_of(retrained, known, request, known["cfg"])
    t = ev["per_request"][0]["per_example"]
    assert t["deleted"] == 5 and t["p_kept"] < 0.01 <= t["p_kept_original"] and t["p_seen"] >= 0.01
    assert answer(verdict) == "yes"  # not by construction: the evidence says nothing of how the model was made
    assert [c["passed"] for c in verdict["checks"] if "per-example" in c["check"]] == [True]
    assert answer(_verdict_of(retrained, known, request, None)[0]) == "not shown"
    no_op, _ = _verdict_of(known["original"], known, request, known["cfg"])
    assert answer(no_op) == "NO" and any("per-example" in c["check"] and c["passed"] is False for c in no_op["checks"])


def test_the_attack_does_not_pass_samples_that_scored_low_before_the_request(known):
    """A request chosen by a property can score below the kept samples on the original already; passing it
    there would pass a no-op, so the check is not measured (the parent's p says so)."""
    from obliviate.verdict import _per_example_check

    low_before = {"deleted": 5, "p_seen": 0.5, "p_kept": 0.001, "p_kept_original": 0.002}
    check = _per_example_check("5 ids", low_before, 8)
    assert check["passed"] is None and "before the request" in check["not_measured"]
    assert _per_example_check("5 ids", {**low_before, "p_kept_original": 0.3}, 8)["passed"] is True
    assert _per_example_check("5 ids", {**low_before, "p_seen": 0.001}, 8)["passed"] is False
    assert _per_example_check("5 ids", {**low_before, "p_kept": 0.2}, 8)["passed"] is None


def test_rules_before_version_3_ignore_the_attack(known):
    from obliviate.verdict import judge

    ev = {"per_request": [{"request": "5 ids", "size": 5, "forget_acc": 0.0, "per_example":
                           {"deleted": 5, "p_seen": 0.001, "p_kept": 0.5, "p_kept_original": 0.5}}],
          "retained_test_acc": 0.95, "per_example": {"shadows": 8}}
    rule = {"max_forget_acc": 0.1, "acc_band": 0.05, "mia_band": 0.1, "alpha": 0.01}
    assert judge(ev, [False], {**rule, "version": 3})["checks"][1]["passed"] is False
    assert all("per-example" not in c["check"] for c in judge(ev, [False], {**rule, "version": 2})["checks"])


def _cli(*args):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    return CliRunner().invoke(app, list(map(str, args)))


def test_forget_cli_adds_the_attack_to_the_certificate_and_verify_measures_it_again(cli_runs, tmp_path):
    out, shadows = tmp_path / "re", tmp_path / "shadows"
    res = _cli("forget", "--checkpoint", cli_runs / "original", "--method", "retrain", "--forget-ids",
               cli_runs / "ids.txt", "--out", out, "--per-example-mia", 4, "--shadow-dir", shadows, "--device", "cpu")
    assert res.exit_code == 0, res.output
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["evidence"]["per_example"]["shadows"] == 4
    assert cert["evidence"]["per_request"][0]["per_example"]["deleted"] == 30
    assert any("per-example" in c["check"] for c in cert["verdict"]["checks"])
    res = _cli("verify", out, "--evidence", "--shadow-dir", shadows, "--device", "cpu")
    assert res.exit_code == 0 and "evidence re-measured" in " ".join(res.output.split()), res.output


@pytest.mark.parametrize("flags, message", [
    (("--forget-class", 2, "--per-example-mia", 4), "not a class request"),
    (("--forget-ids", "IDS", "--shadow-seed", 1), "add --per-example-mia K"),
    (("--forget-ids", "IDS", "--per-example-mia", 3), "K >= 4"),
])
def test_forget_cli_refuses_a_bad_attack_before_any_work(cli_runs, tmp_path, flags, message):
    flags = [cli_runs / "ids.txt" if f == "IDS" else f for f in flags]
    res = _cli("forget", "--checkpoint", cli_runs / "original", "--method", "finetune", "--out", tmp_path / "x",
               *flags, "--shadow-dir", tmp_path / "s", "--device", "cpu")
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not (tmp_path / "x" / "model.pt").exists()


def test_a_chain_judges_every_request_against_the_original(cli_runs, tmp_path):
    """The second request's evidence tests the first request's samples too, with the lineage's root (which
    trained on both) as the no-op reference, not the parent (which had already forgotten the first)."""
    from obliviate.api import _noop_original, attack_settings, forget, load_checkpoint
    from obliviate.certificate import verify

    data = load_checkpoint(cli_runs / "original", "cpu").data
    ids = data.train.ids.tolist()
    first = ForgetRequest.for_ids(ids[:30])
    attack = attack_settings(load_checkpoint(cli_runs / "original", "cpu"), 4, first, cache=tmp_path / "s")
    forget(cli_runs / "original", first, "retrain", out=tmp_path / "a", device="cpu", per_example_mia=attack)
    _, two = forget(tmp_path / "a", ForgetRequest.for_ids(ids[30:60]), "retrain", out=tmp_path / "b", device="cpu",
                    per_example_mia=attack)
    tests = [r["per_example"] for r in two["evidence"]["per_request"]]
    assert [t["deleted"] for t in tests] == [30, 30] and all(t["p_kept_original"] is not None for t in tests)
    ck = load_checkpoint(tmp_path / "a", "cpu")
    reference = _noop_original(ck, [first], attack, "cpu").state_dict()
    root = load_checkpoint(cli_runs / "original", "cpu").model.state_dict()
    assert all(torch.equal(reference[k], root[k]) for k in root)
    assert not all(torch.equal(reference[k], v) for k, v in ck.model.state_dict().items())
    assert verify(tmp_path / "b", evidence=True, device="cpu", shadow_dir=tmp_path / "s").ok
