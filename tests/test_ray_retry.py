"""The Ray executor's resubmission logic, against a fake Ray that loses what a test tells it to.

A real cluster loses objects and workers only under load or by chance (tests/test_ray_cluster.py runs
one); here each loss is scripted, so every path is taken on every run.
"""
from __future__ import annotations

import json
import os
import types
from collections import Counter
from pathlib import Path

import pytest

from obliviate.harness.executor import _drive, ray_lost
from obliviate.harness.runner import RUNS, Task, original_dir, retrain_dir, task_row
from obliviate.harness.store import Store


class RayError(Exception):
    pass


class RayTaskError(RayError):  # the task's own code raised
    pass


class TaskCancelledError(RayError):
    pass


class OwnerDiedError(RayError):  # what a raylet reports when it cannot reach an object's owner
    pass


class WorkerCrashedError(RayError):
    def __init__(self):
        super().__init__("The worker died unexpectedly while executing this task.")


class NodeDiedError(RayError):
    pass


class Ref:
    """A fake object ref: a value, or a call evaluated (once) when first fetched, as Ray would run it."""

    def __init__(self, ray: "FakeRay", name: str = "put", args: tuple = (), value=None):
        self.ray, self.name, self.args, self.value, self.done = ray, name, args, value, name == "put"
        self.error: Exception | None = None

    def resolve(self):
        if not self.done:
            self.done = True
            try:
                args = [a.resolve() if isinstance(a, Ref) else a for a in self.args]  # a failed input fails us
                self.value = self.ray.call(self.name, args)
            except RayError as exc:
                self.error = exc
        if self.error:
            raise self.error
        return self.value


class FakeRay:
    """Runs each task in this process when its result is first needed; ``fail(name, task, attempt)`` may
    return the error Ray would report for that attempt instead."""

    def __init__(self, fail=lambda name, task, attempt: None):
        self.fail, self.attempts, self.puts = fail, Counter(), 0
        self.exceptions = types.SimpleNamespace(RayTaskError=RayTaskError, TaskCancelledError=TaskCancelledError)

    def remote(self, name: str):
        return types.SimpleNamespace(remote=lambda *args: Ref(self, name, args))

    def put(self, value) -> Ref:
        self.puts += 1
        return Ref(self, value=value)

    def wait(self, refs: list, num_returns: int = 1, timeout=None):
        return refs[:num_returns], refs[num_returns:]  # everything is ready; the order decides

    def get(self, ref: Ref):
        return ref.resolve()

    def call(self, name: str, args: list):
        task = Task.from_dict(args[0])
        label = name if name != "run" else f"run {task.method}"
        self.attempts[label] += 1
        error = self.fail(name, task, self.attempts[label])
        if error:
            raise error
        return FAKE[name](task, *args[1:])


def _model(kind: str, record: dict) -> dict:
    return {"files": {"run.json": json.dumps({"kind": kind, **record}).encode(), "model.pt": kind.encode()},
            "digest": kind}


FAKE = {
    "original": lambda task, device: _model("train", {}),
    "retrain": lambda task, original, device: _model("retrain", {"original": str(original_dir(task, Path("/node")))}),
    "run": lambda task, original, retrain, device: {
        "row": {**task_row(task, Path("/node") / RUNS / task.key), "status": "done", "forget_acc": 0.5,
                "metrics": {"forget_acc": 0.5, "figures": ["f.png"]}, "record": {}},
        "files": {"row.json": b"{}", "f.png": b"png"}},
}


def _task(method: str) -> Task:
    return Task("s", "digits", {"name": "digits"}, "hash", "cnn", {"epochs": 1, "seed": 0}, "classes 3",
                {"kind": "classes", "classes": [3]}, method, method, {}, 0, {}, reference=method == "retrain")


TASKS = [_task("retrain"), _task("finetune")]


def _bench(tmp_path: Path, ray: FakeRay, max_retries: int = 2) -> dict[str, dict]:
    fns = {name: ray.remote(name) for name in ("original", "retrain", "run")}
    with Store(tmp_path / "s.sqlite") as store:
        outcome = _drive(ray, fns, TASKS, store, tmp_path / "work", "cpu", max_retries, None)
        rows = {r["method"]: r for r in store.rows("s", status=None)}
    assert len(outcome.done) + len(outcome.failed) == len(rows) == 2  # every run stored, once
    return rows


def test_lost_run_is_resubmitted_with_the_models_the_driver_saved(tmp_path):
    """A run whose model objects Ray lost (OwnerDiedError, which Ray never retries) runs again on fresh
    copies uploaded from the driver's work folder: nothing is retrained."""
    ray = FakeRay(lambda name, task, n: OwnerDiedError("owner died") if task.method == "finetune" and n == 1 else None)
    rows = _bench(tmp_path, ray)
    assert {m: r["status"] for m, r in rows.items()} == {"retrain": "done", "finetune": "done"}
    assert ray.attempts == {"original": 1, "retrain": 1, "run retrain": 1, "run finetune": 2}
    assert ray.puts == 2  # the original and the retrained model, each uploaded once for the retry
    work = tmp_path / "work"
    for folder in (original_dir(TASKS[0], work), retrain_dir(TASKS[0], work)):
        assert (folder / "model.pt").exists()
    assert (work / RUNS / TASKS[1].key / "f.png").read_bytes() == b"png"


def test_run_lost_every_time_is_stored_failed_with_the_reason(tmp_path):
    ray = FakeRay(lambda name, task, n: WorkerCrashedError() if task.method == "finetune" and name == "run" else None)
    rows = _bench(tmp_path, ray, max_retries=2)
    assert rows["retrain"]["status"] == "done"  # the study went on
    failed = rows["finetune"]
    assert failed["status"] == "failed" and failed["error"] == \
        "ray: WorkerCrashedError (attempt 3 of 3): The worker died unexpectedly while executing this task."
    assert ray.attempts["run finetune"] == 3
    assert not (tmp_path / "work" / RUNS / TASKS[1].key).exists()  # nothing half-written


def test_lost_training_is_redone_once_for_all_the_runs_that_need_it(tmp_path):
    """The node training the original model died: both runs fail on it, and share one new training."""
    ray = FakeRay(lambda name, task, n: NodeDiedError("node left") if name == "original" and n == 1 else None)
    rows = _bench(tmp_path, ray, max_retries=1)
    assert {r["status"] for r in rows.values()} == {"done"}
    assert ray.attempts["original"] == 2 and ray.attempts["retrain"] == 1  # the first retrain never got its input
    record = json.loads((retrain_dir(TASKS[0], tmp_path / "work") / "run.json").read_text())
    assert record["original"] == str(original_dir(TASKS[0], tmp_path / "work"))  # the driver's copy


def test_a_resubmission_that_fails_is_stored_as_failed(tmp_path):
    """The object store is full when the driver uploads the models again: that run fails, the study goes on."""
    ray = FakeRay(lambda name, task, n: OwnerDiedError("owner died") if task.method == "finetune" else None)

    def full(value):
        raise RayError("object store full")

    ray.put = full
    rows = _bench(tmp_path, ray)
    assert rows["retrain"]["status"] == "done"
    assert rows["finetune"]["error"] == "ray: RayError (attempt 1 of 3): object store full"


@pytest.mark.parametrize("max_retries", [0, 2])
def test_an_error_of_the_task_itself_is_not_retried(tmp_path, max_retries):
    ray = FakeRay(lambda name, task, n: RayTaskError("ValueError: bad") if task.method == "finetune" else None)
    rows = _bench(tmp_path, ray, max_retries=max_retries)
    assert rows["finetune"]["error"] == "ray: RayTaskError: ValueError: bad" and ray.attempts["run finetune"] == 1


def test_no_retries_stores_the_first_loss(tmp_path):
    ray = FakeRay(lambda name, task, n: OwnerDiedError("owner died") if task.method == "finetune" else None)
    rows = _bench(tmp_path, ray, max_retries=0)
    assert rows["finetune"]["error"] == "ray: OwnerDiedError (attempt 1 of 1): owner died"
    assert ray.attempts["run finetune"] == 1


def test_real_ray_errors_are_told_apart():
    """Ray's own error classes: lost workers, nodes and objects are worth a retry, a task's exception is not."""
    ray = pytest.importorskip("ray")
    ex = ray.exceptions
    assert ray_lost(ray, ex.WorkerCrashedError()) and ray_lost(ray, ex.NodeDiedError("node left"))
    assert issubclass(ex.OwnerDiedError, ex.ObjectLostError) and not issubclass(ex.OwnerDiedError, ex.RayTaskError)
    assert not ray_lost(ray, ex.RayTaskError("run", "Traceback ...", ValueError("bad")))
    # a task whose argument's owner died: Ray wraps the loss in a RayTaskError (seen under load)
    wrapped = ex.RayTaskError("_remote_run", "Traceback ...", ex.OwnerDiedError("ab" * 14, "", ""))
    assert ray_lost(ray, wrapped) and ray_lost(ray, wrapped.as_instanceof_cause())


class _InitSetsAuth:
    """A Ray whose local ``init`` turns token authentication on for the whole process, as Ray 2.60 does."""

    def __init__(self):
        self.up = False

    def is_initialized(self):
        return self.up

    def init(self, **kw):
        self.up, self.kw = True, kw
        os.environ["RAY_AUTH_MODE"] = "token"

    def shutdown(self):
        self.up = False


def test_local_ray_leaves_the_process_auth_settings_as_it_found_them(monkeypatch):
    """A later bench that joins a cluster without token auth must not speak it (its objects would be
    unreachable: OwnerDiedError on every run); one that was asked for stays asked for."""
    from obliviate.harness.executor import _ray_session

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    fake = _InitSetsAuth()
    with _ray_session(fake, None, 2):
        assert fake.kw["num_cpus"] == 2 and fake.up
    assert not fake.up and "RAY_AUTH_MODE" not in os.environ
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with _ray_session(fake, None, None):
        pass
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    fake.up = True  # the caller's own Ray: joined, not shut down
    with _ray_session(fake, "auto", None):
        pass
    assert fake.up
