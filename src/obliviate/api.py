"""The Python API the CLI is a thin layer over: load a checkpoint, forget, save."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backdoor_runs import replant
from .certificate import CERT_FILE, build_certificate, by_construction, measure_evidence, write_certificate
from .data import DataBundle, DataSpec, ForgetRequest, load_data
from .data.user import as_bundle
from .env import now_iso, pick_device, versions
from .errors import CheckpointError, ObliviateError
from .io import file_sha256
from .lineage import Lineage, lineage_record, read_lineage
from .methods import get_method, resolve_params, unlearn
from .methods.base import FORGOTTEN_ATTR
from .metrics.lira import PerExampleMIA, shadow_set
from .models import Classifier, ForeignClassifier
from .models.foreign import adopt
from .training import RunDir, TrainConfig, check_output_dir, finish_run, open_run
from .training.accuracy import accuracy
from .verdict import VerdictRule, judge


@dataclass
class Checkpoint:
    """A finished training run, loaded: the model, its data set (same splits) and its recipe."""

    model: Classifier
    data: DataBundle
    train_config: TrainConfig
    run: RunDir
    lineage: Lineage  # the original run and everything forgotten since (empty for a training run)
    model_class: Any = None  # the user's class, for a run of their own model (rebuilds its root too)

    @property
    def path(self) -> Path:
        return self.run.path


def load_checkpoint(path: str | Path, device: str | torch.device | None = None,
                    data: DataBundle | None = None, model_class=None) -> Checkpoint:
    """Open a run directory, reload its data set by the recorded spec and check that both match.

    A run of the user's own model (``import_model``) needs ``model_class``, the user's class: obliviate
    never imports code named in a run folder by itself. One imported with data given as tensors needs
    ``data`` (the same tensors, checked by hash)."""
    run = open_run(path)
    rec = run.record
    recorded = rec.get("data")
    if not isinstance(recorded, dict) or not {"spec", "source_hash"} <= recorded.keys() or "model" not in rec:
        raise CheckpointError(f"{run.path}/run.json lacks the data or model record")
    if data is None and isinstance(recorded["spec"], dict) and recorded["spec"].get("kind") == "user":
        raise CheckpointError(f"{run.path} was made with data given as tensors: pass the same data (data=...)")
    if data is not None:
        data = as_bundle(data)  # a DataBundle passes unchanged
    if data is None:
        try:
            spec = DataSpec.from_dict(recorded["spec"])
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{run.path}/run.json: unreadable data spec ({type(exc).__name__}: {exc})") from None
        data = replant(load_data(spec), recorded["spec"], run.path / "run.json")  # a backdoor run's poison
    if data.source_hash != rec["data"]["source_hash"]:
        raise CheckpointError(f"data set {data.name!r} differs from the one {run.path} was trained on "
                              f"(source hash {data.source_hash[:12]} vs {rec['data']['source_hash'][:12]})")
    model = run.load_model(pick_device(device), model_class)
    if tuple(model.spec.input_shape) != tuple(data.input_shape) or model.num_classes != data.num_classes:
        raise CheckpointError(f"model in {run.path} expects {tuple(model.spec.input_shape)}/{model.num_classes} "
                              f"classes, data set {data.name!r} has {data.input_shape}/{data.num_classes}")
    config = rec.get("config", {})
    # None: a model imported without a recipe (check_record allows that for a user's own model only)
    cfg = TrainConfig.from_record(config, run.path / "run.json") if config is not None else None
    lineage = read_lineage(run.path, rec, data.train, data.num_classes)
    setattr(model, FORGOTTEN_ATTR, lineage.forgotten)  # a later unlearn() on this model keeps all of it forgotten
    return Checkpoint(model, data, cfg, run, lineage, model_class)


def _root_model(ck: Checkpoint, device) -> Classifier | None:
    """The original model, for methods that rebuild from its snapshots; None for a training run or when gone."""
    if not ck.lineage.forgotten:
        return None
    try:
        return open_run(ck.lineage.root).load_model(pick_device(device), ck.model_class)
    except CheckpointError:
        return None  # unlearn says so if the method needs it


def _noop_original(ck: Checkpoint, requests: list[ForgetRequest], attack: PerExampleMIA | None,
                   device) -> torch.nn.Module | None:
    """The model that trained on every sample (the lineage's root): the sample checks' no-op reference. None for
    class requests only; None too when it cannot be loaded (its checks are then not measured) unless the
    per-example attack needs it."""
    if all(r.classes for r in requests):
        return None
    if not ck.lineage.forgotten:
        return ck.model  # unlearn worked on a copy
    root = _root_model(ck, device)
    if root is None and attack is not None:
        raise CheckpointError(f"the per-example attack needs the original run {ck.lineage.root}, which cannot be "
                              "loaded")
    return root


def forget(checkpoint: str | Path | Checkpoint, request: ForgetRequest, method: str = "unsir", *,
           out: str | Path | None = None, params: dict | None = None, seed: int = 0,
           device: str | None = None, overwrite: bool = False, rule: VerdictRule | None = None,
           per_example_mia: int | PerExampleMIA | None = None) -> tuple[Classifier, dict]:
    """Unlearn ``request`` from a saved run with ``method``; with ``out``, save a run directory.

    On an unlearned run the request is applied on top of its lineage: everything forgotten before stays
    out of every data set the method reads. A saved run gets run.json and then ``certificate.json``.
    The record's ``evidence`` and ``verdict`` (yes, NO or not shown, by ``rule``) are in the certificate too.
    ``per_example_mia`` (K shadows, or the attack's settings) adds the per-example attack to the evidence of
    a sample request: it can show a few samples forgotten where accuracy cannot. Its shadows train first
    (with the original's recipe; cached, so later requests on the same model reuse them).
    """
    source = checkpoint.path if isinstance(checkpoint, Checkpoint) else checkpoint
    out_path = check_output_dir(out, overwrite, reads=[source]) if out is not None else None
    resolve_params(get_method(method), params)  # bad parameters fail before the checkpoint is loaded
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device)
    if out_path is not None:  # nor any run of its lineage (the original's snapshots serve DeepObliviate)
        check_output_dir(out_path, overwrite, reads=ck.lineage.runs())
    attack = attack_settings(ck, per_example_mia, request)
    if attack is not None:  # the slow part first, before anything is unlearned or written
        shadow_set(attack, ck.data, next(ck.model.parameters()).device)
    model, record = unlearn(ck.model, ck.data, request, method, params=params, device=device, seed=seed,
                            train_config=ck.train_config, run_path=ck.lineage.root,
                            forgotten=ck.lineage.forgotten, root_model=_root_model(ck, device))
    if out_path is not None:
        (out_path / CERT_FILE).unlink(missing_ok=True)  # a stale certificate must never outlive its run
    lineage = lineage_record(ck.path, ck.lineage, getattr(model, FORGOTTEN_ATTR), request, method, out_path)
    record = {"kind": "forget", "original": str(ck.lineage.root), "parent": str(ck.path.resolve()),
              "data": ck.data.describe(), "model": ck.model.spec.to_dict(),
              "config": ck.train_config.to_dict() if ck.train_config is not None else None,
              "versions": versions(), "finished": now_iso(), **record, "lineage": lineage}
    requests = [ForgetRequest.from_dict(r["request"]) for r in lineage["requests"]]
    evidence = measure_evidence(model, ck.data, requests, seed=0, trained_without=by_construction(record),
                                attack=attack, original=_noop_original(ck, requests, attack, device))
    verdict = judge(evidence, [bool(r.classes) for r in requests], (rule or VerdictRule()).resolve(ck.data.num_classes))
    if out_path is not None:
        finish_run(out_path, model, record)
        cert = build_certificate(out_path, record, ck.path, ck.run.record, evidence, (params or {}).get("preset"),
                                 verdict=verdict)
        record["certificate"] = str(write_certificate(out_path, cert))
    return model, {**record, "evidence": evidence, "verdict": verdict}


def attack_settings(ck: Checkpoint, attack: int | PerExampleMIA | None, request: ForgetRequest | None = None,
                    **given) -> PerExampleMIA | None:
    """The per-example attack for ``ck``: K shadows trained with the original's recipe (``given``: max_epochs,
    seed, cache), or the settings as given."""
    if attack is None:
        return None
    if request is not None and request.classes:
        raise ObliviateError("the per-example attack is for sample requests (ids, fraction), not a class request")
    if isinstance(attack, PerExampleMIA):
        return attack
    if ck.train_config is None:
        raise CheckpointError(f"{ck.path} records no training recipe: the per-example attack trains its shadow "
                              "models with the original's recipe (import the model with train_config=...)")
    return PerExampleMIA(attack, ck.train_config, **given,
                         build=ck.model.fresh if isinstance(ck.model, ForeignClassifier) else None)


def import_model(net: torch.nn.Module, data, out: str | Path, *, train_config: TrainConfig | None = None,
                 weights_file: str | Path | None = None, model_args: dict | None = None, device: str | None = None,
                 overwrite: bool = False, **model_options) -> Checkpoint:
    """Bring a model trained outside obliviate under its records: a run folder that ``forget`` can start from.

    ``net`` is the user's classifier with its trained weights; ``data`` its training and test data (a
    DataBundle from ``load_data`` — e.g. ``image-folder`` or ``arrays`` — or tensors / Datasets). The run
    records the model's class and constructor ``model_args`` (so it can be rebuilt from that class), the
    data's hash, the weights file's SHA-256 when given, and ``train_config``: how to retrain this model when
    a method needs to (``retrain``); without it such methods ask for one.
    """
    out_path = check_output_dir(out, overwrite)
    dev = pick_device(device)
    model, bundle = adopt(net.to(dev), data, args=model_args, **model_options)
    if not isinstance(model, ForeignClassifier):
        raise ObliviateError("import_model is for your own model; an obliviate model is already a run (train --out)")
    if train_config is not None:
        train_config = dataclasses.replace(train_config, model=model.spec.name)
        train_config.validate()
    weights = ({"file": str(Path(weights_file).resolve()), "sha256": file_sha256(weights_file)}
               if weights_file is not None else None)
    record = {"kind": "import", "config": train_config.to_dict() if train_config is not None else None,
              "data": bundle.describe(), "model": model.spec.to_dict(), "weights": weights, "device": str(dev),
              "versions": versions(), "finished": now_iso(),
              "accuracy": {k: accuracy(model, getattr(bundle, k)) for k in ("train", "val", "test")}}
    run = finish_run(out_path, model, record)
    lineage = read_lineage(run.path, record, bundle.train, bundle.num_classes)
    return Checkpoint(model, bundle, train_config, run, lineage, type(net))
