"""The typer application object and the one error handler every command shares."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ..errors import ObliviateError
from ..progress import enable_progress

console = Console()
if not console.is_terminal and console.width < 140:  # piped or captured: rich falls back to 80 columns,
    console = Console(width=140)                     # which truncates the metric tables
err_console = Console(stderr=True)


def one_line(text: str) -> str:
    """``text`` as one printable line of plain text: rich markup escaped (a path like ``no[/]where``
    must neither crash the printer nor lose ``[bold]``), line breaks and other control characters
    written as escapes (a newline in a received path must not make a two-line error)."""
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return escape(flat)


class OneLineErrors(TyperGroup):
    """Usage errors (a flag's value of the wrong type, an unknown or missing option) as one line on stderr
    with exit code 2, like every other user error: not a usage box that scripts and logs break up."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            err_console.print("aborted")
            sys.exit(1)
        except Exception as exc:  # click's exceptions (typer vendors its own copy of click): known by their API
            if not (callable(getattr(exc, "format_message", None))
                    and isinstance(getattr(exc, "exit_code", None), int)):
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `obliviate`: the help text, as before
                exc.show()
            else:
                ctx = getattr(exc, "ctx", None)
                where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
                err_console.print(f"[bold red]error:[/] {one_line(exc.format_message() + where)}", highlight=False,
                                  soft_wrap=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="obliviate: make a trained classifier forget chosen training data, and prove it.")


def cli_command(fn: Callable) -> Callable:
    """Wrap a command: user errors become one red line on stderr and exit code 2; progress bars on."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        enable_progress(sys.stderr.isatty())
        try:
            return fn(*args, **kwargs)
        except ObliviateError as exc:
            enable_progress(False)
            err_console.print(f"[bold red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            enable_progress(False)
            err_console.print("[yellow]interrupted[/]: finished results are kept; re-run to resume")
            raise typer.Exit(130) from None
        finally:
            enable_progress(False)

    return wrapper


def path_option(value) -> Path:
    """Parse a path option; an empty one is refused (``Path("")`` is the current folder, so ``--out ''``
    from an unset shell variable would write a run into whatever folder the command ran in)."""
    if not str(value).strip():
        raise typer.BadParameter("empty path: name a folder")
    return Path(value)


def key_values(items: list[str] | None, option: str, form: str = "key=value") -> dict[str, str]:
    """``["lr=0.01", "epochs=2"]`` → dict (the value may hold ``=``); an item without ``=`` is refused."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ObliviateError(f"{option} {item!r}: expected {form}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
