"""Deletion certificates: what a forget run deleted, from which model, by what, with what evidence.

``certificate.json`` is written last in a forget run directory (atomically). It names every file it
vouches for by SHA-256 (the new weights, run.json, the forgotten-ids file, the parent's weights and
certificate) and carries a SHA-256 of its own content, so ``verify`` can tell later whether the
served weights are those the record names and whether the record was edited. It is integrity, not
authenticity: whoever can rewrite the files can rewrite the hashes; keep the certificate's own hash
somewhere else (a ticket, a signed log) to pin it. Fields are documented in ``docs/certificate.md``.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .backdoor_runs import replant
from .data import DataBundle, ForgetRequest, Forgotten, load_data
from .data.splits import DataSpec
from .data.user import as_bundle
from .env import pick_device
from .errors import CheckpointError, ObliviateError
from .io import file_sha256, read_regular, to_json, write_json
from .lineage import IDS_FILE, INLINE_IDS, locate
from .methods.base import SNAPSHOTS, TRAINED_WITHOUT
from .metrics.accuracy import accuracy
from .metrics.lira import PerExampleMIA, deletion_test, shadow_set, target_phi, target_samples
from .metrics.mia import mia_loss_lr
from .metrics.outputs import per_sample_loss
from .models.foreign import ForeignClassifier
from .training import TrainConfig
from .training.checkpoint import MODEL_FILE, RUN_FILE, SNAP_DIR, open_run
from .verdict import answer, judge

CERT_FILE = "certificate.json"
FORMAT = "obliviate-certificate/1"
MIA_MIN = 20  # fewer samples a side: no attack score (a 10-fold 90/10 split of 5 + 5 samples is not defined)
EVIDENCE_TOL = 1e-4  # recomputed evidence may differ by float noise only (same data, same weights)


def _self_hash(cert: dict) -> str:
    body = {k: v for k, v in cert.items() if k != "certificate_sha256"}
    return hashlib.sha256(to_json(body).encode()).hexdigest()


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _test_part(data: DataBundle, classes, inside: bool):
    y = data.test.y.cpu().numpy()
    pos = np.flatnonzero(np.isin(y, classes) == inside)
    return data.test.subset(torch.as_tensor(pos, dtype=torch.long)) if len(pos) else None


def by_construction(record: dict) -> bool:
    """Whether the run's method trained its model from scratch without every forgotten sample (its record says)."""
    return bool((record.get("info") or {}).get(TRAINED_WITHOUT))


def measure_evidence(model: torch.nn.Module, data: DataBundle, requests: list[ForgetRequest], seed: int = 0,
                     trained_without: bool = False, attack: PerExampleMIA | None = None,
                     original: torch.nn.Module | None = None) -> dict:
    """Evidence of the last of ``requests`` (applied after the others), on training and held-out data.

    Needs no retrained model: accuracy on everything forgotten so far and on the test samples of the
    forgotten / retained classes, per request ("still forgotten"), and the NeurIPS-kit loss attack on
    this request's samples vs unseen test samples (of the same classes for a class request). Given the
    ``original`` model (the root of the lineage, which trained on every sample), a lineage with a sample request
    also gets the same accuracy and attack on the original (``original_forget_acc``, ``original``): the verdict's
    no-op reference, since a check the original passes too cannot tell a deletion from none. With ``attack``
    (which needs ``original``), each sample request also gets the per-example attack's rank tests
    (``lira.deletion_test``); its shadows are trained once and cached.
    """
    train, nc = data.train, data.num_classes
    sets = [Forgotten.of(r, train, nc) for r in requests]
    prior = Forgotten()
    for s in sets[:-1]:
        prior = prior.union(s)
    everything = prior.union(sets[-1])
    new = requests[-1].resolve(train, nc, prior)
    last = requests[-1]
    unseen = _test_part(data, last.classes, True) if last.classes else _test_part(data, everything.classes, False)
    model = model.eval()
    noop = original is not None and not all(r.classes for r in requests)  # the sample checks' no-op reference
    original = original.eval() if noop else original
    per_request = []
    for r, s in zip(requests, sets):
        deleted = train.subset(np.flatnonzero(s.mask(train)))
        per_request.append({"request": r.describe(), "size": int(len(deleted)),
                            "forget_acc": _num(accuracy(model, deleted)),
                            "test_forget_acc": _num(accuracy(model, _test_part(data, r.classes, True)))
                            if r.classes else None,
                            **({"original_forget_acc": _num(accuracy(original, deleted))}
                               if noop and not r.classes else {})})
    return {
        "forget_acc": _num(accuracy(model, train.subset(np.flatnonzero(everything.mask(train))))),
        "request_forget_acc": _num(accuracy(model, new.forget(train))),
        "test_forget_acc": _num(accuracy(model, _test_part(data, everything.classes, True)))
        if everything.classes else None,
        "retained_test_acc": _num(accuracy(model, _test_part(data, everything.classes, False))),
        "mia_loss_lr": _num(mia_loss_lr(model, new.forget(train), unseen, seed=seed)) if _attack_fits(new, unseen)
        else None,
        "loss_gap": _loss_gap(model, new.forget(train), unseen),
        "per_request": per_request, "seed": seed, "by_construction": bool(trained_without),
        **({"original": _noop_reference(original, data, new, unseen, everything, seed)} if noop else {}),
        **(_per_example(model, original, data, requests, sets, everything, attack, seed, per_request)
           if attack else {}),
    }


def _noop_reference(original, data: DataBundle, new, unseen, everything: Forgotten, seed: int) -> dict:
    """The newest request's unseen accuracy and loss attack on the ``original`` (which saw every sample)."""
    forget = new.forget(data.train)
    return {"retained_test_acc": _num(accuracy(original, _test_part(data, everything.classes, False))),
            "mia_loss_lr": _num(mia_loss_lr(original, forget, unseen, seed=seed)) if _attack_fits(new, unseen)
            else None,
            "loss_gap": _loss_gap(original, forget, unseen)}


def _per_example(model, original, data: DataBundle, requests: list[ForgetRequest], sets: list, everything: Forgotten,
                 attack: PerExampleMIA, seed: int, per_request: list[dict]) -> dict:
    """Adds each sample request's ``per_example`` tests to ``per_request``; returns the attack's settings."""
    if original is None:
        raise ObliviateError("the per-example evidence needs the original model (the lineage's root)")
    shadows = shadow_set(attack, data, next(model.parameters()).device)
    phi, original_phi = target_phi(model, data), target_phi(original.eval(), data)
    retain = data.train.subset(np.flatnonzero(~everything.mask(data.train)))
    for entry, r, s in zip(per_request, requests, sets):
        if not r.classes:
            deleted = data.train.subset(np.flatnonzero(s.mask(data.train)))
            targets = target_samples(data, deleted, retain, seed)
            entry["per_example"] = deletion_test(shadows, phi, targets, original_phi)
    return {"per_example": {"shadows": attack.shadows, "seed": attack.seed, "max_epochs": attack.max_epochs,
                            "shadow_key": shadows.key}}


def _attack_fits(new, unseen) -> bool:
    return min(len(new.forget_pos), len(unseen) if unseen is not None else 0) >= MIA_MIN


def _loss_gap(model: torch.nn.Module, forget, unseen) -> float | None:
    """Mean loss on unseen samples minus on this request's samples: > 0 when the model fits the deleted
    samples better than unseen ones (the direction in which a loss attack means "still remembered")."""
    if forget is None or unseen is None or not len(forget) or not len(unseen):
        return None
    return _num(float(np.mean(per_sample_loss(model, unseen)) - np.mean(per_sample_loss(model, forget))))


def build_certificate(out: Path, record: dict, parent: Path, parent_record: dict, evidence: dict,
                      preset: str | None, verdict: dict | None = None) -> dict:
    """The certificate of a saved forget run ``out`` (model.pt and run.json already written)."""
    out = Path(out)
    lin = record["lineage"]
    parent_cert = parent / CERT_FILE
    files = {MODEL_FILE: file_sha256(out / MODEL_FILE), RUN_FILE: file_sha256(out / RUN_FILE)}
    if "ids_file" in lin["cumulative"]:
        files[IDS_FILE] = file_sha256(out / IDS_FILE)
    request = ForgetRequest.from_dict(record["request"])
    root = Path(lin["original"]["path"])
    cert = {
        "format": FORMAT, "run": str(out.resolve()), "files": files,
        "parent": {**lin["parent"], "kind": parent_record.get("kind"),
                   "model_sha256": file_sha256(parent / MODEL_FILE),
                   "run_json_sha256": file_sha256(parent / RUN_FILE),
                   "certificate_sha256": file_sha256(parent_cert) if parent_cert.exists() else None},
        "original": {**lin["original"], "run_json_sha256": file_sha256(root / RUN_FILE)},
        "depth": lin["depth"],
        "request": _request_summary(record["request"], request, record["forget_size"]),
        "cumulative": {k: v for k, v in lin["cumulative"].items() if k != "ids"},
        "requests": [{"request": ForgetRequest.from_dict(r["request"]).describe(), "method": r["method"],
                      "run": r["run"]} for r in lin["requests"]],
        "data": {"name": record["data"].get("name"), "source_hash": record["data"].get("source_hash"),
                 "spec": record["data"].get("spec")},
        "method": {"name": record["method"], "params": record["params"], "preset": preset,
                   "zero_glance": record["zero_glance"]},
        "versions": record["versions"], "device": record["device"], "seed": record["seed"],
        "seconds": record["seconds"], "finished": record["finished"],
        "data_access": {"declared": record["declared"], "touched": record["touched"],
                        "forgotten_in_data": record.get("forgotten_in_data", {}),
                        "forget_set_read": "forget" in record["touched"],
                        "restarted_from_original": record.get("restarted_from_original", False)},
        "evidence": evidence,
    }
    if verdict is not None:
        cert["verdict"] = verdict
    cert["certificate_sha256"] = _self_hash(cert)
    return cert


def _request_summary(raw: dict, request: ForgetRequest, new_samples: int) -> dict:
    """The request as recorded; many ids become their count and SHA-256 (as the cumulative ids do)."""
    out = {**raw, "description": request.describe(), "new_samples": int(new_samples)}
    if len(request.ids) > INLINE_IDS:
        ids = Forgotten(ids=request.ids)
        out.update(ids=None, ids_count=len(ids.ids), ids_sha256=ids.ids_sha256())
    return out


def write_certificate(out: Path, cert: dict) -> Path:
    write_json(Path(out) / CERT_FILE, cert)
    return Path(out) / CERT_FILE


@dataclass
class VerifyResult:
    """``ok`` when every hash (and, if asked, every evidence value) matched; ``problems``: one line each."""

    run: Path
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was checked, for the report
    verdict: dict | None = None  # the run's verdict, re-checked (None: its certificate has none)

    def fail(self, line: str) -> None:
        self.ok = False
        if line not in self.problems:  # every link of a chain checks the same original
            self.problems.append(line)


def load_certificate(path: Path) -> dict:
    cert_path = Path(path) / CERT_FILE
    if not cert_path.exists():
        raise CheckpointError(f"{path} has no {CERT_FILE}")
    try:
        cert = json.loads(read_regular(cert_path, "certificate"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{cert_path} is not valid JSON ({exc})") from None
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        raise CheckpointError(f"{cert_path} is not an obliviate certificate (format {FORMAT} expected)")
    return cert


def _check_file(res: VerifyResult, path: Path, expected: str | None, what: str,
                source: str = "the certificate") -> None:
    if not path.exists():
        res.fail(f"{path}: {what} is missing")
        return
    try:
        actual = file_sha256(path, what=what)  # a pipe or device is refused unread, not waited on
    except ObliviateError as exc:
        res.fail(str(exc))
        return
    if actual != expected:
        res.fail(f"{path}: {what} does not match the SHA-256 in {source}")
    elif str(path) not in res.checked:
        res.checked.append(str(path))


def _verify_original(res: VerifyResult, run: Path, cert: dict) -> None:
    """The original training run's ``run.json`` and, when this run was rebuilt from its snapshots
    (DeepObliviate), the block index and every θ_j against the hashes that record holds.

    Why: the original's record is nobody's certificate file, and it is what binds the snapshots a
    DeepObliviate result was computed from; a flipped byte there, or a swapped snapshot, must show here.
    """
    orig = cert.get("original") or {}
    if orig.get("run_json_sha256") is None:  # a certificate made before this field existed
        return
    root = locate(run, orig)
    record_path = root / RUN_FILE
    _check_file(res, record_path, orig["run_json_sha256"], "the original run's record")
    if str(record_path) not in res.checked or SNAPSHOTS not in (cert.get("data_access") or {}).get("declared", ()):
        return
    try:
        snaps = open_run(root).record.get("snapshots")
    except CheckpointError as exc:
        res.fail(str(exc))
        return
    hashes = snaps.get("sha256") if isinstance(snaps, dict) else None
    if not isinstance(hashes, dict):
        res.fail(f"{record_path}: records no SHA-256 of the snapshots {run} was rebuilt from")
        return
    for name, sha in sorted(hashes.items()):
        _check_file(res, root / SNAP_DIR / str(name), sha, f"the original's snapshot {name}", "the original's record")


def _verify_one(res: VerifyResult, run: Path) -> tuple[dict | None, Path | None]:
    """Check one run's certificate and files; return (certificate, parent path to check next)."""
    try:
        cert = load_certificate(run)
    except CheckpointError as exc:
        res.fail(str(exc))
        return None, None
    if cert.get("certificate_sha256") != _self_hash(cert):
        res.fail(f"{run}/{CERT_FILE}: its content does not match its own SHA-256 (the certificate was edited)")
    for name, sha in (cert.get("files") or {}).items():
        _check_file(res, run / name, sha, name)
    parent = cert.get("parent") or {}
    ppath = locate(run, parent) if parent.get("path") else None
    if ppath is None or not ppath.is_dir():
        res.fail(f"{run}: parent run {parent.get('path')} is missing")
        return cert, None
    if ppath.resolve() == run.resolve():
        res.fail(f"{run}: the certificate names the run itself as its parent")
        return cert, None
    _check_file(res, ppath / MODEL_FILE, parent.get("model_sha256"), "the parent's weights")
    if parent.get("run_json_sha256") is not None and parent.get("kind") == "forget":  # the original's: below
        _check_file(res, ppath / RUN_FILE, parent["run_json_sha256"], "the parent's record")
    _verify_original(res, run, cert)
    if parent.get("certificate_sha256") is not None:
        _check_file(res, ppath / CERT_FILE, parent["certificate_sha256"], "the parent's certificate")
    return cert, (ppath if parent.get("kind") == "forget" else None)


def verify(path: str | Path, evidence: bool = False, device: str | None = None, model_class=None,
           data=None, shadow_dir: str | Path | None = None) -> VerifyResult:
    """Recompute every hash the certificate chain of ``path`` names, back to the original run.

    With ``evidence``, also reload the data set (its source hash must match) and re-measure the
    evidence from the weights; a run made from tensors or Datasets needs them again as ``data``. Evidence
    with the per-example attack reads its shadows from ``shadow_dir`` (default: the shadow cache), training
    any that are missing. Never raises for a mismatch: each one is a line in ``problems``.
    """
    run = Path(path)
    if not run.is_dir():
        raise CheckpointError(f"run directory {run} does not exist")
    res = VerifyResult(run)
    cert, nxt, seen = None, run, set()
    while nxt is not None and nxt.resolve() not in seen:
        seen.add(nxt.resolve())
        here = nxt
        try:
            c, nxt = _verify_one(res, here)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # hand-edited into another shape
            res.fail(f"{here}/{CERT_FILE} is malformed ({type(exc).__name__}: {exc})")
            c, nxt = None, None
        cert = cert or c
    now = None
    if evidence and cert is not None and res.ok:
        try:
            now = _verify_evidence(res, run, cert, device, model_class, data, shadow_dir)
        except (KeyError, TypeError, AttributeError, ValueError, ObliviateError) as exc:
            res.fail(f"{run}: cannot re-measure the evidence ({type(exc).__name__}: {exc})")
    if cert is not None and res.ok and "verdict" in cert:
        try:
            _verify_verdict(res, run, cert, now)
        except (KeyError, TypeError, AttributeError, ValueError, ObliviateError) as exc:
            res.fail(f"{run}: cannot re-check the verdict ({type(exc).__name__}: {exc})")
    return res


def _verify_verdict(res: VerifyResult, run: Path, cert: dict, now: dict | None) -> None:
    """Judge the recorded (and, when re-measured, the new) evidence again by the recorded rule."""
    recorded = cert["verdict"]
    classes = [bool(ForgetRequest.from_dict(r["request"]).classes) for r in open_run(run).record["lineage"]["requests"]]
    for what, ev in (("recorded", cert["evidence"]), ("re-measured", now)):
        if ev is None:
            continue
        again = judge(ev, classes, recorded["rule"])
        if again["forgotten"] != recorded["forgotten"]:
            res.fail(f"{run}: the {what} evidence gives forgotten={again['forgotten']} by the recorded rule, "
                     f"the certificate says forgotten={recorded['forgotten']}")
            return
    res.verdict = recorded
    res.checked.append(f"verdict of {run}")


def _verify_evidence(res: VerifyResult, run: Path, cert: dict, device: str | None,
                     model_class=None, given=None, shadow_dir=None) -> dict | None:
    spec = cert["data"]["spec"]
    if given is not None:
        data = as_bundle(given)
    elif isinstance(spec, dict) and spec.get("kind") == "user":
        raise ObliviateError("the run was made with data given as tensors or Datasets: pass the same data "
                             "(Python: verify(run, evidence=True, data=...)); the command line cannot re-load it")
    else:
        data = replant(load_data(DataSpec.from_dict(spec)), spec, run / CERT_FILE)
    if data.source_hash != cert["data"]["source_hash"]:
        res.fail(f"{run}: data set {data.name!r} has source hash {data.source_hash[:12]}, "
                 f"the certificate names {str(cert['data']['source_hash'])[:12]}")
        return None
    record = open_run(run).record
    requests = [ForgetRequest.from_dict(r["request"]) for r in record["lineage"]["requests"]]
    model = open_run(run).load_model(pick_device(device), model_class)
    attack = _recorded_attack(cert["evidence"], record, model, shadow_dir)
    noop = attack is not None or "original" in cert["evidence"]  # the no-op reference was measured: measure it again
    original = open_run(record["original"]).load_model(pick_device(device), model_class) if noop else None
    now = measure_evidence(model, data, requests, seed=cert["evidence"].get("seed", 0),
                           trained_without=by_construction(record), attack=attack, original=original)
    for key, then, value in _differences(cert["evidence"], now):
        res.fail(f"{run}: evidence {key} is {value} now, the certificate says {then}")
    res.checked.append(f"evidence of {run}")
    return now


def _recorded_attack(evidence: dict, record: dict, model, shadow_dir) -> PerExampleMIA | None:
    """The per-example attack the evidence was measured with (its settings and the run's recipe), or None."""
    settings = evidence.get("per_example")
    if not isinstance(settings, dict):
        return None
    given = {k: settings[k] for k in ("seed", "max_epochs") if settings.get(k) is not None}
    attack = PerExampleMIA(settings["shadows"], TrainConfig.from_dict(record["config"]), cache=shadow_dir, **given,
                           build=model.fresh if isinstance(model, ForeignClassifier) else None)
    return attack


def _differences(then, now, key: str = ""):
    """(key, then, now) for every leaf of the evidence that changed beyond float noise."""
    if isinstance(then, dict) and isinstance(now, dict):
        for k in then:
            yield from _differences(then[k], now.get(k), f"{key}.{k}" if key else k)
    elif isinstance(then, list) and isinstance(now, list) and len(then) == len(now):
        for i, (a, b) in enumerate(zip(then, now)):
            yield from _differences(a, b, f"{key}[{i}]")
    elif isinstance(then, (int, float)) and isinstance(now, (int, float)) and not isinstance(then, bool):
        if abs(float(then) - float(now)) > EVIDENCE_TOL:
            yield key, then, now
    elif then != now:
        yield key, then, now


def _recorded_verdict(run: Path) -> str:
    """The verdict a run's certificate states ("yes", "NO", "not shown", "none" before verdicts, "unreadable"); as
    recorded, not re-checked: ``verify`` re-checks it."""
    try:
        verdict = load_certificate(run).get("verdict")
    except CheckpointError:
        return "unreadable"
    if not isinstance(verdict, dict) or not isinstance(verdict.get("forgotten"), bool):
        return "none"
    return answer(verdict)


def history(path: str | Path) -> list[dict]:
    """The chain from the original training run to ``path``, oldest first, from each run.json."""
    chain, nxt, seen = [], Path(path), set()
    while nxt is not None and nxt.resolve() not in seen:
        seen.add(nxt.resolve())
        run = open_run(nxt)
        rec, cert_path = run.record, nxt / CERT_FILE
        entry = {"run": str(nxt), "kind": rec.get("kind"), "method": rec.get("method"),
                 "finished": rec.get("finished"), "model_sha256": file_sha256(run.model_path),
                 "certificate": cert_path.exists(), "verdict": _recorded_verdict(nxt) if cert_path.exists() else None}
        nxt = None
        if rec.get("kind") == "forget":
            entry["request"] = ForgetRequest.from_dict(rec["request"]).describe()
            lin = rec.get("lineage")
            if lin:
                cum = lin["cumulative"]
                parts = [f"classes {','.join(map(str, cum['classes']))}"] if cum["classes"] else []
                entry["cumulative"] = " + ".join(parts + ([f"{cum['ids_count']} ids"] if cum["ids_count"] else []))
                nxt = locate(Path(entry["run"]), lin["parent"])
            elif rec.get("original"):
                nxt = Path(rec["original"])
        chain.append(entry)
    return chain[::-1]
