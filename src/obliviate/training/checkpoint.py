"""Run directories: ``model.pt`` + ``run.json`` (+ ``snapshots/``), written atomically.

``run.json`` is written last, so its presence marks a finished run; a directory with snapshots and no
``run.json`` is an interrupted run that ``train`` resumes.

Run folders are shared and downloaded, so every ``.pt`` here is read weights-only (tensors and plain
values; no pickle that names a function): a planted ``model.pt`` or snapshot is refused, never run.
This module owns the snapshot layout (``snapshots/step_*.pt``, ``block_*.pt``, ``blocks.npy``).
"""
from __future__ import annotations

import copy
import io
import json
import os
import pickle
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ObliviateError
from ..io import (
    bytes_sha256,
    check_writable_dir,
    file_sha256,
    read_regular,
    torch_save,
    write_bytes,
    write_json,
    write_npy,
    write_text,
)
from ..lineage import check_record
from ..models import Classifier, ModelSpec, build_model
from ..models.foreign import FOREIGN_PREFIX, rebuild

MODEL_FILE, RUN_FILE, SNAP_DIR, BLOCKS_FILE = "model.pt", "run.json", "snapshots", "blocks.npy"
#: Keys every snapshot of a kind must hold (the kind is the file name's prefix).
SNAPSHOT_KEYS = {"step": ("key", "step", "model", "optimizer", "scheduler", "rng"),
                 "block": ("key", "block", "model", "optimizer", "rng")}
_SNAPSHOT_GLOBS = ("step_*.pt", "ids_*.npy", "block_*.pt", BLOCKS_FILE)


def first_line(exc: BaseException) -> str:
    """The first line of an error (torch and numpy messages span many; the CLI prints one)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def read_checked(path: str | Path, what: str, sha256: str | None = None) -> bytes:
    """The bytes of a regular file (a pipe or device is refused unopened) that, with ``sha256``, must hash to it.

    Hashing the very bytes that are then parsed leaves no gap for a swap between check and use."""
    try:
        data = read_regular(path, what)
    except ObliviateError as exc:
        raise CheckpointError(str(exc)) from None
    if sha256 is not None and bytes_sha256(data) != sha256:
        raise CheckpointError(f"{what} {path} does not match the SHA-256 its training run recorded "
                              "(it was replaced or edited after training); refused to use it")
    return data


def load_weights(path: str | Path, what: str, sha256: str | None = None) -> Any:
    """``torch.load`` restricted to tensors and plain values, with a one-line error for a bad file.

    Why weights-only: an unrestricted load unpickles whatever the file names, so a received run folder
    could run code on the reader's machine. ``sha256``: the hash the file must have (else refused).
    """
    data = read_checked(path, what, sha256)
    try:
        with warnings.catch_warnings():  # torch warns (several lines) about pickle protocols it did not write
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message is many lines; keep the one naming the problem
        detail = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln),
                      first_line(exc))
        if "GLOBAL" in detail:
            raise CheckpointError(f"{what} {path} holds objects other than tensors and plain values ({detail}); "
                                  "refused to load it (unpickling it could run code)") from None
        raise CheckpointError(f"corrupt {what} {path}: {detail}") from None
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        raise CheckpointError(f"corrupt {what} {path}: {type(exc).__name__}: {first_line(exc)}") from None


#: Beside ``model.pt``, a user's own model is also saved in the two forms their code loads directly.
SAFETENSORS_FILE, STATE_DICT_FILE = "model.safetensors", "state_dict.pt"


def _state(model: Classifier) -> dict[str, torch.Tensor]:
    """The weights under the model's own keys (a user's model: their module's keys, not the wrapper's)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.unwrap().state_dict().items()}


def save_model(path: str | Path, model: Classifier) -> None:
    torch_save(path, {"format": "obliviate-model/1", "spec": model.spec.to_dict(), "state_dict": _state(model)})


def save_user_weights(folder: Path, model: Classifier) -> list[str]:
    """``model.safetensors`` and ``state_dict.pt`` (plain state dict) of a user's own model; [] for a zoo model."""
    if not model.spec.name.startswith(FOREIGN_PREFIX):
        return []
    from safetensors.torch import save as st_save

    state = _state(model)
    write_bytes(folder / SAFETENSORS_FILE, st_save(state, metadata={"obliviate_model": model.spec.name}))
    torch_save(folder / STATE_DICT_FILE, state)
    return [SAFETENSORS_FILE, STATE_DICT_FILE]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A user's weights file: ``.safetensors``, or a ``.pt``/``.pth`` state dict read weights-only (never unpickled
    beyond tensors); a dict holding ``state_dict`` or ``model_state_dict`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist or is not a regular file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"corrupt weights file {path}: {first_line(exc)}") from None
    blob = load_weights(path, "weights file")
    for key in ("state_dict", "model_state_dict"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointError(f"weights file {path} holds no state dict (name -> tensor)")
    return blob


def load_model_file(path: str | Path, device: torch.device | str = "cpu", model_class=None) -> Classifier:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    blob = load_weights(path, "checkpoint")
    try:
        spec = ModelSpec.from_dict(blob["spec"])
    except Exception as exc:  # not a dict, no spec, a spec of the wrong types
        raise CheckpointError(f"corrupt checkpoint {path}: no model spec ({type(exc).__name__})") from None
    if spec.name.startswith(FOREIGN_PREFIX):  # a user's own architecture: rebuilt from their class
        return rebuild(spec, blob.get("state_dict"), model_class, str(path)).to(device)
    model = build_model(spec)
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {spec.name!r}: {first_line(exc)}") from None
    return model.to(device)


@dataclass
class RunDir:
    """A finished run directory (train, retrain or forget)."""

    path: Path
    record: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def load_model(self, device: torch.device | str = "cpu", model_class=None) -> Classifier:
        """The model, refused when ``run.json`` records another architecture than ``model.pt`` holds.
        ``model_class``: the user's class, for a run of their own model (importing it is the caller's choice)."""
        model = load_model_file(self.model_path, device, model_class)
        recorded, held = self.record.get("model"), model.spec.to_dict()
        if recorded is not None:  # check_record made sure it is a mapping
            keys = ("name", "input_shape", "num_classes", "options")
            if any(json.dumps(recorded.get(k), sort_keys=True) != json.dumps(held[k], sort_keys=True) for k in keys):
                raise CheckpointError(f"{self.path}: {RUN_FILE} records a {recorded.get('name')!r} model "
                                      f"{recorded.get('input_shape')}, {MODEL_FILE} holds a {held['name']!r} model "
                                      f"{held['input_shape']}: the folder was tampered with or mixed up")
        return model

    @property
    def snapshot_dir(self) -> Path:
        return self.path / SNAP_DIR


def open_run(path: str | Path) -> RunDir:
    """Open a finished run directory, with a clear error for a missing, unfinished or corrupt one."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    run_file = path / RUN_FILE
    if not run_file.exists():
        unfinished = (path / SNAP_DIR).exists()
        hint = " (it holds snapshots of an unfinished run: re-run train to resume)" if unfinished else ""
        raise CheckpointError(f"{path} is not a finished run: no {RUN_FILE}{hint}")
    try:
        record = json.loads(read_checked(run_file, "run record"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"corrupt {run_file}: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"corrupt {run_file}: expected a JSON object, got {type(record).__name__}")
    if not (path / MODEL_FILE).exists():
        raise CheckpointError(f"{path} has {RUN_FILE} but no {MODEL_FILE}")
    check_record(record, run_file)
    return RunDir(path, record)


def finish_run(path: str | Path, model: Classifier, record: dict, files: dict[str, str] | None = None) -> RunDir:
    """Write the model and ``files`` (name -> text), then ``run.json`` (the completion marker)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / MODEL_FILE, model)
    save_user_weights(path, model)
    for name, text in (files or {}).items():
        write_text(path / name, text)
    write_json(path / RUN_FILE, record)
    return RunDir(path, record)


def check_output_dir(path: str | Path, overwrite: bool, reads: list[str | Path] = ()) -> Path:
    """Refuse to clobber a finished run unless asked, and a folder we cannot write, before any work.

    Also refused: an empty path (it would mean the current folder), a ``snapshots`` entry that is a
    symlink (writes and ``--force`` deletions would land in whatever folder it points to), and a folder
    that is one of ``reads`` (the runs this command reads: overwriting the input loses it and makes a run
    its own parent).
    """
    if not str(path).strip():
        raise CheckpointError("--out is empty: name the run folder to write")
    path = Path(path)
    if (path / RUN_FILE).exists() and not overwrite:
        raise CheckpointError(f"{path} already holds a finished run; choose another --out or pass --force")
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"--out {path} exists and is not a directory")
    if (path / SNAP_DIR).is_symlink():
        raise CheckpointError(f"{path / SNAP_DIR} is a symbolic link; refused to write or delete snapshots through "
                              "it (replace it with a folder, or choose another --out)")
    for other in reads:
        if same_folder(path, other):
            raise CheckpointError(f"--out {path} is the run it reads ({other}); choose another --out")
    return check_writable_dir(path, "--out")


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same existing folder (through symlinks, ``..`` or a bind mount)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


# ------------------------------------------------------------------ snapshots
def snapshot_file(snap_dir: Path, kind: str, n: int) -> Path:
    """``step_00000120.pt`` (plain training, by global step) or ``block_003.pt`` (after block 3)."""
    return snap_dir / (f"step_{n:08d}.pt" if kind == "step" else f"block_{n:03d}.pt")


def save_snapshot(snap_dir: Path, kind: str, n: int, blob: dict) -> None:
    """Write a snapshot; ``blob`` holds only tensors and plain values, so it loads weights-only."""
    torch_save(snapshot_file(snap_dir, kind, n), {kind: n, **blob})


def load_snapshot(path: Path, key: str | None = None, sha256: str | None = None) -> dict:
    """A snapshot, weights-only and checked: all keys of its kind present and, with ``key``, of this run
    (with ``sha256``, also the very file the run recorded)."""
    blob = load_weights(path, "snapshot", sha256)
    kind = path.name.split("_")[0]
    missing = [k for k in SNAPSHOT_KEYS.get(kind, ()) if not isinstance(blob, dict) or k not in blob]
    if not isinstance(blob, dict) or missing:
        raise CheckpointError(f"corrupt snapshot {path}: not an obliviate {kind} snapshot "
                              f"(missing {', '.join(missing) or 'everything'})")
    if key is not None and blob.get("key") != key:
        raise CheckpointError(f"{path.parent} holds snapshots of a different run (config or data differ); "
                              "choose another --out")
    return blob


def clear_snapshots(snap_dir: Path) -> None:
    """Delete the snapshot files of this layout (and only those) from ``snap_dir``."""
    for pattern in _SNAPSHOT_GLOBS:
        for p in snap_dir.glob(pattern):
            p.unlink(missing_ok=True)


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_state() -> dict:
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


@dataclass
class TrainingSnapshots:
    """Where a training run's snapshots go, and what earlier segments of a resumed run did (their steps and
    seconds count too). ``snap_dir`` None: no snapshots (nothing is written or resumed)."""

    snap_dir: Path | None
    key: str  # the run's config hash: a snapshot of another run is never resumed
    discard: bool  # --force: delete unusable snapshots instead of stopping
    t0: float
    prior_seconds: float = 0.0
    fresh: Path | None = None  # the run folder this call created: removed if training diverges

    def seconds(self) -> float:
        return self.prior_seconds + time.perf_counter() - self.t0

    def resume(self, kind: str, model, optimizer, sched=None) -> dict | None:
        """Load the newest snapshot of ``kind`` into model/optimiser(/schedule) and restore the RNG.

        One rule for every way a snapshot can be unusable (unreadable, of another run, of another
        shape): it stops the run (it may be someone's work) unless ``discard`` (``--force``), which
        deletes the snapshots and starts over from the untouched initial state. Returns None then.
        """
        snaps = sorted(self.snap_dir.glob(f"{kind}_*.pt")) if self.snap_dir is not None else []
        if not snaps:
            return None
        parts = [p for p in (model, optimizer, sched) if p is not None]
        initial = [copy.deepcopy(p.state_dict()) for p in parts]
        try:
            blob = load_snapshot(snaps[-1], self.key)
            try:
                model.load_state_dict(blob["model"])
                optimizer.load_state_dict(blob["optimizer"])
                if sched is not None:
                    sched.load_state_dict(blob["scheduler"])
                _restore_rng(blob["rng"])
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise CheckpointError(f"snapshot in {self.snap_dir} does not fit this run: {type(exc).__name__}: "
                                      f"{first_line(exc)}") from None
        except CheckpointError as exc:
            if not self.discard:
                raise CheckpointError(f"{exc}; or pass --force to delete those snapshots and start over") from None
            for part, state in zip(parts, initial):  # a half-applied snapshot must not leak into the new start
                part.load_state_dict(state)
            clear_snapshots(self.snap_dir)
            return None
        self.prior_seconds = float(blob.get("seconds", 0.0))
        return blob

    def save(self, kind: str, n: int, model, optimizer, sched=None, steps: int | None = None) -> None:
        blob = {"key": self.key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": _rng_state(), "seconds": self.seconds()}
        if sched is not None:
            blob["scheduler"] = sched.state_dict()
        if steps is not None:
            blob["steps"] = steps
        save_snapshot(self.snap_dir, kind, n, blob)

    def save_block_assignment(self, ids: np.ndarray, blocks: np.ndarray) -> None:
        write_npy(self.snap_dir / BLOCKS_FILE, np.stack([ids, blocks], 1))

    def save_step_ids(self, step: int, ids: list[np.ndarray]) -> None:
        """The sample ids of each step since the last snapshot (-1 pads a short last batch)."""
        write_npy(self.snap_dir / f"ids_{step:08d}.npy", np.stack(ids))

    def step_files(self) -> list[str]:
        return sorted(p.name for p in self.snap_dir.glob("step_*.pt")) if self.snap_dir else []


def block_files(blocks: int, snap_dir: Path | None = None) -> dict:
    """The record's pointers to a block-incremental run's snapshots (relative to the run folder) and, with
    ``snap_dir``, the SHA-256 of each: what binds the block index and every θ_j to this run's record."""
    names = [snapshot_file(Path(), "block", j).name for j in range(blocks + 1)] + [BLOCKS_FILE]
    out = {"files": [f"{SNAP_DIR}/{n}" for n in names[:-1]], "assignment": f"{SNAP_DIR}/{BLOCKS_FILE}"}
    if snap_dir is not None:
        out["sha256"] = {n: file_sha256(Path(snap_dir) / n, what="snapshot") for n in names}
    return out


def load_block_snapshot(run_path: str | Path, j: int, sha256: str | None = None) -> dict:
    """θ_j and its optimiser state from a block-incremental run (j = 0 is the initialisation)."""
    p = snapshot_file(Path(run_path) / SNAP_DIR, "block", j)
    if not p.exists():
        raise CheckpointError(f"snapshot {p} is missing")
    return load_snapshot(p, sha256=sha256)


def load_block_assignment(run_path: str | Path, sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, block) arrays of a block-incremental run (``sha256``: the hash the index must have)."""
    p = Path(run_path) / SNAP_DIR / BLOCKS_FILE
    if not p.exists():
        raise CheckpointError(f"{run_path} was not trained in block mode (no {p.name}); "
                              "train with --blocks B --epochs-per-block E")
    data = read_checked(p, "block index", sha256)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds on a truncated or foreign file
        raise CheckpointError(f"corrupt {p}: {first_line(exc)}") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise CheckpointError(f"corrupt {p}: expected an (n, 2) integer array of (id, block), "
                              f"got {arr.dtype} {arr.shape}")
    ids, blocks = arr[:, 0], arr[:, 1]
    if len(blocks) and blocks.min() < 0:
        raise CheckpointError(f"corrupt {p}: negative block number {int(blocks.min())}")
    if len(np.unique(ids)) != len(ids):
        raise CheckpointError(f"corrupt {p}: sample ids repeat (each id belongs to one block)")
    return ids, blocks


@dataclass
class Snapshots:
    """A finished run's snapshots as a method reads them: its recorded recipe, the block of every sample
    id, and θ_j. Methods get this object, not the folder, so the file layout stays in this module."""

    path: Path  # the run directory (named in errors)

    def __str__(self) -> str:
        return str(self.path)

    def config(self) -> dict | None:
        """The run's recorded ``TrainConfig`` as a dict; None when the run has no readable record of it."""
        try:
            return open_run(self.path).record.get("config") or None
        except CheckpointError:
            return None

    def has_blocks(self) -> bool:
        return (self.path / SNAP_DIR / BLOCKS_FILE).exists()

    def block_assignment(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, block) arrays; CheckpointError when the run was not block-trained or the index was changed."""
        if not self.has_blocks():
            return load_block_assignment(self.path)  # says the run was not block-trained
        return load_block_assignment(self.path, self.recorded_sha256(BLOCKS_FILE))

    def block(self, j: int) -> dict:
        """θ_j and its optimiser state (j = 0 is the initialisation), checked against the run's record."""
        return load_block_snapshot(self.path, j, self.recorded_sha256(snapshot_file(Path(), "block", j).name))

    def recorded_sha256(self, name: str) -> str:
        """The SHA-256 the training run recorded for ``snapshots/name``.

        Why: DeepObliviate retrains only the blocks the index says hold the deleted ids, from θ_{d−1}; an
        edited index or a swapped snapshot would make it restart from weights that saw those ids and still
        call the result exact retraining. A file is used only if it is the one this run wrote.
        """
        record = open_run(self.path).record
        snaps = record.get("snapshots")
        hashes = snaps.get("sha256") if isinstance(snaps, dict) else None
        if not isinstance(hashes, dict) or not isinstance(hashes.get(name), str):
            raise CheckpointError(f"{self.path / RUN_FILE} records no SHA-256 of {SNAP_DIR}/{name} (made before "
                                  "obliviate bound snapshots to their run, or edited): its snapshots cannot be "
                                  "trusted; retrain it with --blocks")
        return hashes[name]
