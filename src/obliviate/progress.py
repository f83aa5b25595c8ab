"""Progress bars that the CLI turns on and library code never has to think about.

Library functions call ``progress_task``; it is silent unless the CLI (or a user) called
``enable_progress``, so a notebook or a test sees no terminal noise.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

_progress = None


def enable_progress(enabled: bool = True) -> None:
    global _progress
    if enabled and _progress is None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        _progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                             transient=False)
        _progress.start()
    elif not enabled and _progress is not None:
        _progress.stop()
        _progress = None


@contextlib.contextmanager
def progress_task(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, info="")``; a no-op when progress is off."""
    if _progress is None:
        yield lambda n=1, info="": None
        return
    task = _progress.add_task(description, total=total, info="")

    def advance(n: int = 1, info: str = "") -> None:
        _progress.update(task, advance=n, info=info)

    try:
        yield advance
    finally:
        _progress.stop_task(task)
