"""``obliviate demo``: train → forget → evaluate → report on a small built-in default."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Optional

import typer

from ..harness import bench
from ..harness.store import Store
from .app import app, cli_command, console, err_console
from .bench_cmd import print_results


def demo_study() -> Path:
    return Path(str(resources.files("obliviate.harness").joinpath("demo.yaml")))


@app.command("demo")
@cli_command
def demo_command(
    out: Path = typer.Option(Path("runs") / "demo", "--out", help="folder for the store, models and report"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda (default: cuda if present)"),
) -> None:
    """Train a small CNN on Fashion-MNIST, forget one class with several methods, print the metrics, write a report.

    Re-running reuses everything already finished (same content-addressed store as ``bench``).
    """
    study = demo_study()
    console.print(f"[bold]obliviate demo[/]: {study.name} → {out}/ (the study file is {study})", highlight=False)
    store = out / "results.sqlite"
    plan = bench(study, store, work=out / "work", device=device, dry_run=True)
    methods = [t.method for t in plan.plan.tasks]
    console.print(f"1. train the original CNN and the reference retrained without the forgotten class, then\n"
                  f"2. run and evaluate {len(methods)} methods one by one ({', '.join(methods)}),\n"
                  f"3. write the report. About two minutes of CPU work (README: measured phases);\n"
                  f"finished steps are reused on a re-run.",
                  highlight=False)
    t0 = time.perf_counter()
    done = iter(range(1, len(methods) + 1))

    def on_row(row: dict) -> None:
        state = "[green]done[/]" if row.get("status") == "done" else f"[red]failed[/] {row.get('error', '')[:200]}"
        console.print(f"  [{next(done)}/{len(methods)}] {row.get('method')}: {state} "
                      f"({time.perf_counter() - t0:.0f} s so far)", highlight=False)

    res = bench(study, store, work=out / "work", device=device, on_row=on_row)
    with Store(store, create=False) as st:
        rows = st.rows(res.study.name)
        failed = st.rows(res.study.name, status="failed")
    print_results(res.study.name, rows, n_failed=len(failed))
    from ..harness.report import write_report

    html, _ = write_report(store, out, res.study.name)
    if failed:
        err_console.print(f"[red]{len(failed)} runs failed[/]; re-run `obliviate demo` to retry them")
    console.print(f"report: {html}  (every metric is defined in docs/metrics.md)", highlight=False)
    if failed:
        raise typer.Exit(1)
