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
    SHADOWS,
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


def _finish(outcome: Outcome, row: dict, task: Task, on_row: Callable[[dict], None] | None, advance) -> None:
    """A run's row is final: count it, tell the caller, move the progress bar."""
    outcome.add(row)
    if on_row:
        on_row(row)
    advance(1, info=_escape(f"{task.title}: {row['status']}"))


def run_local(tasks: list[Task], store_path: Path, work: Path, device: str | None = None,
              on_row: Callable[[dict], None] | None = None) -> Outcome:
    outcome = Outcome()
    with progress_task("study", total=len(tasks)) as advance:
        for task in _order(tasks):
            _finish(outcome, execute_task(task, store_path, work, device), task, on_row, advance)
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
    GPUs (``gpus_per_run`` overrides), so Ray places one run per GPU. A run that Ray loses (its worker
    or node died, or its models' objects were lost) is resubmitted ``max_retries`` times by ``_drive``,
    then stored as failed with the reason.
    """
    ray = import_ray()
    store_path, work = Path(store_path).resolve(), Path(work).resolve()
    with _ray_session(ray, address, workers):
        gpus = gpus_per_run if gpus_per_run is not None else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
        # Ray retries nothing itself (max_retries=0): it cannot rebuild an object this driver put, it marks
        # an object whose owner a starved raylet could not reach as OwnerDiedError and never retries that,
        # and its lineage reconstruction would retrain a model this driver already holds. _drive resubmits.
        remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)
        fns = {name: remote(fn) for name, fn in (("original", _remote_original), ("retrain", _remote_retrain),
                                                 ("run", _remote_run))}
        with Store(store_path) as store:
            return _drive(ray, fns, _order(tasks), store, work, device, max_retries, on_row)


# Ray's settings for token authentication; a local ray.init() (Ray 2.60) sets RAY_AUTH_MODE=token in
# this process's environment for good when it is unset and a token exists.
_RAY_AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@contextlib.contextmanager
def _ray_session(ray, address: str | None, workers: int | None):
    """Join the caller's Ray, or start one for this bench and shut it down after, leaving the process
    as it was found.

    Without the restore, a process that ran a local bench and then joins a cluster (a notebook, a test
    session) would speak token authentication to nodes that do not: they cannot reach its objects, and
    every run would fail with OwnerDiedError.
    """
    if ray.is_initialized():
        yield
        return
    auth = {k: os.environ.get(k) for k in _RAY_AUTH_VARS}
    kw = {"address": address} if address else {"num_cpus": workers} if workers else {}
    ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}} if not address else None, **kw)
    try:
        yield
    finally:
        ray.shutdown()
        if any(os.environ.get(k) != v for k, v in auth.items()):
            _restore_ray_auth(auth)


def _restore_ray_auth(auth: dict[str, str | None]) -> None:
    for k, v in auth.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:  # Ray caches the mode in its C++ config and the token in a loader: drop both (as Ray's own tests do)
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # another Ray version: nothing cached there
        pass


def ray_lost(ray, exc: BaseException) -> bool:
    """Whether Ray lost a task (a dead worker or node, a lost object, an owner it could not reach),
    so running it again may well succeed; not when the task's own code raised or it was cancelled.

    A task whose *argument* was lost (its owner died) fails inside Ray as ``RayTaskError(OwnerDiedError)``:
    that is a loss too (seen on a loaded 2-core machine), so the wrapped cause decides.
    """
    ex = ray.exceptions
    lost = tuple(getattr(ex, n) for n in ("ObjectLostError", "WorkerCrashedError", "NodeDiedError") if hasattr(ex, n))
    if isinstance(exc, lost) or isinstance(getattr(exc, "cause", None), lost):
        return True
    return not isinstance(exc, (ex.RayTaskError, ex.TaskCancelledError))


class _Models:
    """The object refs of the shared models (original, retrained) the runs need, made again when lost.

    A model the driver's work folder holds is uploaded (``ray.put``: this driver owns it); any other is
    trained by a task, whose result the driver saves into its work folder as soon as it is ready. A run
    that Ray lost marks the refs it used as stale: the next run to need that model gets a fresh one,
    uploaded from the work folder when the driver saved it by then, else trained again; runs that
    fail together share one replacement. A model is dropped once no unfinished run needs it.
    """

    def __init__(self, ray, fns: dict, work: Path, device: str | None):
        self.ray, self.fns, self.work, self.device = ray, fns, work, device
        self.refs: dict[str, object] = {}  # model folder name -> current ref
        self.training: dict[object, Path] = {}  # a training task's ref -> the folder to save its model as
        self.users: dict[str, int] = {}  # model folder name -> unfinished runs that need it

    def _dirs(self, task: Task) -> tuple[Path, Path]:
        return original_dir(task, self.work), retrain_dir(task, self.work)

    def need(self, task: Task) -> None:
        for d in self._dirs(task):
            self.users[d.name] = self.users.get(d.name, 0) + 1

    def release(self, task: Task) -> None:
        for d in self._dirs(task):
            self.users[d.name] -= 1
            if not self.users[d.name]:
                self.refs.pop(d.name, None)

    def for_run(self, task: Task, stale: frozenset = frozenset()) -> tuple[object, object]:
        orig, retrain = self._dirs(task)
        o = self._ref(orig, stale, lambda: self.fns["original"].remote(task.to_dict(), self.device))
        return o, self._ref(retrain, stale, lambda: self.fns["retrain"].remote(task.to_dict(), o, self.device))

    def _ref(self, path: Path, stale: frozenset, train: Callable[[], object]) -> object:
        ref = self.refs.get(path.name)
        if ref is not None and ref not in stale:
            return ref
        if ref in self.training:  # its run failed after it finished, before the driver saved it: save now
            if not self.ray.wait([ref], timeout=0)[0]:
                return ref  # still training: not lost
            self.save(ref)
        if (path / RUN_FILE).exists():  # the driver holds it (saved, or from an earlier bench): upload
            ref = self.ray.put(shipment(path))
        else:
            ref = train()
            self.training[ref] = path
        self.refs[path.name] = ref
        return ref

    def save(self, ref) -> None:
        """Write a model a worker trained into the driver's work folder, so retries and later benches reuse it."""
        path = self.training.pop(ref)
        try:
            shipped = self.ray.get(ref)
        except Exception:  # lost: the runs that need it are resubmitted, or fail with the reason
            return
        if "files" not in shipped:  # training failed: its runs are stored as failed with the reason
            return
        files = dict(shipped["files"])
        record = json.loads(files[RUN_FILE])
        if "original" in record:  # a retrained model names its original: the driver's copy, not the worker's
            record["original"] = str(self.work / ORIGINALS / Path(record["original"]).name)
            files[RUN_FILE] = (to_json(record) + "\n").encode()
        unpack(files, path)


def _drive(ray, fns: dict, tasks: list[Task], store: Store, work: Path, device: str | None, max_retries: int,
           on_row: Callable[[dict], None] | None) -> Outcome:
    """Submit every run, then save models and rows as they come back, in whatever order they finish.

    A run Ray lost is resubmitted (with fresh models) up to ``max_retries`` times, then stored as
    failed with Ray's reason; the study goes on either way.
    """
    models = _Models(ray, fns, work, device)
    runs: dict[object, tuple[Task, int, frozenset]] = {}  # run ref -> (task, attempt, the model refs it got)

    def submit(task: Task, attempt: int, stale: frozenset = frozenset()) -> None:
        used = models.for_run(task, stale)
        runs[fns["run"].remote(task.to_dict(), *used, device)] = (task, attempt, frozenset(used))

    for t in tasks:
        models.need(t)
        submit(t, 1)
    outcome = Outcome()
    with progress_task("study (ray)", total=len(tasks)) as advance:
        while runs or models.training:
            ref = ray.wait([*runs, *models.training], num_returns=1)[0][0]
            if ref in models.training:
                models.save(ref)
                continue
            task, attempt, used = runs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:
                if ray_lost(ray, exc) and attempt <= max_retries:
                    try:
                        submit(task, attempt + 1, used)
                        continue
                    except Exception as again:  # not even that (object store full, model unreadable): give up
                        exc = again
                tries = f" (attempt {attempt} of {max_retries + 1})" if ray_lost(ray, exc) else ""
                result = {"row": failed_row(task, work, f"ray: {type(exc).__name__}{tries}: {exc}")}
            models.release(task)
            _finish(outcome, _save_run(result, task, work, store), task, on_row, advance)
    return outcome


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
        row = execute_task(t, None, root, device, write=False, shadows=_node_cache() / SHADOWS)
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
