"""CLI entry point. Each command lives in its own module and registers itself on ``app``."""
from __future__ import annotations

import importlib

from .app import app

for _module in ("train_cmd", "forget_cmd", "evaluate_cmd", "bench_cmd", "demo_cmd", "history_cmd", "verify_cmd",
                "import_cmd"):
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as exc:  # a command module not written yet
        if exc.name != f"{__package__}.{_module}":
            raise

if __name__ == "__main__":  # pragma: no cover
    app()
