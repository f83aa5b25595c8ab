"""Every forget run says whether it forgot, by a rule it records: a failed deletion exits 3, keeps its run, and
`verify` re-checks the verdict (issue 24's finetune chain: not forgotten; UNSIR and FCALB: forgotten)."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import obliviate
from obliviate.certificate import CERT_FILE, _self_hash
from obliviate.cli.main import app
from obliviate.errors import ObliviateError
from obliviate.verdict import EXIT_NOT_FORGOTTEN, VerdictRule, answer, judge, summary

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _evidence(per_request, unseen=0.9, mia=0.5, loss_gap=0.1, original=None):
    """Evidence as ``measure_evidence`` writes it; the original (no-op reference) memorised the samples and the
    attack saw them, unless ``original`` says otherwise."""
    noop = {"retained_test_acc": unseen, "mia_loss_lr": 0.9 if mia is not None else None, "loss_gap": 0.5}
    return {"per_request": per_request, "retained_test_acc": unseen, "mia_loss_lr": mia, "loss_gap": loss_gap,
            "original": {**noop, **(original or {})}}


def _cls(acc, test_acc, name="classes 1"):
    return {"request": name, "forget_acc": acc, "test_forget_acc": test_acc}


def _ids(acc, name="50 ids", original_acc=1.0):
    return {"request": name, "forget_acc": acc, "test_forget_acc": None, "original_forget_acc": original_acc}


RULE = VerdictRule().resolve(10)


def test_class_requests_are_judged_against_chance_level_on_train_and_held_out_samples():
    assert RULE["max_forget_acc"] == pytest.approx(0.1) and "1/num_classes" in RULE["text"]
    assert judge(_evidence([_cls(0.0, 0.05)]), [True], RULE)["forgotten"]
    assert not judge(_evidence([_cls(0.0, 0.58)]), [True], RULE)["forgotten"]  # held-out images still recognised
    # an earlier request that came back ("still forgotten") fails the whole chain
    assert not judge(_evidence([_cls(0.4, 0.3, "classes 8"), _cls(0.0, 0.0)]), [True, True], RULE)["forgotten"]
    loose = VerdictRule(max_forget_acc=0.7).resolve(10)
    assert judge(_evidence([_cls(0.66, 0.58)]), [True], loose)["forgotten"] and loose["max_forget_acc_from"] == "given"


def test_sample_requests_need_unseen_level_accuracy_and_a_blind_attack():
    assert judge(_evidence([_ids(0.92)], unseen=0.9, mia=0.55), [False], RULE)["forgotten"]
    assert not judge(_evidence([_ids(1.0)], unseen=0.9), [False], RULE)["forgotten"]  # memorised
    assert not judge(_evidence([_ids(0.9)], mia=0.8), [False], RULE)["forgotten"]  # the attack tells them apart
    # a model that never saw mislabelled (poisoned) samples gets them wrong and the attack finds their high loss:
    # one-sided on purpose, that is not a failed deletion
    assert judge(_evidence([_ids(0.0)], unseen=0.99, mia=1.0, loss_gap=-5.0), [False], RULE)["forgotten"]
    v = judge(_evidence([_ids(0.9)], mia=None), [False], RULE)  # too few samples for the attack: not measured
    assert v["forgotten"] and [c["passed"] for c in v["checks"]] == [True, None]


def test_deleted_samples_are_judged_by_a_binomial_test_and_too_few_are_not_shown():
    """Above the band, a sample check fails only when the excess is significant: 17 of 20 right at 0.7 unseen
    accuracy happens 11 % of the time (passes), 50 of 50 at 0.9 0.5 % (fails). 3 of 3 at 0.9 happens 73 % of the
    time whatever the model did: too few to tell, so not measured — and with nothing measured, not "yes"."""
    some = judge(_evidence([{**_ids(0.85, "20 ids"), "size": 20}], unseen=0.7, mia=None), [False], RULE)
    assert some["forgotten"] and some["checks"][0]["p"] == pytest.approx(0.1071, abs=1e-4)
    many = judge(_evidence([{**_ids(1.0), "size": 50}], unseen=0.9), [False], RULE)
    assert not many["forgotten"] and many["checks"][0]["p"] == pytest.approx(0.9 ** 50)
    few = judge(_evidence([{**_ids(1.0, "3 ids"), "size": 3}], unseen=0.9, mia=None), [False], RULE)
    assert not few["forgotten"] and few["checks"][0]["passed"] is None
    assert summary(few).startswith("forgotten: NOT SHOWN") and "3 samples: too few" in summary(few)
    exact = judge({**_evidence([{**_ids(1.0, "3 ids"), "size": 3}], unseen=0.9, mia=None), "by_construction": True},
                  [False], RULE)
    assert exact["forgotten"] and exact["checks"][-1]["bound"].startswith("by construction")
    # retrained from scratch decides even where a 20-sample loss attack happens to read 0.7; the line says so
    noisy = judge({**_evidence([{**_ids(0.9, "20 ids"), "size": 20}], mia=0.7), "by_construction": True}, [False], RULE)
    assert noisy["forgotten"] and "by construction" in summary(noisy) and "disagrees on: 20 ids: loss" in summary(noisy)
    # each request needs evidence of its own: a measured class request after 3 ids does not show the 3 ids
    chain = judge(_evidence([{**_ids(1.0, "3 ids"), "size": 3}, _cls(0.0, 0.0)]), [False, True], RULE)
    assert not chain["forgotten"] and answer(chain) == "not shown"
    # rules of earlier versions are judged as they were: no alpha, the band alone; alpha without a version,
    # band or test, nothing "not measured"
    band_only = {k: v for k, v in RULE.items() if k not in ("alpha", "version")}
    assert not judge(_evidence([{**_ids(0.85, "20 ids"), "size": 20}], unseen=0.7), [False], band_only)["forgotten"]
    first_test = {k: v for k, v in RULE.items() if k != "version"}
    assert judge(_evidence([{**_ids(1.0, "3 ids"), "size": 3}], unseen=0.9, mia=None), [False], first_test)["forgotten"]
    for broken in ({**_ids(float("nan")), "size": 5}, {**_ids(1.0), "size": "5"}):  # never a crash
        assert judge(_evidence([broken], mia=None), [False], RULE)["checks"][0]["passed"] in (None, False)
    assert judge(_evidence([_ids(0.5)], unseen=float("nan"), mia=None), [False], RULE)["checks"][0]["passed"] is None


def test_a_sample_check_the_original_passes_too_is_not_measured():
    """Rule 4 (measured: a no-op on 100 random samples of a model that does not memorise was certified): accuracy
    at the unseen level and a blind attack show nothing where the original, which trained on the samples, shows
    them too; a check the original fails still counts, and rules before version 4 are judged as they were."""
    blind = {"mia_loss_lr": 0.52, "loss_gap": 0.01}
    noop = judge(_evidence([{**_ids(0.75, "100 ids", original_acc=0.76), "size": 100}], unseen=0.8, mia=0.53,
                           original={**blind, "retained_test_acc": 0.8}), [False], RULE)
    assert answer(noop) == "not shown" and [c["passed"] for c in noop["checks"]] == [None, None]
    assert "original model, which trained on them, passes it too (0.76)" in summary(noop), summary(noop)
    assert answer(judge(_evidence([{**_ids(0.75, "100 ids", original_acc=0.76), "size": 100}], unseen=0.8, mia=0.53,
                                  original=blind), [False], {**RULE, "version": 3})) == "yes"
    # the original memorised them (100/100 at 0.8 unseen) and the attack saw them: both checks count
    done = judge(_evidence([{**_ids(0.78, "100 ids"), "size": 100}], unseen=0.8, mia=0.53), [False], RULE)
    assert answer(done) == "yes" and [c["passed"] for c in done["checks"]] == [True, True]
    # only the attack tells the original's samples apart: it alone shows the deletion
    one = judge(_evidence([{**_ids(0.78, "100 ids", original_acc=0.82), "size": 100}], unseen=0.8, mia=0.53),
                [False], RULE)
    assert answer(one) == "yes" and [c["passed"] for c in one["checks"]] == [None, True]
    # no original in the evidence (its run could not be loaded): nothing shown, never "yes" by default
    gone = _evidence([{**_ids(0.78, "100 ids"), "size": 100}], unseen=0.8, mia=0.53)
    del gone["original"], gone["per_request"][0]["original_forget_acc"]
    assert answer(judge(gone, [False], RULE)) == "not shown" and "not measured on the original" in summary(
        judge(gone, [False], RULE))


def test_a_no_op_on_samples_the_model_never_memorised_is_not_certified(digits_run):
    """On digits the original's accuracy on 5 % of its training samples is at the unseen level's ceiling and the
    loss attack reads ~0.5 on it: a fine-tune that changes nothing passed both checks under rule 3 and was
    certified; now it is NOT SHOWN, while retraining stays forgotten by construction."""
    request = obliviate.ForgetRequest.for_fraction(0.05)
    _, noop = obliviate.forget(digits_run.run.path, request, "finetune", params={"lr": 1e-9, "epochs": 0.01},
                               device="cpu")
    evidence = noop["evidence"]
    assert evidence["per_request"][0]["original_forget_acc"] == evidence["per_request"][0]["forget_acc"]
    assert answer(noop["verdict"]) == "not shown", summary(noop["verdict"])
    assert answer(judge(evidence, [False], {**RULE, "version": 3})) == "yes"  # the hole rule 4 closes
    _, exact = obliviate.forget(digits_run.run.path, request, "retrain", device="cpu")
    assert answer(exact["verdict"]) == "yes" and exact["evidence"]["original"] == evidence["original"]


def test_exact_deletion_of_three_samples_is_forgotten_and_a_no_op_is_not_shown(digits_run, tmp_path):
    """retrain is a deletion by construction even where accuracy cannot tell (no band: its 3/3 right is above its
    0.99 unseen accuracy); a fine-tune that changes nothing on 3 samples is not certified: exit 3, NOT SHOWN."""
    ids = [int(i) for i in obliviate.load_checkpoint(digits_run.run.path).data.train.ids[:3]]
    _, record = obliviate.forget(digits_run.run.path, obliviate.ForgetRequest.for_ids(ids), "retrain", device="cpu",
                                 rule=VerdictRule(acc_band=0.0))
    assert record["evidence"]["per_request"][0]["forget_acc"] > record["evidence"]["retained_test_acc"]
    assert record["evidence"]["by_construction"] and record["verdict"]["forgotten"], record["verdict"]
    (tmp_path / "ids.txt").write_text("\n".join(map(str, ids)))
    r = _run("forget", "--checkpoint", digits_run.run.path, "--method", "finetune", "--param", "lr=1e-9",
             "--param", "epochs=0.01", "--forget-ids", tmp_path / "ids.txt", "--out", tmp_path / "noop")
    assert r.exit_code == EXIT_NOT_FORGOTTEN and "NOT SHOWN" in r.output, r.output
    assert obliviate.verify(tmp_path / "noop").ok  # written whole, its verdict re-checks
    assert obliviate.history(tmp_path / "noop")[-1]["verdict"] == "not shown"  # not "NO": nothing failed
    r = _run("history", tmp_path / "noop")
    assert r.exit_code == 0 and "could not be shown forgotten" in " ".join(r.output.split()), r.output
    # a certificate from before the test (no alpha in its rule, no sizes in its evidence) said "yes" here by the
    # band alone; it is judged as it was then, so it still verifies with its evidence re-measured
    cert = json.loads((tmp_path / "noop" / CERT_FILE).read_text())
    del cert["verdict"]["rule"]["alpha"], cert["verdict"]["rule"]["version"], cert["evidence"]["by_construction"]
    for entry in cert["evidence"]["per_request"]:
        del entry["size"]
    cert["verdict"]["forgotten"] = True
    cert["certificate_sha256"] = _self_hash(cert)
    (tmp_path / "noop" / CERT_FILE).write_text(json.dumps(cert))
    res = obliviate.verify(tmp_path / "noop", evidence=True)
    assert res.ok and res.verdict["forgotten"], res.problems


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_a_bound_outside_0_1_is_a_user_error(bad):
    with pytest.raises(ObliviateError, match=r"in \[0, 1\]"):
        VerdictRule(max_forget_acc=bad)


def test_max_forget_acc_on_the_command_line_is_checked_before_any_work(tmp_path):
    r = _run("forget", "--checkpoint", tmp_path / "none", "--method", "finetune", "--forget-class", 1,
             "--max-forget-acc", 2, "--out", tmp_path / "o")
    assert r.exit_code == 2 and "max-forget-acc must be a number in [0, 1]" in r.output, r.output


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Issue 24's model: digits, cnn, 6 epochs, seed 4."""
    root = tmp_path_factory.mktemp("verdict")
    r = _run("train", "--dataset", "digits", "--model", "cnn", "--epochs", 6, "--seed", 4, "--out", root / "orig")
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.slow
@pytest.mark.parametrize("method, forgotten", [("finetune", False), ("unsir", True), ("fcalb", True)])
def test_the_issue_chain_ends_with_a_verdict_and_its_exit_code(original, method, forgotten, tmp_path):
    root = original
    first, second = root / f"{method}-8", root / f"{method}-8-1"
    r = _run("forget", "--checkpoint", root / "orig", "--method", method, "--forget-class", 8, "--out", first)
    assert r.exit_code in (0, EXIT_NOT_FORGOTTEN), r.output
    r = _run("forget", "--checkpoint", first, "--method", method, "--forget-class", 1, "--out", second)
    cert = json.loads((second / CERT_FILE).read_text())
    assert cert["verdict"]["forgotten"] is forgotten and cert["verdict"]["rule"]["max_forget_acc"] == 0.1
    if forgotten:
        assert r.exit_code == 0 and "forgotten: yes" in r.output, r.output
        assert _run("verify", second, "--evidence").exit_code == 0
        chain = obliviate.history(second)
        assert chain[0]["verdict"] is None and chain[-1]["verdict"] == "yes"  # the training run has no verdict
        return
    assert r.exit_code == EXIT_NOT_FORGOTTEN and "forgotten: NO" in r.output and "kept for inspection" in r.output
    assert "classes 1: accuracy on held-out samples of the class" in r.output, r.output
    assert (second / "model.pt").exists() and obliviate.verify(second).ok  # written, whole, for inspection
    r = _run("verify", second, "--evidence")
    assert r.exit_code == EXIT_NOT_FORGOTTEN and "verified" in r.output and "forgotten: NO" in r.output, r.output
    assert obliviate.history(second)[-1]["verdict"] == "NO"  # history shows it too
    r = _run("history", second)
    assert r.exit_code == 0 and "NO" in r.output and "judged not forgotten" in r.output, r.output
    # a verdict that does not follow from its evidence is a mismatch, even with the certificate's hash redone
    work = tmp_path / "edited"
    shutil.copytree(root, work)
    cert["verdict"]["forgotten"] = True
    cert["certificate_sha256"] = _self_hash(cert)
    (work / second.name / CERT_FILE).write_text(json.dumps(cert))
    res = obliviate.verify(work / second.name)
    assert not res.ok and any("forgotten=False by the recorded rule" in p for p in res.problems), res.problems


def test_forget_in_python_returns_the_evidence_and_the_verdict(digits_run):
    _, record = obliviate.forget(digits_run.run.path, obliviate.ForgetRequest.for_classes(3), "unsir", device="cpu")
    assert record["verdict"]["forgotten"] and record["verdict"]["rule"]["max_forget_acc"] == pytest.approx(0.1)
    assert record["evidence"]["per_request"][0]["forget_acc"] <= 0.1
    _, record = obliviate.forget(digits_run.run.path, obliviate.ForgetRequest.for_classes(3), "unsir", device="cpu",
                                 rule=VerdictRule(max_forget_acc=0.0, acc_band=0.0))
    rule = record["verdict"]["rule"]
    assert rule["max_forget_acc"] == 0.0 and rule["max_forget_acc_from"] == "given"


def test_sample_bands_on_the_command_line_are_checked_and_recorded(digits_run, tmp_path):
    base = ("forget", "--checkpoint", digits_run.run.path, "--method", "finetune", "--forget-fraction", 0.05,
            "--param", "epochs=0.25")
    r = _run(*base, "--acc-band", -1, "--out", tmp_path / "bad")
    assert r.exit_code == 2 and "acc-band must be a number in [0, 1]" in r.output and not (tmp_path / "bad").exists()
    r = _run(*base, "--acc-band", 0.0, "--mia-band", 0.3, "--out", tmp_path / "o")
    assert r.exit_code in (0, EXIT_NOT_FORGOTTEN), r.output
    rule = json.loads((tmp_path / "o" / CERT_FILE).read_text())["verdict"]["rule"]
    assert rule["acc_band"] == 0.0 and rule["mia_band"] == 0.3 and "<= 0.8" in rule["text"]
