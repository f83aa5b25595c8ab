"""Device choice, seeding and the version record every run stores beside its results."""
from __future__ import annotations

import os
import platform
import random
import sys
from datetime import datetime, timezone

import numpy as np
import torch


def pick_device(device: str | None = None) -> torch.device:
    """``None``/"auto" → CUDA when present, else CPU: code runs unchanged on a laptop and a GPU box."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from .errors import ObliviateError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ObliviateError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ObliviateError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "none",
    }
    try:
        from importlib.metadata import version

        out["obliviate"] = version("obliviate")
    except Exception:  # pragma: no cover - running from a source tree
        out["obliviate"] = "source"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    out["threads"] = str(torch.get_num_threads())
    out["cpu_count"] = str(os.cpu_count())
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings measure the work, not the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
