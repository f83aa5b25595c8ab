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
from .errors import CheckpointError
from .io import write_text

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
    """The cumulative ids of a run: inline, or from its ids file (checked against the recorded SHA-256)."""
    if "ids" in cumulative:
        return np.asarray(cumulative["ids"], np.int64)
    path = Path(run_path) / cumulative["ids_file"]
    if not path.exists():
        raise CheckpointError(f"{run_path}: the forgotten-ids file {cumulative['ids_file']} is missing")
    ids = Forgotten(ids=[int(t) for t in path.read_text().split()])
    if ids.ids_sha256() != cumulative["ids_sha256"]:
        raise CheckpointError(f"{path} does not match the SHA-256 recorded in {run_path}/run.json")
    return ids.ids


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
