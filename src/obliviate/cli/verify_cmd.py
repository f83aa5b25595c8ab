"""``obliviate verify RUN``: recompute what a forget run's certificate chain names; exit 0 or 1."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..certificate import verify
from .app import app, cli_command, console, err_console, one_line
from .forget_cmd import print_verdict
from .import_cmd import MODEL_CLASS_HELP, load_user_class


@app.command("verify")
@cli_command
def verify_command(
    run: Path = typer.Argument(..., help="run directory written by `obliviate forget`"),
    evidence: bool = typer.Option(False, "--evidence", help="also reload the data and re-measure the evidence"),
    device: Optional[str] = typer.Option(None, "--device", help="device for --evidence (default: cuda if present)"),
    model_class: Optional[str] = typer.Option(None, "--model-class", help="--evidence on a run of your own model: "
                                              + MODEL_CLASS_HELP),
    shadow_dir: Optional[Path] = typer.Option(None, "--shadow-dir", help="--evidence with the per-example attack: "
                                              "its shadow cache (default: $OBLIVIATE_CACHE/shadows)"),
) -> None:
    """Check RUN's certificate: weights, run.json, ids file, parent chain, evidence and verdict.

    Exit 1 on any mismatch; exit 3 when everything matches but the verdict is "not forgotten".
    """
    res = verify(run, evidence=evidence, device=device, model_class=load_user_class(model_class),
                 shadow_dir=shadow_dir)
    if not res.ok:
        for line in res.problems:
            err_console.print(f"[bold red]mismatch:[/] {one_line(line)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]verified[/] {one_line(run)}: {len(res.checked)} checks passed "
                  f"(hashes back to the original run{', evidence re-measured' if evidence else ''})", highlight=False)
    if res.verdict is not None:
        print_verdict(res.verdict, run)
