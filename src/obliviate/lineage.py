"""Request lineage: which run an unlearned run came from, and everything forgotten since the original.

Deletion requests reach a served model one after another. Each ``forget`` run records its parent and
the cumulative request (the union of every class and sample id forgotten since the original
training), so that the next request on it excludes all of them: without the record a method would
read an earlier forgotten class as retain data and train it back in. Ids are stored inline when few,
else as ``forgotten_ids.txt`` (ascending, one per line) named by its SHA-256.

Paths are stored absolute and relative to the run, so a folder of runs moved as a whole still resolves.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import ArrayData, ForgetRequest, Forgotten
from .errors import CheckpointError, ObliviateError
from .io import read_regular, write_text
from .models.foreign import FOREIGN_PREFIX

IDS_FILE = "forgotten_ids.txt"
INLINE_IDS = 100  # more ids than this go to IDS_FILE


@dataclass
class Lineage:
    """Where a run stands in its chain: the original training run, the requests so far, their union."""

    root: Path  # the original training run (its snapshots serve DeepObliviate)
    forgotten: Forgotten = field(default_factory=Forgotten)
    requests: list[dict] = field(default_factory=list)  # [{"run": path, "request": dict, "method": name}], oldest first

    @property
    def depth(self) -> int:
        return len(self.requests)

    def runs(self) -> list[Path]:
        """The original and every run of the chain: folders a new forget run must not overwrite."""
        return [self.root, *(Path(r["run"]) for r in self.requests if isinstance(r.get("run"), str))]


def locate(base: Path, entry: dict) -> Path:
    """A recorded run: the path relative to ``base`` if it exists there, else the absolute one."""
    rel = entry.get("relpath")
    if rel is not None and (base / rel).is_dir():
        return (base / rel).resolve()
    return Path(entry["path"])


def pointer(target: Path, base: Path | None) -> dict:
    target = Path(target).resolve()
    return {"path": str(target), "relpath": os.path.relpath(target, Path(base).resolve()) if base else None}


def read_ids(run_path: Path, cumulative: dict) -> np.ndarray:
    """The cumulative ids of a run: inline, or from its ids file (checked against the recorded SHA-256).

    The file name comes from a received run.json, so only ``forgotten_ids.txt`` inside the run folder is
    read, and only if it is a regular file (not a link, pipe or folder): a record naming ``/etc/passwd``
    or ``..`` must not make ``forget`` read, hang on or quote another file.
    """
    if "ids" in cumulative:
        return np.asarray(cumulative["ids"], np.int64)
    path = Path(run_path) / IDS_FILE
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link; refused to follow it (the ids file must be the run's own)")
    if not path.exists():
        raise CheckpointError(f"{run_path}: the forgotten-ids file {IDS_FILE} is missing")
    try:
        ids = Forgotten(ids=[int(t) for t in read_regular(path, "forgotten-ids file").decode("utf-8").split()])
    except ObliviateError as exc:
        raise CheckpointError(str(exc)) from None
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise CheckpointError(f"corrupt {path}: not a list of integer ids") from None
    if ids.ids_sha256() != cumulative["ids_sha256"]:
        raise CheckpointError(f"{path} does not match the SHA-256 recorded in {run_path}/run.json")
    return ids.ids


def _imported(record: dict) -> bool:
    """A user's own model taken in without a retraining recipe: its ``config`` is null, on purpose."""
    model = record.get("model")
    return (record.get("config") is None and isinstance(model, dict)
            and str(model.get("name", "")).startswith(FOREIGN_PREFIX))


def check_record(record: dict, where: Path) -> None:
    """A received run.json has the shapes every reader relies on; else one CheckpointError naming the field.

    Why here, once: run folders come from others, and a field of the wrong type (``config: null``, a
    junk request, ``lineage: {}``) would otherwise surface as a traceback in whichever reader met it first.
    """
    def need(ok: bool, field: str, want: str) -> None:
        if not ok:
            raise CheckpointError(f"corrupt {where}: {field} must be {want}")

    for key, want in (("kind", str), ("config", dict), ("model", dict), ("data", dict), ("snapshots", dict)):
        need(key not in record or isinstance(record[key], want) or (key == "config" and _imported(record)), key,
             f"a {'string' if want is str else 'mapping'}")
    data = record.get("data") or {}
    need(isinstance(data.get("spec", {}), dict), "data.spec", "a mapping")
    need(isinstance(data.get("source_hash", ""), str), "data.source_hash", "a string")
    if record.get("kind") != "forget":
        return
    for key in ("original", "parent"):
        need(isinstance(record.get(key, ""), str), key, "a path")
    try:
        ForgetRequest.from_dict(record.get("request"))
        lin = record.get("lineage")
        if lin is not None:
            _check_lineage(lin, need)
    except ObliviateError as exc:  # the request's own message names the field
        raise CheckpointError(f"corrupt {where}: {exc}") from None


def _check_lineage(lin, need) -> None:
    need(isinstance(lin, dict), "lineage", "a mapping")
    for key in ("parent", "original"):
        ptr = lin.get(key)
        need(isinstance(ptr, dict) and isinstance(ptr.get("path"), str)
             and isinstance(ptr.get("relpath"), (str, type(None))), f"lineage.{key}", "a {path, relpath} mapping")
    cum = lin.get("cumulative")
    need(isinstance(cum, dict), "lineage.cumulative", "a mapping")
    ForgetRequest.from_dict({"classes": cum.get("classes"), "ids": cum.get("ids")})  # integers only
    need(isinstance(cum.get("classes"), list), "lineage.cumulative.classes", "a list of classes")
    need(isinstance(cum.get("ids_sha256"), str), "lineage.cumulative.ids_sha256", "a string")
    need(isinstance(cum.get("ids_count"), int), "lineage.cumulative.ids_count", "an integer")
    need(isinstance(cum.get("ids"), list) or cum.get("ids_file") == IDS_FILE, "lineage.cumulative",
         f"inline ids or ids_file {IDS_FILE!r}")
    requests = lin.get("requests")
    need(isinstance(requests, list) and all(isinstance(r, dict) for r in requests), "lineage.requests",
         "a list of mappings")
    for r in requests:
        ForgetRequest.from_dict(r.get("request"))
    need(isinstance(lin.get("depth"), int), "lineage.depth", "an integer")


def read_lineage(path: Path, record: dict, train: ArrayData, num_classes: int) -> Lineage:
    """The lineage of a finished run. A training run starts one; a forget run made before lineages
    were recorded is read as a chain of one (its own request)."""
    path = Path(path).resolve()
    if record.get("kind") != "forget":
        return Lineage(root=path)
    lin = record.get("lineage")
    if lin is None:
        request = ForgetRequest.from_dict(record["request"])
        return Lineage(root=Path(record.get("original", path)), forgotten=Forgotten.of(request, train, num_classes),
                       requests=[{"run": str(path), "request": record["request"], "method": record.get("method")}])
    cum = lin["cumulative"]
    return Lineage(root=locate(path, lin["original"]),
                   forgotten=Forgotten(tuple(cum["classes"]), read_ids(path, cum)), requests=list(lin["requests"]))


def cumulative_record(forgotten: Forgotten, out: Path | None) -> dict:
    """The cumulative request as run.json / certificate.json hold it; writes the ids file when large."""
    rec = {"classes": list(forgotten.classes), "ids_count": int(len(forgotten.ids)),
           "ids_sha256": forgotten.ids_sha256()}
    if len(forgotten.ids) <= INLINE_IDS:
        rec["ids"] = [int(i) for i in forgotten.ids]
    else:
        rec["ids_file"] = IDS_FILE
        if out is not None:
            write_text(Path(out) / IDS_FILE, forgotten.ids_text())
    return rec


def lineage_record(parent: Path, parent_lineage: Lineage, forgotten: Forgotten, request: ForgetRequest,
                   method: str, out: Path | None) -> dict:
    """What a new forget run records about where it came from (``out``: its directory, if saved)."""
    here = str(Path(out).resolve()) if out is not None else None
    return {"parent": pointer(parent, out), "original": pointer(parent_lineage.root, out),
            "depth": parent_lineage.depth + 1, "cumulative": cumulative_record(forgotten, out),
            "requests": [*parent_lineage.requests, {"run": here, "request": request.to_dict(), "method": method}]}
