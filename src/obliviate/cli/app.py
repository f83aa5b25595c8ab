"""The typer application object and the one error handler every command shares."""
from __future__ import annotations

import functools
import sys
from typing import Callable

import typer
from rich.console import Console

from ..errors import ObliviateError
from ..progress import enable_progress

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="obliviate: make a trained classifier forget chosen training data, and prove it.")
console = Console()
if not console.is_terminal and console.width < 140:  # piped or captured: rich falls back to 80 columns,
    console = Console(width=140)                     # which truncates the metric tables
err_console = Console(stderr=True)


def cli_command(fn: Callable) -> Callable:
    """Wrap a command: user errors become one red line on stderr and exit code 2; progress bars on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        enable_progress(sys.stderr.isatty())
        try:
            return fn(*args, **kwargs)
        except ObliviateError as exc:
            enable_progress(False)
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            enable_progress(False)
            err_console.print("[yellow]interrupted[/]: finished results are kept; re-run to resume")
            raise typer.Exit(130)
        finally:
            enable_progress(False)

    return wrapper
