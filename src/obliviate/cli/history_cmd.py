"""``obliviate history RUN``: the chain of runs from the original training to RUN."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..certificate import history
from .app import app, cli_command, console


@app.command("history")
@cli_command
def history_command(run: Path = typer.Argument(..., help="run directory (usually one written by `obliviate forget`)")
                    ) -> None:
    """Print the chain original -> ... -> RUN: each run's request, method and what is forgotten so far."""
    chain = history(run)
    table = Table("#", "run", "kind", "method", "request", "forgotten so far", "weights SHA-256", "certificate",
                  "forgotten? (as recorded)", title=f"lineage of {escape(str(run))}", title_justify="left")
    for i, e in enumerate(chain):
        verdict = f"[red]{e['verdict']}[/]" if e["verdict"] in ("NO", "not shown") else (e["verdict"] or "-")
        table.add_row(str(i), escape(e["run"]), e["kind"] or "?", escape(e.get("method") or "-"),
                      escape(e.get("request", "-")), escape(e.get("cumulative", "-")), e["model_sha256"][:16],
                      "yes" if e["certificate"] else ("-" if e["kind"] != "forget" else "[red]missing[/]"), verdict)
    console.print(table)
    if any(e["verdict"] == "NO" for e in chain):
        console.print("a deletion in this chain was judged not forgotten; `obliviate verify --evidence` re-checks it")
    if chain and chain[-1]["verdict"] == "not shown":
        console.print("this run's deletion could not be shown forgotten by its evidence (too few samples to tell); "
                      "retraining or `obliviate evaluate --per-example-mia K` can show it")
