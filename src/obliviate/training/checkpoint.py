"""Run directories: ``model.pt`` + ``run.json`` (+ ``snapshots/``), written atomically.

``run.json`` is written last, so its presence marks a finished run; a directory with snapshots and no
``run.json`` is an interrupted run that ``train`` resumes.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import torch_save, write_json
from ..models import Classifier, ModelSpec, build_model

MODEL_FILE, RUN_FILE, SNAP_DIR = "model.pt", "run.json", "snapshots"


def save_model(path: str | Path, model: Classifier) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save(path, {"format": "obliviate-model/1", "spec": model.spec.to_dict(), "state_dict": state})


def load_model_file(path: str | Path, device: torch.device | str = "cpu") -> Classifier:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        spec = ModelSpec.from_dict(blob["spec"])
    except pickle.UnpicklingError as exc:  # the weights-only loader refused objects that would run code
        raise CheckpointError(f"corrupt checkpoint {path}: not a plain weights file (it holds pickled objects, "
                              "which are refused because loading them could run code)") from exc
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"corrupt checkpoint {path}: {type(exc).__name__}: {first[:200]}") from exc
    model = build_model(spec)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match model {spec.name!r}: {str(exc)[:200]}") from exc
    return model.to(device)


@dataclass
class RunDir:
    """A finished run directory (train, retrain or forget)."""

    path: Path
    record: dict

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    def load_model(self, device: torch.device | str = "cpu") -> Classifier:
        return load_model_file(self.model_path, device)

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
        hint = " (it holds snapshots of an unfinished run: re-run train to resume)" if (path / SNAP_DIR).exists() else ""
        raise CheckpointError(f"{path} is not a finished run: no {RUN_FILE}{hint}")
    try:
        record = json.loads(run_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt {run_file}: {exc}") from exc
    if not (path / MODEL_FILE).exists():
        raise CheckpointError(f"{path} has {RUN_FILE} but no {MODEL_FILE}")
    return RunDir(path, record)


def finish_run(path: str | Path, model: Classifier, record: dict) -> RunDir:
    """Write the model, then ``run.json`` (the completion marker)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / MODEL_FILE, model)
    write_json(path / RUN_FILE, record)
    return RunDir(path, record)


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Refuse to clobber a finished run unless asked: a result is never silently replaced."""
    path = Path(path)
    if (path / RUN_FILE).exists() and not overwrite:
        raise CheckpointError(f"{path} already holds a finished run; choose another --out or pass --force")
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"--out {path} exists and is not a directory")
    return path
