"""Executors: run a study's missing tasks in this process, or fan them out over Ray.

Both call the same ``execute_task`` (a pure function of task, store path and work folder that writes
its own row), so a result never depends on where it ran. Ray is an optional extra, imported only here
and only when asked for.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..env import parse_device, pick_device
from ..errors import ObliviateError
from ..io import check_writable_dir
from ..progress import progress_task


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
from .runner import Task, execute_task, original_dir, retrain_dir


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
            workers: int | None = None, gpus_per_run: float | None = None,
            on_row: Callable[[dict], None] | None = None) -> Outcome:
    """Fan the runs out over Ray: shared models first (one task each), then every method run.

    ``address`` None starts a local Ray on this machine; "auto" or "ray://host:10001" joins a cluster
    (the store and the work folder must then be on storage every node sees). Each run asks for one GPU
    when the cluster has GPUs (``gpus_per_run`` overrides), so Ray places one run per GPU.
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
        remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)
        prepare_fn = remote(_prepare_shared)
        run_fn = remote(_run_after)
        outcome = Outcome()
        # one preparation task per retrained model (it trains the original first, under a lock)
        prep: dict[str, object] = {}
        for t in _order(tasks):
            name = retrain_dir(t, work).name
            if name not in prep:
                prep[name] = prepare_fn.remote(t.to_dict(), str(work), device)
        pending = {run_fn.remote(t.to_dict(), str(store_path), str(work), device,
                                 prep[retrain_dir(t, work).name]): t for t in tasks}
        with progress_task("study (ray)", total=len(tasks)) as advance:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except Exception as exc:  # a worker died: the run is missing, not failed
                        row = {"key": task.key, "status": "failed", "error": f"ray worker: {exc}"}
                    outcome.add(row)
                    if on_row:
                        on_row(row)
                    advance(1, info=_escape(f"{task.title}: {row['status']}"))
        return outcome
    finally:
        if started_here:
            ray.shutdown()


def _prepare_shared(task: dict, work: str, device: str | None) -> str:
    """Ray task: make sure the original and the retrained model of this task exist on disk."""
    from ..env import pick_device
    from .runner import ensure_original, ensure_retrain, load_bundle

    t = Task.from_dict(task)
    dev = pick_device(device)
    bundle = load_bundle(t.data_spec)
    try:
        original, run = ensure_original(t, bundle, Path(work), dev)
        ensure_retrain(t, bundle, original, run, Path(work), dev)
    except Exception as exc:  # the runs that depend on it record the error themselves
        return f"failed: {type(exc).__name__}: {exc}"
    return str(original_dir(t, Path(work)))


def _run_after(task: dict, store_path: str, work: str, device: str | None, _prepared: str) -> dict:
    """Ray task: one run; ``_prepared`` is the preparation task's result, which Ray waits for."""
    return execute_task(task, store_path, work, device)


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
          on_row: Callable[[dict], None] | None = None) -> BenchResult:
    """Validate a study, plan its runs, skip the finished ones and execute the rest.

    The work folder (default: ``work/`` beside the store) holds the original and retrained models and
    each run's figures; the store holds the rows. Both survive a crash: re-running resumes.
    """
    from .runner import make_plan
    from .store import Store
    from .study import load_study

    if executor not in ("local", "ray"):
        raise ObliviateError(f"unknown executor {executor!r}; choose local or ray")
    if executor == "ray":
        import_ray()  # fail before any work when Ray is missing
    store_path = Path(store_path) if store_path else DEFAULT_STORE
    work = Path(work) if work else store_path.parent / "work"
    if not dry_run:  # a store or work folder we cannot write would lose every run's result
        check_writable_dir(store_path.parent, "--store")
        if store_path.exists() and (not store_path.is_file() or not os.access(store_path, os.R_OK | os.W_OK)):
            raise ObliviateError(f"--store {store_path} is not a writable file")
        check_writable_dir(work, "--work")
    study = load_study(study_path, data_roots=data_roots)
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
        result.outcome = run_ray(todo, store_path, work, device, address=address, workers=workers, on_row=on_row)
    else:
        result.outcome = run_local(todo, store_path, work, device, on_row=on_row)
    return result
