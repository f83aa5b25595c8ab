"""Sequential deletion requests: what one request forgot stays forgotten after the next; certificates
name the right hashes, and `verify` catches altered weights, an edited certificate and a missing parent."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

import obliviate
from obliviate import ForgetRequest, forget, load_data, unlearn
from obliviate.certificate import CERT_FILE
from obliviate.cli.main import app
from obliviate.data import Forgotten
from obliviate.errors import RequestError
from obliviate.io import file_sha256
from obliviate.lineage import IDS_FILE
from obliviate.metrics.accuracy import accuracy
from obliviate.training.trainer import load_block_assignment

runner = CliRunner()
FT = {"epochs": 3, "lr": 0.05}  # finetune on the digits CNN: lowers class-3 test accuracy, not to zero


def _class_acc(model, data, c: int) -> float:
    return accuracy(model, data.test.subset(torch.nonzero(data.test.y == c).flatten()))


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def chain(digits_run, tmp_path_factory):
    """original -> u1 (finetune, class 3) -> u2 (finetune, 150 ids): a saved two-request lineage."""
    root = tmp_path_factory.mktemp("lineage")
    data = load_data("digits")
    ids = data.train.ids[:150].tolist()
    forget(digits_run.run.path, ForgetRequest.for_classes(3), "finetune", out=root / "u1", params=FT, device="cpu")
    forget(root / "u1", ForgetRequest.for_ids(ids), "finetune", out=root / "u2", params=FT, device="cpu")
    return root, data, ids


def test_finetune_second_class_request_keeps_the_first_forgotten(digits_run, digits, tmp_path):
    u1, _ = forget(digits_run.run.path, ForgetRequest.for_classes(3), "finetune", out=tmp_path / "u1", params=FT,
                   device="cpu")
    u2, rec = forget(tmp_path / "u1", ForgetRequest.for_classes(5), "finetune", out=tmp_path / "u2", params=FT,
                     device="cpu")
    n3, n5 = (int((digits.train.y == c).sum()) for c in (3, 5))
    assert rec["retain_size"] == len(digits.train) - n3 - n5 and rec["forgotten_in_data"] == {"retain": 0}
    assert rec["lineage"]["cumulative"]["classes"] == [3, 5] and rec["original"] == str(digits_run.run.path.resolve())
    before = _class_acc(u1, digits, 3)
    assert _class_acc(u2, digits, 3) <= before + 0.05
    # the defect this guards against: the same request without the lineage trains class 3 back in
    back, _ = unlearn(u1, digits, ForgetRequest.for_classes(5), "finetune", params=FT, device="cpu",
                      forgotten=Forgotten())
    assert _class_acc(back, digits, 3) >= before + 0.1


def test_zero_glance_unsir_keeps_the_first_class_forgotten(digits_run, digits, tmp_path):
    u1, _ = forget(digits_run.run.path, ForgetRequest.for_classes(3), "unsir", out=tmp_path / "u1", device="cpu")
    u2, rec = forget(tmp_path / "u1", ForgetRequest.for_classes(5), "unsir", out=tmp_path / "u2", device="cpu")
    assert _class_acc(u1, digits, 3) < 0.2 and _class_acc(u2, digits, 3) < 0.2 and _class_acc(u2, digits, 5) < 0.2
    assert rec["touched"] == {"retain_subset": rec["touched"]["retain_subset"]}
    assert rec["forgotten_in_data"] == {"retain_subset": 0}
    cert = json.loads((tmp_path / "u2" / CERT_FILE).read_text())
    assert cert["data_access"]["forget_set_read"] is False and cert["method"]["zero_glance"] is True
    assert cert["evidence"]["per_request"][0]["request"] == "classes 3"
    assert cert["evidence"]["per_request"][0]["test_forget_acc"] < 0.2


def test_in_memory_unlearn_carries_the_lineage(digits_model, digits):
    u1, _ = unlearn(digits_model, digits, ForgetRequest.for_classes(3), "unsir", device="cpu")
    assert u1.obliviate_forgotten == Forgotten(classes=(3,))
    _, rec = unlearn(u1, digits, ForgetRequest.for_ids(digits.train.ids[:20].tolist()), "finetune",
                     params={"epochs": 1}, device="cpu")
    n3 = int((digits.train.y == 3).sum())
    new = int((digits.train.y[:20] != 3).sum())
    assert rec["forgotten_before"] == "classes 3" and rec["forget_size"] == new
    assert rec["retain_size"] == len(digits.train) - n3 - new


def test_retrain_after_ids_then_class_leaves_out_the_union(digits_run, digits, tmp_path):
    ids = digits.train.ids[:40].tolist()
    forget(digits_run.run.path, ForgetRequest.for_ids(ids), "retrain", out=tmp_path / "r1", params={"epochs": 2},
           device="cpu")
    r2, rec = forget(tmp_path / "r1", ForgetRequest.for_classes(3), "retrain", out=tmp_path / "r2",
                     params={"epochs": 2}, device="cpu")
    in3 = int((digits.train.y[:40] == 3).sum())
    assert rec["retain_size"] == len(digits.train) - int((digits.train.y == 3).sum()) - (40 - in3)
    assert rec["forgotten_in_data"] == {"retain": 0} and _class_acc(r2, digits, 3) < 0.05
    assert rec["lineage"]["cumulative"]["ids"] == sorted(ids) and rec["lineage"]["depth"] == 2


def test_deepobliviate_rebuilds_the_union_from_the_original_snapshots(digits_blocks_run, digits, tmp_path):
    path = digits_blocks_run.run.path
    ids, blocks = load_block_assignment(path)
    first, second = ids[blocks == 6][:5].tolist(), ids[blocks == 7][:5].tolist()
    params = {"epsilon": 0}  # exact retraining from the first touched block: deterministic, comparable
    forget(path, ForgetRequest.for_ids(first), "deepobliviate", out=tmp_path / "d1", params=params, device="cpu")
    d2, rec = forget(tmp_path / "d1", ForgetRequest.for_ids(second), "deepobliviate", out=tmp_path / "d2",
                     params=params, device="cpu")
    assert rec["restarted_from_original"] and rec["info"]["first_block"] == 7
    once, _ = unlearn(digits_blocks_run.model, digits, ForgetRequest.for_ids(first + second), "deepobliviate",
                      params=params, device="cpu", run_path=path)
    for k, v in once.state_dict().items():
        assert torch.equal(v, d2.state_dict()[k]), k


def test_a_repeated_request_is_refused_with_one_line(chain):
    root, _, ids = chain
    with pytest.raises(RequestError, match="only repeats what the model already forgot"):
        forget(root / "u2", ForgetRequest.for_classes(3), "finetune", out=root / "again")
    r = _run("forget", "--checkpoint", root / "u2", "--method", "finetune", "--forget-class", "3",
             "--out", root / "again")
    assert r.exit_code == 2 and "nothing new to forget" in r.output and "Traceback" not in r.output
    assert not (root / "again").exists()


def test_certificate_names_the_right_hashes(chain):
    root, data, ids = chain
    cert = json.loads((root / "u2" / CERT_FILE).read_text())
    for name in ("model.pt", "run.json", IDS_FILE):
        assert cert["files"][name] == file_sha256(root / "u2" / name)
    assert cert["parent"]["model_sha256"] == file_sha256(root / "u1" / "model.pt")
    assert cert["parent"]["certificate_sha256"] == file_sha256(root / "u1" / CERT_FILE)
    n_new = len(set(map(int, ids)) - set(data.train.ids[data.train.y == 3].tolist()))
    assert cert["cumulative"]["classes"] == [3] and cert["cumulative"]["ids_count"] == len(set(map(int, ids)))
    assert cert["cumulative"]["ids_sha256"] == file_sha256(root / "u2" / IDS_FILE)
    assert cert["request"]["new_samples"] == n_new
    assert cert["data"]["source_hash"] == data.source_hash and cert["method"]["name"] == "finetune"
    assert cert["data_access"]["forgotten_in_data"] == {"retain": 0} and cert["versions"]["torch"]
    ev = cert["evidence"]
    assert set(ev) >= {"forget_acc", "test_forget_acc", "retained_test_acc", "mia_loss_lr", "per_request"}
    assert 0.0 <= ev["mia_loss_lr"] <= 1.0 and ev["retained_test_acc"] > 0.8
    assert [r["request"] for r in cert["requests"]] == ["classes 3", "150 ids"]


def test_verify_passes_untouched_runs_and_fails_tampering(chain, tmp_path):
    root, _, _ = chain
    res = obliviate.verify(root / "u2", evidence=True)
    assert res.ok and not res.problems, res.problems
    r = _run("verify", root / "u2")  # hashes match; finetune left class 3 recognisable: verdict "no", exit 3
    assert r.exit_code == 3 and "verified" in r.output and "forgotten: NO" in r.output, r.output
    work = tmp_path / "copy"
    shutil.copytree(root, work)  # relative parent pointers: a moved tree still verifies
    assert obliviate.verify(work / "u2").ok
    (work / "u1" / "model.pt").write_bytes((work / "u1" / "model.pt").read_bytes() + b"x")
    res = obliviate.verify(work / "u2")
    assert not res.ok and any("parent's weights" in p for p in res.problems)
    r = _run("verify", work / "u2")
    assert r.exit_code == 1 and "mismatch" in r.output and "Traceback" not in r.output
    cert_path = work / "u2" / CERT_FILE
    untouched = cert_path.read_text()
    cert = json.loads(untouched)
    cert["cumulative"]["classes"] = []
    cert_path.write_text(json.dumps(cert))
    assert any("was edited" in p for p in obliviate.verify(work / "u2").problems)
    cert["files"] = ["model.pt"]  # edited into another shape: still one line, no traceback
    cert_path.write_text(json.dumps(cert))
    assert any("malformed" in p for p in obliviate.verify(work / "u2").problems)
    cert_path.write_text(untouched)
    shutil.rmtree(work / "u1")
    shutil.move(str(root / "u1"), str(tmp_path / "away"))  # absolute pointer gone too
    try:
        res = obliviate.verify(work / "u2")
        assert not res.ok and any("parent run" in p and "missing" in p for p in res.problems)
    finally:
        shutil.move(str(tmp_path / "away"), str(root / "u1"))


def test_history_prints_the_chain(chain):
    root, _, _ = chain
    chain_ = obliviate.history(root / "u2")
    assert [e["kind"] for e in chain_] == ["train", "forget", "forget"]
    assert chain_[-1]["cumulative"] == "classes 3 + 150 ids"
    r = _run("history", root / "u2")
    assert r.exit_code == 0 and "classes 3 + 150 ids" in r.output


def test_evaluate_reports_earlier_requests_and_wants_the_cumulative_reference(chain, digits_run, tmp_path):
    root, _, ids = chain
    forget(digits_run.run.path, ForgetRequest.for_classes(3), "retrain", out=tmp_path / "r1", params={"epochs": 1},
           device="cpu")
    args = ("evaluate", "--original", digits_run.run.path, "--unlearned", root / "u2", "--no-figures", "--no-relearn")
    r = _run(*args, "--retrained", tmp_path / "r1", "--out", tmp_path / "e1")
    assert r.exit_code == 2 and "not the same forgotten set" in r.output
    forget(tmp_path / "r1", ForgetRequest.for_ids(ids), "retrain", out=tmp_path / "r2", params={"epochs": 1},
           device="cpu")
    r = _run(*args, "--retrained", tmp_path / "r2", "--out", tmp_path / "e2")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert m["earlier_requests"] == ["classes 3"] and m["forgotten_before"] == "classes 3"
    assert len(m["earlier_forget_acc"]) == 1 and m["earlier_test_forget_acc"][0] is not None
    assert "still forgotten" in r.output


@pytest.mark.parametrize("retrain_subset,unsir_subset", [(1000, 200), (200, 1000)])
def test_evaluate_compares_the_forgotten_set_not_the_subset_size(digits_run, tmp_path, retrain_subset, unsir_subset):
    """Issue 16: D_sub's size is a method input; a reference that forgot the same class is the right one."""
    ck = digits_run.run.path
    forget(ck, ForgetRequest.for_classes(7, subset_per_class=retrain_subset), "retrain", out=tmp_path / "r",
           params={"epochs": 1}, device="cpu")
    forget(ck, ForgetRequest.for_classes(7, subset_per_class=unsir_subset), "unsir", out=tmp_path / "u", device="cpu")
    forget(ck, ForgetRequest.for_classes(6, subset_per_class=unsir_subset), "unsir", out=tmp_path / "u6",
           device="cpu")
    args = ("evaluate", "--original", ck, "--retrained", tmp_path / "r", "--no-figures", "--no-relearn")
    r = _run(*args, "--unlearned", tmp_path / "u", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    r = _run(*args, "--unlearned", tmp_path / "u6", "--out", tmp_path / "e6")
    assert r.exit_code == 2 and "not the same forgotten set" in r.output and "classes 7" in r.output
