"""Device choice, seeding and the version record every run stores beside its results."""
from __future__ import annotations

import os
import platform
import random
import sys
from datetime import datetime, timezone

import numpy as np
import torch

from .errors import ObliviateError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def parse_device(device: str | torch.device) -> torch.device:
    """A device name checked for spelling only (a Ray driver may lack the GPU its workers have)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ObliviateError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:N, mps or auto")
    return dev


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" → CUDA when present, else CPU: code runs unchanged on a laptop and a GPU box."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ObliviateError(f"device {str(device)!r} requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ObliviateError(f"device {str(device)!r} requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ObliviateError(f"device {str(device)!r} requested but MPS is not available on this machine")
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
