"""Turn a study into runs and execute one run: a pure function of (task, store path, work folder).

Every run (one row of the results store) is a ``Task``: plain data holding everything that decides its
result. Its ``key`` is the content address of that data, so re-running a study skips every key the
store already holds as done, and a changed recipe, request or parameter gets a new key.

``execute_task`` does one run end to end and writes its own row, so the local executor (a loop) and
the Ray executor (remote calls) share it. The expensive shared pieces, the original model per
(data set, model, seed) and the retrained reference per request, live in content-addressed run
folders under the work folder: whoever needs one first trains it (under a file lock, so two
processes never train the same model twice), everyone after reuses it.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import functools
import re
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..backdoor_runs import STUDY_NAMES, plan_backdoor, poisoned
from ..certificate import by_construction, measure_evidence
from ..data import DataBundle, DataSpec, ForgetRequest, load_data
from ..env import now_iso, pick_device, versions
from ..errors import ObliviateError
from ..io import config_hash, write_json
from ..methods import METHODS, get_method, load_all, resolve_params, unlearn
from ..metrics.backdoor import backdoor_info
from ..metrics.evaluate import evaluate
from ..metrics.lira import PerExampleMIA
from ..models import model_for
from ..training import TrainConfig, finish_run, open_run, train
from ..training.checkpoint import RUN_FILE
from ..verdict import VerdictRule, answer, judge
from .store import KEY_METRICS, Store
from .study import PER_EXAMPLE_MIA, PLANT_BACKDOOR, REFERENCE_METHODS, MethodEntry, Study
from .tuning import GRID, SELECT, tune, tuned_metrics

ORIGINALS, RETRAINS, RUNS, LOCKS, SHADOWS = "originals", "retrains", "runs", "locks", "shadows"


@dataclass
class Task:
    """One run: (data set, model, seed, request, method+params). Plain data, JSON- and pickle-able."""

    study: str
    dataset: str
    data_spec: dict
    source_hash: str
    model: str
    train: dict  # full TrainConfig.to_dict(), seed included
    request: str
    request_spec: dict  # ForgetRequest.to_dict()
    method: str  # label
    method_name: str
    params: dict  # resolved parameters (defaults filled in)
    seed: int
    evaluate: dict
    reference: bool = False  # the harness's own retrain / original row
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            self.key = config_hash(self.identity())

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("key")
        # where the file lies is not what it is
        d["data_spec"] = {k: v for k, v in self.data_spec.items() if k != "root"}
        d["evaluate"] = {k: v for k, v in self.evaluate.items() if k != "keep_models"}
        return d

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(**d)

    @property
    def original_key(self) -> str:
        return config_hash({"data": self.identity()["data_spec"], "source": self.source_hash, "train": self.train})

    @property
    def retrain_key(self) -> str:
        """What was forgotten decides the reference, not method inputs: requests that differ only in the
        retain-subset size share one retrained model (a subset-size sweep retrains once)."""
        forgotten = {k: v for k, v in self.request_spec.items() if k != "subset_per_class"}
        return config_hash({"original": self.original_key, "request": forgotten})

    @property
    def title(self) -> str:
        return f"{self.dataset}/{self.model}/{self.request}/{self.method}/seed {self.seed}"


@dataclass
class Plan:
    tasks: list[Task]
    skipped: list[str] = field(default_factory=list)  # combinations a method cannot handle


# ------------------------------------------------------------------ validation against the data
@functools.lru_cache(maxsize=4)
def _load_bundle_cached(spec_json: str) -> DataBundle:
    import json

    spec = json.loads(spec_json)
    return with_backdoor(load_data(DataSpec.from_dict(spec)), spec)


def with_backdoor(bundle: DataBundle, spec: dict) -> DataBundle:
    """``bundle`` with the backdoor its study data set asks for planted (the same samples and trigger on
    every node and every read: the plan is seeded); unchanged without one."""
    plant = spec.get(PLANT_BACKDOOR)
    if not plant:
        return bundle
    return poisoned(bundle, plan_backdoor(bundle, plant["n"], plant["target"], seed=plant["seed"],
                                          names=STUDY_NAMES))


def load_bundle(spec: dict) -> DataBundle:
    """A study data set's data, with its backdoor planted when the study asks for one."""
    import json

    return _load_bundle_cached(json.dumps(spec, sort_keys=True))


def forget_request(request: dict, bundle: DataBundle, seed: int) -> ForgetRequest:
    """A study request on one data set: ``backdoor: true`` becomes the ids that data set's backdoor poisoned."""
    request = {**request, "seed": seed}
    if request.pop("backdoor", False):
        planted = backdoor_info(bundle)
        if not planted:
            raise ObliviateError(f"a backdoor request needs a data set with a backdoor ({bundle.name!r} has "
                                 "none): give the data set backdoor: {n: samples, target: class}")
        request["ids"] = list(planted["ids"])
    return ForgetRequest.from_dict(request)


def train_config_for(study: Study, ds, model, seed: int) -> TrainConfig:
    merged = {**study.train, **ds.train, **model.train, "model": model.name,
              "model_options": dict(model.options), "seed": seed}
    merged.setdefault("block_schedule", TrainConfig.block_schedule)  # a new recipe: today's default, not a record's
    return TrainConfig.from_dict(merged)


def check_study(study: Study) -> dict[str, DataBundle]:
    """Load every data set and check models, recipes and requests against it; errors name the line."""
    bundles: dict[str, DataBundle] = {}
    for ds in study.datasets:
        try:
            bundle = load_data(DataSpec.from_dict(ds.spec))
        except ObliviateError as exc:
            raise study.error(ds.path, str(exc)) from None
        try:
            bundle = bundles[ds.label] = with_backdoor(bundle, ds.spec)
        except ObliviateError as exc:
            raise study.error(ds.path + ("backdoor",), str(exc)) from None
        for m in study.models:
            try:
                model_for(m.name, bundle, **m.options)
            except ObliviateError as exc:
                raise study.error(m.path, f"model {m.label!r} does not fit data set {ds.label!r}: {exc}") from None
            except Exception as exc:  # an architecture that cannot take this input shape
                raise study.error(m.path, f"model {m.label!r} cannot be built for data set {ds.label!r} "
                                          f"(input {bundle.input_shape}): {type(exc).__name__}: {exc}") from None
            try:
                train_config_for(study, ds, m, study.seeds[0]).validate()
            except ObliviateError as exc:
                raise study.error(m.path if m.train else ("train",), str(exc)) from None
        for me in study.methods:
            if me.grid and not len(bundle.val):
                raise study.error(me.path + ("grid",), f"tuning searches on the validation split, and data set "
                                                       f"{ds.label!r} has none: give it val_fraction > 0")
        for r in study.requests:
            try:
                forget_request(r.request, bundle, r.seed if r.seed is not None else study.seeds[0]).resolve(
                    bundle.train, bundle.num_classes)
            except ObliviateError as exc:
                raise study.error(r.path, f"on data set {ds.label!r}: {exc}") from None
    for me in study.methods:
        if me.name in REFERENCE_METHODS and me.name not in registered_methods():
            continue
        get_method(me.name)
    return bundles


def registered_methods() -> set[str]:
    """Every method name the registry holds, once all method modules are imported."""
    load_all()
    return set(METHODS)


def is_reference(me: MethodEntry, registered: set[str]) -> bool:
    """Whether a study's method entry is the harness's own reference row (original, or retrain as-is)."""
    return me.name in REFERENCE_METHODS and (not me.params or me.name not in registered)


def entry_params(me: MethodEntry, registered: set[str]) -> dict[str, Any]:
    """The parameters a study's method entry runs with (defaults filled in); {} for a reference row.

    A tuned entry's are the fixed ones plus ``grid`` (the values searched) and ``select`` (the rule)."""
    if is_reference(me, registered):
        return {}
    if not me.grid:
        return dataclasses.asdict(resolve_params(METHODS[me.name](), me.params))
    first = {k: v[0] for k, v in me.grid.items()}
    fixed = dataclasses.asdict(resolve_params(METHODS[me.name](), {**me.params, **first}))
    grid = {k.replace("-", "_"): list(v) for k, v in me.grid.items()}
    return {**{k: v for k, v in fixed.items() if k not in grid}, GRID: grid, SELECT: me.select}


def make_plan(study: Study, bundles: dict[str, DataBundle] | None = None) -> Plan:
    """Expand datasets × models × seeds × requests × methods into tasks (with data checks)."""
    bundles = bundles if bundles is not None else check_study(study)
    registered = registered_methods()
    tasks, skipped = [], []
    for ds in study.datasets:
        bundle = bundles[ds.label]
        for m in study.models:
            for seed in study.seeds:
                cfg = train_config_for(study, ds, m, seed)
                for r in study.requests:
                    req = forget_request(r.request, bundle, r.seed if r.seed is not None else seed)
                    for me in study.methods:
                        if (me.only_models and m.label not in me.only_models) or \
                                (me.only_requests and r.label not in me.only_requests) or \
                                (me.only_datasets and ds.label not in me.only_datasets):
                            continue
                        reference = is_reference(me, registered)
                        if not reference and req.kind not in (kinds := METHODS[me.name].request_kinds):
                            note = f"{me.label} skips {r.label} ({me.name} handles " \
                                   f"{', '.join(sorted(kinds))} requests)"
                            if note not in skipped:
                                skipped.append(note)
                            continue
                        params = entry_params(me, registered)
                        tasks.append(Task(study.name, ds.label, dict(ds.spec), bundle.source_hash, m.label,
                                          cfg.to_dict(), r.label, req.to_dict(), me.label, me.name, params, seed,
                                          dict(study.evaluate), reference))
    return Plan(tasks, skipped)


# ------------------------------------------------------------------ shared models (original, retrained)
@contextlib.contextmanager
def _locked(work: Path, name: str) -> Iterator[None]:
    """An exclusive lock across processes (Ray workers, two bench runs) for building one shared model."""
    path = work / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_models: OrderedDict[str, Any] = OrderedDict()


def _cached_model(run_path: Path, device: torch.device):
    """Load a finished run's model, keeping the last few in memory; callers get a private copy."""
    key = f"{run_path.resolve()}@{device}"
    if key not in _models:
        _models[key] = open_run(run_path).load_model(device).eval()
        while len(_models) > 4:
            _models.popitem(last=False)
    _models.move_to_end(key)
    return copy.deepcopy(_models[key])


def path_part(label: str) -> str:
    """A label as one safe folder-name part: labels come from a study file, and ``../..`` or ``/`` in one
    must not move a model out of the work folder (the content key in the name keeps folders distinct)."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", str(label)).strip("._")[:64] or "_"


def original_dir(task: Task, work: Path) -> Path:
    return work / ORIGINALS / f"{path_part(task.dataset)}-{path_part(task.model)}-s{task.seed}-{task.original_key}"


def retrain_dir(task: Task, work: Path) -> Path:
    return work / RETRAINS / f"{path_part(task.dataset)}-{path_part(task.model)}-s{task.seed}-{task.retrain_key}"


def ensure_original(task: Task, bundle: DataBundle, work: Path, device: torch.device):
    """The original model of (data set, model, seed): reuse the finished run, or train it now."""
    path = original_dir(task, work)
    if not (path / RUN_FILE).exists():
        with _locked(work, path.name):
            if not (path / RUN_FILE).exists():
                train(bundle, TrainConfig.from_dict(task.train), path, device=device,
                      extra_record={"study": task.study})
    run = open_run(path)
    if run.record.get("data", {}).get("source_hash") != bundle.source_hash:
        raise ObliviateError(f"{path} was trained on other data than {task.dataset!r}; delete it to retrain")
    return _cached_model(path, device), run


def ensure_retrain(task: Task, bundle: DataBundle, original, orig_run, work: Path, device: torch.device):
    """The retrained reference for (original, request): the ``retrain`` method with the original recipe."""
    path = retrain_dir(task, work)
    if not (path / RUN_FILE).exists():
        with _locked(work, path.name):
            if not (path / RUN_FILE).exists():
                cfg = TrainConfig.from_dict(task.train)
                model, record = unlearn(original, bundle, ForgetRequest.from_dict(task.request_spec), "retrain",
                                        device=device, seed=task.seed, train_config=cfg, run_path=orig_run.path)
                finish_run(path, model, {"kind": "retrain", "original": str(orig_run.path), "config": cfg.to_dict(),
                                         "versions": versions(), "finished": now_iso(), **record})
    return _cached_model(path, device), open_run(path).record


# ------------------------------------------------------------------ one run
ROW_FILE = "row.json"


def per_example_mia(task: Task, request: ForgetRequest, shadows: Path) -> PerExampleMIA | None:
    """The study's per-example attack for a sample request (None otherwise). Its shadows live in ``shadows``
    (a content-keyed cache) and are shared by every method, request and seed on the same data and recipe."""
    spec = task.evaluate.get(PER_EXAMPLE_MIA)
    if not spec or request.kind == "class":
        return None
    return PerExampleMIA(recipe=TrainConfig.from_dict(task.train), cache=shadows, **spec)


def task_row(task: Task, out: Path) -> dict[str, Any]:
    """The identifying part of a run's row (its artifacts in ``out``), before any result."""
    return {"key": task.key, "study": task.study, "dataset": task.dataset, "model": task.model,
            "request": task.request, "method": task.method, "method_name": task.method_name,
            "params": task.params, "seed": task.seed, "config": task.to_dict(),
            "artifacts": str(out.resolve()), "started": now_iso()}


def row_json(row: dict, task: Task) -> dict:
    """What a run folder's ``row.json`` holds: the row, with the task in place of its config copy."""
    return {k: v for k, v in row.items() if k != "config"} | {"task": task.to_dict()}


def _unlearned(task: Task, bundle: DataBundle, request: ForgetRequest, original, orig_run, retrained,
               retrain_record: dict, dev) -> tuple[Any, dict, dict | None]:
    """The model a task evaluates, its record, and the grid search that chose its parameters (or None)."""
    if task.reference and task.method_name == "original":
        return copy.deepcopy(original), {"method": "original", "params": {}, "seconds": None, "seed": task.seed,
                                         "request": request.to_dict(),
                                         "note": "the original model, before unlearning"}, None
    if task.reference:
        return copy.deepcopy(retrained), dict(retrain_record), None

    def run(params: dict):
        return unlearn(original, bundle, request, task.method_name, params=params, device=dev, seed=task.seed,
                       train_config=TrainConfig.from_dict(task.train), run_path=orig_run.path)

    if GRID in task.params:  # tuned on the validation split; the test set only scores the chosen setting
        return tune(task.params, run, bundle, request, original)
    return (*run(task.params), None)


def verdict_metrics(unlearned, original, bundle: DataBundle, request: ForgetRequest, record: dict,
                    attack: PerExampleMIA | None, seed: int) -> dict:
    """The verdict ``forget`` would give this model (default rule, with the study's per-example attack), as
    1/0 columns so that a table shows the share of seeds; and the attack's p-values (``verdict``)."""
    evidence = measure_evidence(unlearned, bundle, [request], seed=seed, trained_without=by_construction(record),
                                attack=attack, original=original)
    said = answer(judge(evidence, [bool(request.classes)], VerdictRule().resolve(bundle.num_classes)))
    tests = evidence["per_request"][0].get("per_example") or {}
    return {"verdict_yes": float(said == "yes"), "verdict_no": float(said == "NO"),
            **{f"lira_{k}": tests[k] for k in ("p_seen", "p_kept", "p_kept_original") if k in tests}}


def execute_task(task: Task | dict, store_path: str | Path, work_dir: str | Path, device: str | None = None,
                 write: bool = True, shadows: str | Path | None = None) -> dict:
    """Run one task end to end and (with ``write``) commit its row. Returns the row.

    ``shadows``: the per-example attack's shadow cache (default ``work_dir/shadows``); a Ray worker passes
    one folder per node, since its ``work_dir`` is per original and retrain and the shadows depend on neither.

    An exception inside the run becomes a ``failed`` row (re-run later); Ctrl-C propagates and
    leaves no row, so the run counts as missing and is redone on resume.
    """
    task = Task.from_dict(task) if isinstance(task, dict) else task
    work = Path(work_dir)
    t0 = time.perf_counter()
    out = work / RUNS / task.key
    row = task_row(task, out)
    try:
        dev = pick_device(device)
        bundle = load_bundle(task.data_spec)
        request = ForgetRequest.from_dict(task.request_spec)
        original, orig_run = ensure_original(task, bundle, work, dev)
        retrained, retrain_record = ensure_retrain(task, bundle, original, orig_run, work, dev)
        unlearned, record, tuning = _unlearned(task, bundle, request, original, orig_run, retrained,
                                               retrain_record, dev)
        attack = per_example_mia(task, request, Path(shadows) if shadows else work / SHADOWS)
        metrics = evaluate(original, unlearned, bundle, request, retrained=retrained, unlearn_record=record,
                           retrain_record=retrain_record, out=out, figures=task.evaluate.get("figures", True),
                           seed=task.seed, relearn=task.evaluate.get("relearn", True), per_example_mia=attack)
        if task.evaluate.get("keep_models"):
            finish_run(out, unlearned, {"kind": "forget", **record})
        metrics = {**metrics, **verdict_metrics(unlearned, original, bundle, request, record, attack, task.seed)}
        ta, tr = metrics.get("test_acc"), metrics.get("test_acc_retrained")
        # DeepObliviate reports accuracy as a share of the retrained model's: keep it comparable
        metrics["test_acc_ratio_to_retrain"] = (ta / tr) if ta is not None and tr else None
        if tuning is not None:
            metrics.update(tuned_metrics(tuning))
        row.update(status="done", metrics=metrics, **{k: metrics.get(k) for k in KEY_METRICS})
        row["record"] = {"unlearn": record, "retrain": {k: retrain_record.get(k) for k in ("seconds", "params",
                                                                                         "forget_size",
                                                                                         "retain_size")},
                         "original_run": str(orig_run.path.resolve()), "versions": versions(),
                         "device": str(dev), "wall_seconds": time.perf_counter() - t0, "tuning": tuning}
        write_json(out / ROW_FILE, row_json(row, task))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the run failed; record why and go on with the others
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
    row["finished"] = now_iso()
    if write:
        with Store(store_path) as store:
            store.put(row)
    return row
