"""Atomic file writes and hashing.

Why atomic: a crash or Ctrl-C mid-write must never leave a half-written result that a later run
mistakes for a finished one. Every writer here writes to a temporary file in the target's folder,
fsyncs it and renames it over the target (``os.replace`` is atomic on POSIX). The temporary file gets
the mode a plain ``open`` would give (0666 less the umask): ``mkstemp`` makes it 0600, which would hide
a shared run from the other users who are meant to read it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ObliviateError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only swap it)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now, not after hours of compute, when ``path`` cannot become a folder we can write into.

    Probes the nearest existing folder by creating (and removing) a temporary folder in it: that catches
    a path under a file, a read-only folder or file system and ``/proc`` alike, as the user running us.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ObliviateError(f"{what} {path} exists and is not a folder")
    base = path
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise ObliviateError(f"{what} {path} cannot be created: {base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".obliviate-probe-", dir=base))
    except OSError as exc:
        raise ObliviateError(f"{what} {path} cannot be written: {exc.strerror or exc} in {base}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # torch scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, to_json(obj) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_bytes(path, buf.getvalue())


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def _refuse_irregular(mode: int, path, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ObliviateError(f"{what} {path} is {kind}; refused to read it")


def open_regular(path: str | os.PathLike, what: str = "file") -> io.BufferedReader:
    """Open ``path`` for reading only if it is a regular file (a symlink to one is followed).

    Why: a received run folder may hold a named pipe or a device where a file belongs, and a plain
    ``open`` of a FIFO blocks forever. The type is checked before the open, and again on the open
    descriptor (``fstat``; the open is non-blocking), so nothing can be swapped in between check and read.
    """
    try:
        _refuse_irregular(os.stat(path).st_mode, path, what)  # unopened: opening some devices has side effects
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ObliviateError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ObliviateError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        _refuse_irregular(os.fstat(fd).st_mode, path, what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of a regular file (see ``open_regular``); ObliviateError for anything else."""
    with open_regular(path, what) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise ObliviateError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def bytes_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20, what: str = "file") -> str:
    """SHA-256 of a regular file; a pipe, device or folder is refused before it is read."""
    h = hashlib.sha256()
    with open_regular(path, what) as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Content address of a JSON-able config: the same config always gives the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]
