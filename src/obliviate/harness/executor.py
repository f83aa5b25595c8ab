"""Executors: run a study's missing tasks in this process, or fan them out over Ray.

Both run each task through the same ``execute_task``, so a result never depends on where it ran.
The local executor lets it write its own row; on Ray, workers share no storage with the driver, so
models, rows and figures travel through Ray and only the driver writes the work folder and the store.
Ray is an optional extra, imported only here and only when asked for.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..env import now_iso, parse_device, pick_device
from ..errors import ObliviateError
from ..io import check_writable_dir, to_json
from ..progress import progress_task
from . import study as study_file  # load_study looked up at call time (tests replace it)
from .runner import (
    ORIGINALS,
    ROW_FILE,
    RUN_FILE,
    RUNS,
    Task,
    ensure_original,
    ensure_retrain,
    execute_task,
    load_bundle,
    make_plan,
    original_dir,
    retrain_dir,
    row_json,
    task_row,
)
from .store import Store


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@dataclass
class Outcome:
    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def add(self, row: dict) -> None:
        (self.done if row.get("status") == "done" else self.failed).append(row)


def _order(tasks: list[Task]) -> list[Task]:
    """Group runs that share an original and a retrained model, so each is loaded once in a row."""
    return sorted(tasks, key=lambda t: (t.dataset, t.model, t.seed, t.request, not t.reference))


def run_local(tasks: list[Task], store_path: Path, work: Path, device: str | None = None,
              on_row: Callable[[dict], None] | None = None) -> Outcome:
    outcome = Outcome()
    with progress_task("study", total=len(tasks)) as advance:
        for task in _order(tasks):
            row = execute_task(task, store_path, work, device)
            outcome.add(row)
            if on_row:
                on_row(row)
            advance(1, info=_escape(f"{task.title}: {row['status']}"))
    return outcome


def import_ray():
    try:
        import ray
    except ImportError:
        raise ObliviateError("--executor ray needs Ray: pip install obliviate[ray]") from None
    return ray


def run_ray(tasks: list[Task], store_path: Path, work: Path, device: str | None = None, address: str | None = None,
            workers: int | None = None, gpus_per_run: float | None = None, max_retries: int = 2,
            on_row: Callable[[dict], None] | None = None) -> Outcome:
    """Fan the runs out over Ray; the nodes need no storage in common with this driver.

    ``address`` None starts a local Ray on this machine; "auto" or "ray://host:10001" joins a cluster.
    Models and results travel through Ray's object store: preparation tasks train the original and the
    retrained models and return their run folders as bytes (models this driver already holds are
    uploaded instead); each run task gets them as object refs and returns its row and figures. Only
    this process writes the work folder and the store. Each task asks for one GPU when the cluster has
    GPUs (``gpus_per_run`` overrides), so Ray places one run per GPU; a task whose worker or node dies
    is retried ``max_retries`` times, then stored as failed with the reason.
    """
    ray = import_ray()
    store_path, work = Path(store_path).resolve(), Path(work).resolve()
    started_here = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": workers} if workers else {}
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if not address else None, **kw)
        started_here = True
    try:
        gpus = gpus_per_run if gpus_per_run is not None else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
        remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=max_retries)
        fns = {name: remote(fn) for name, fn in (("original", _remote_original), ("retrain", _remote_retrain),
                                                 ("run", _remote_run))}
        with Store(store_path) as store:
            return _drive(ray, fns, _order(tasks), store, work, device, on_row)
    finally:
        if started_here:
            ray.shutdown()


def _submit_models(ray, fns: dict, tasks: list[Task], work: Path, device: str | None) -> tuple[dict, dict]:
    """One object ref per shared model the runs need: uploaded from the work folder, or a training task.

    Returns (refs by model folder name, {training task ref: folder to save its result in}).
    """
    refs: dict[str, object] = {}
    to_save: dict[object, Path] = {}

    def ref_for(path: Path, train) -> object:
        if (path / RUN_FILE).exists():  # the driver holds it (an earlier bench): upload, do not retrain
            return ray.put(shipment(path))
        ref = train()
        to_save[ref] = path
        return ref

    for t in tasks:
        orig, retrain = original_dir(t, work), retrain_dir(t, work)
        if orig.name not in refs:
            refs[orig.name] = ref_for(orig, lambda t=t: fns["original"].remote(t.to_dict(), device))
        if retrain.name not in refs:
            refs[retrain.name] = ref_for(retrain,
                                         lambda t=t, o=orig: fns["retrain"].remote(t.to_dict(), refs[o.name], device))
    return refs, to_save


def _drive(ray, fns: dict, tasks: list[Task], store: Store, work: Path, device: str | None,
           on_row: Callable[[dict], None] | None) -> Outcome:
    """Submit every task, then save models and rows as they come back, in whatever order they finish."""
    refs, to_save = _submit_models(ray, fns, tasks, work, device)
    runs = {fns["run"].remote(t.to_dict(), refs[original_dir(t, work).name], refs[retrain_dir(t, work).name],
                              device): t for t in tasks}
    del refs  # the run tasks hold the models now; Ray frees each once no task needs it
    outcome = Outcome()
    with progress_task("study (ray)", total=len(tasks)) as advance:
        while runs or to_save:
            ready, _ = ray.wait([*runs, *to_save], num_returns=1)
            ref = ready[0]
            if ref in to_save:
                _save_model(ray, ref, to_save.pop(ref), work)
                continue
            task = runs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the worker or its node died, and every retry too
                result = {"row": failed_row(task, work, f"ray: {type(exc).__name__}: {exc}")}
            row = _save_run(result, task, work, store)
            outcome.add(row)
            if on_row:
                on_row(row)
            advance(1, info=_escape(f"{task.title}: {row['status']}"))
    return outcome


def _save_model(ray, ref, path: Path, work: Path) -> None:
    """Write a model a worker trained into the driver's work folder, so a later bench reuses it."""
    try:
        shipped = ray.get(ref)
    except Exception:  # the runs that needed it fail with the reason; there is nothing to keep
        return
    if "files" not in shipped:
        return
    files = dict(shipped["files"])
    record = json.loads(files[RUN_FILE])
    if "original" in record:  # a retrained model names its original: the driver's copy, not the worker's
        record["original"] = str(work / ORIGINALS / Path(record["original"]).name)
        files[RUN_FILE] = (to_json(record) + "\n").encode()
    unpack(files, path)


def _save_run(result: dict, task: Task, work: Path, store: Store) -> dict:
    """Write a finished run's figures into the work folder, then its row into the store (last)."""
    row, out = result["row"], work / RUNS / task.key
    row["artifacts"] = str(out)
    if isinstance(row.get("record"), dict):
        row["record"]["original_run"] = str(original_dir(task, work))
    files = dict(result.get("files") or {})
    if files:
        if ROW_FILE in files:
            files[ROW_FILE] = (to_json(row_json(row, task)) + "\n").encode()
        unpack(files, out, replace=True)
    row.setdefault("finished", now_iso())
    store.put(row)
    return row


def failed_row(task: Task, work: Path, error: str) -> dict:
    return {**task_row(task, work / RUNS / task.key), "status": "failed", "error": error, "finished": now_iso()}


# ------------------------------------------------------------------ shipping run folders through Ray
def shipment(path: Path) -> dict:
    """A finished run folder as plain data: {"files": {relative path: bytes}, "digest": content hash}."""
    files = {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
             if p.is_file() and not p.name.startswith(".")}
    digest = hashlib.sha256()
    for name, data in files.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return {"files": files, "digest": digest.hexdigest()[:16]}


def unpack(files: dict[str, bytes], path: Path, replace: bool = False) -> None:
    """Write shipped files as folder ``path``, all at once: into a hidden sibling, then renamed.

    An existing folder is kept (another process got there first) unless ``replace``.
    """
    if path.exists() and not replace:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        if replace and path.exists():
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path.exists() and not replace):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ what runs on a worker
def _node_cache() -> Path:
    """Where a node keeps the models it was sent (content-addressed, so runs on one node share them)."""
    return Path(tempfile.gettempdir()) / f"obliviate-ray-{os.getuid()}"


def _pin_threads() -> None:
    """Use as many threads as the task holds CPUs, so runs sharing a node do not fight over cores."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    torch.set_num_threads(max(1, int(cpus or 1)))


def _bundle(t: Task):
    """The task's data, read on this node; it must be the very data the driver planned with."""
    bundle = load_bundle(t.data_spec)
    if bundle.source_hash != t.source_hash:
        raise ObliviateError(f"data set {t.dataset!r} on node {socket.gethostname()} is not the driver's "
                             f"(source hash {bundle.source_hash[:12]}, driver {t.source_hash[:12]}): "
                             "every node must read the same data")
    return bundle


def _remote_original(task: dict, device: str | None) -> dict:
    """Ray task: train the original model and return its run folder."""
    _pin_threads()
    t = Task.from_dict(task)
    scratch = Path(tempfile.mkdtemp(prefix="obliviate-prep-"))
    try:
        _, run = ensure_original(t, _bundle(t), scratch, pick_device(device))
        return shipment(run.path)
    except Exception as exc:
        return {"error": f"training the original model failed: {type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remote_retrain(task: dict, original: dict, device: str | None) -> dict:
    """Ray task: retrain without the forget set, from the shipped original; return the run folder."""
    if "error" in original:
        return original
    _pin_threads()
    t = Task.from_dict(task)
    scratch = Path(tempfile.mkdtemp(prefix="obliviate-prep-"))
    try:
        unpack(original["files"], original_dir(t, scratch))
        bundle, dev = _bundle(t), pick_device(device)
        model, run = ensure_original(t, bundle, scratch, dev)
        ensure_retrain(t, bundle, model, run, scratch, dev)
        return shipment(retrain_dir(t, scratch))
    except Exception as exc:
        return {"error": f"retraining without the forget set failed: {type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remote_run(task: dict, original: dict, retrain: dict, device: str | None) -> dict:
    """Ray task: one run on the shipped models; returns its row and its run folder's files."""
    t = Task.from_dict(task)
    for shipped in (original, retrain):
        if "error" in shipped:
            return {"row": failed_row(t, Path("."), shipped["error"])}
    _pin_threads()
    root = _node_cache() / f"{original['digest']}-{retrain['digest']}"
    try:
        unpack(original["files"], original_dir(t, root))
        unpack(retrain["files"], retrain_dir(t, root))
        _bundle(t)
    except Exception as exc:
        return {"row": failed_row(t, root, f"{type(exc).__name__}: {exc}")}
    out = root / RUNS / t.key
    shutil.rmtree(out, ignore_errors=True)  # a retried attempt starts clean
    try:
        row = execute_task(t, None, root, device, write=False)
        return {"row": row, "files": shipment(out)["files"] if out.exists() else {}}
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------ the whole study
DEFAULT_STORE = Path("results") / "obliviate.sqlite"


@dataclass
class BenchResult:
    study: object
    plan: object
    store: Path
    work: Path
    already_done: int
    outcome: Outcome | None


def bench(study_path: str | Path, store_path: str | Path | None = None, *, work: str | Path | None = None,
          executor: str = "local", address: str | None = None, workers: int | None = None,
          device: str | None = None, dry_run: bool = False, data_roots: dict[str, str] | None = None,
          max_retries: int = 2, on_row: Callable[[dict], None] | None = None) -> BenchResult:
    """Validate a study, plan its runs, skip the finished ones and execute the rest.

    The work folder (default: ``work/`` beside the store) holds the original and retrained models and
    each run's figures; the store holds the rows. Both survive a crash: re-running resumes.
    """
    if executor not in ("local", "ray"):
        raise ObliviateError(f"unknown executor {executor!r}; choose local or ray")
    if max_retries < 0:
        raise ObliviateError(f"--max-retries must be 0 or more, not {max_retries}")
    if executor == "ray":
        import_ray()  # fail before any work when Ray is missing
    store_path = Path(store_path) if store_path else DEFAULT_STORE
    work = Path(work) if work else store_path.parent / "work"
    if not dry_run:  # a store or work folder we cannot write would lose every run's result
        check_writable_dir(store_path.parent, "--store")
        if store_path.exists() and (not store_path.is_file() or not os.access(store_path, os.R_OK | os.W_OK)):
            raise ObliviateError(f"--store {store_path} is not a writable file")
        check_writable_dir(work, "--work")
    study = study_file.load_study(study_path, data_roots=data_roots)
    device = device or study.device
    if device and device != "auto":  # spelling always; availability only where the runs happen (this process)
        (parse_device if executor == "ray" else pick_device)(device)
    plan = make_plan(study)
    if dry_run:  # list what would run; create and change nothing
        with (Store(store_path, readonly=True) if store_path.exists() else contextlib.nullcontext()) as store:
            done = store.done_keys(study.name) if store else set()
    else:
        with Store(store_path) as store:
            done = store.done_keys(study.name)
            store.put_study(study.name, str(Path(study_path).resolve()), study.text, study.published)
    todo = [t for t in plan.tasks if t.key not in done]
    result = BenchResult(study, plan, store_path, work, len(plan.tasks) - len(todo), None)
    if dry_run or not todo:
        return result
    if executor == "ray":
        result.outcome = run_ray(todo, store_path, work, device, address=address, workers=workers,
                                 max_retries=max_retries, on_row=on_row)
    else:
        result.outcome = run_local(todo, store_path, work, device, on_row=on_row)
    return result
