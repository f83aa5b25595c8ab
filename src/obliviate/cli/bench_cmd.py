"""``obliviate bench``, ``obliviate results`` and ``obliviate report``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ObliviateError
from ..harness.executor import DEFAULT_STORE, bench
from ..harness.store import Store, merge_stores, pick_study
from ..harness.study import is_folder_name
from ..io import check_writable_dir
from .app import app, cli_command, console, err_console, key_values, path_option

DATA_ROOT_FORM = "DATASET=PATH, e.g. cifar10=data/cifar10-jpeg.npz"

#: Columns of the terminal table (a terminal is narrow; --all, the CSV and the report have every metric).
TERMINAL = ("forget_acc", "retain_acc", "test_acc", "backdoor_asr", "lira_auc", "verdict_yes", "js_to_retrained",
            "relearn_ain", "seconds", "speedup_vs_retrain", "speedup_vs_fast_retrain")
STORE_HELP = f"results store (SQLite file; default {DEFAULT_STORE})"


def print_results(name: str, rows: list[dict], *, all_metrics: bool = False, n_failed: int = 0) -> None:
    """One rich table per (data set, model, request): mean ± std over seeds, best per column marked."""
    from ..harness.tables import aggregate, best_rows, fmt, headline_metrics, info

    agg = aggregate(rows)
    metrics = [c[:-5] for c in agg.columns if c.endswith("_mean")] if all_metrics else \
        [m for m in headline_metrics(agg) if m in TERMINAL or m.startswith("tuned_")]
    for (ds, model, req), group in agg.groupby(["dataset", "model", "request"], sort=False):
        table = Table(title=escape(f"{name}: {ds} / {model} / forget {req}"), title_justify="left")
        table.add_column("method", no_wrap=True)
        table.add_column("seeds")
        for m in metrics:
            table.add_column(info(m).label + (" %" if info(m).percent else ""), justify="right")
        best = {m: best_rows(group, m) for m in metrics}
        for idx, r in group.iterrows():
            cells = []
            for m in metrics:
                text = fmt(m, r[f"{m}_mean"], r.get(f"{m}_std"))
                cells.append(f"[bold green]{text}[/]" if idx in best[m] else text)
            table.add_row(escape(r["method"]), str(r["n_seeds"]), *cells)
        console.print(table)
    console.print("mean ± std over seeds; [bold green]green[/]: best unlearning method per column "
                  "(closest to retrain for forget acc, backdoor ASR, MIA, LiRA, ZRF, AIN)" +
                  (f"; [red]{n_failed} failed runs[/] not shown" if n_failed else ""), highlight=False)


@app.command("bench")
@cli_command
def bench_command(
    study: Path = typer.Argument(..., help="study file (YAML), e.g. studies/quick.yaml"),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP, parser=path_option),
    work: Optional[Path] = typer.Option(None, "--work", parser=path_option,
                                        help="folder for trained models and figures (default: work/ beside the store)"),
    executor: str = typer.Option("local", "--executor", help="local (this process) or ray"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster address (auto, ray://host:port); "
                                                   "default: start Ray on this machine"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="CPUs for a local Ray (one run per CPU)"),
    max_retries: int = typer.Option(2, "--max-retries", help="Ray: submits again a run Ray lost (its worker or "
                                                             "node died, a model object was lost) this many times, "
                                                             "before storing it as failed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: the study's, else auto)"),
    data_root: Optional[List[str]] = typer.Option(None, "--data-root", help="DATASET=PATH, overrides the study's "
                                                                           "data_root (repeatable)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate the study and list its runs; run nothing"),
) -> None:
    """Run a study: train (or reuse) originals and retrained references, run every method, store results."""

    def on_row(row: dict) -> None:
        if row.get("status") != "done":
            first = (row.get("error") or "").splitlines()[0] if row.get("error") else "?"
            what = "/".join(str(row.get(k)) for k in ("dataset", "model", "request", "method"))
            what += f"/seed {row.get('seed')}"
            err_console.print(f"[red]failed[/] {escape(what)}: {escape(first)}", highlight=False)

    roots = key_values(data_root, "--data-root", DATA_ROOT_FORM)
    res = bench(study, store, work=work, executor=executor, address=ray_address, workers=workers, device=device,
                dry_run=dry_run, data_roots=roots, max_retries=max_retries, on_row=on_row)
    s, plan = res.study, res.plan
    for note in plan.skipped:
        console.print(f"[yellow]skipped[/] {note}", highlight=False)
    todo = len(plan.tasks) - res.already_done
    console.print(f"study [bold]{s.name}[/]: {len(plan.tasks)} runs ({len(s.datasets)} data sets × {len(s.models)} "
                  f"models × {len(s.seeds)} seeds × {len(s.requests)} requests × {len(s.methods)} methods), "
                  f"{res.already_done} already done, {todo} to run", highlight=False)
    if dry_run:
        table = Table("key", "data set", "model", "seed", "request", "method", "state", title=f"runs of {s.name}")
        done = Store(res.store, readonly=True).done_keys(s.name) if res.store.exists() else set()
        for t in plan.tasks:
            table.add_row(t.key[:10], escape(t.dataset), escape(t.model), str(t.seed), escape(t.request),
                          escape(t.method), "done" if t.key in done else "to run")
        console.print(table)
        return
    if res.outcome is not None:
        ok, bad = len(res.outcome.done), len(res.outcome.failed)
        console.print(f"finished {ok} runs" + (f", [red]{bad} failed[/] (re-run to retry)" if bad else "") +
                      f"; results in {res.store}. Next: obliviate results --store {res.store} --study {s.name}; "
                      f"obliviate report --store {res.store} --study {s.name}", highlight=False)
        if bad:
            raise typer.Exit(1)
    else:
        console.print(f"nothing to do: every run is in {res.store}", highlight=False)


results_app = typer.Typer(help="Show or export a study's results; merge results stores.")
app.add_typer(results_app, name="results")


@results_app.callback(invoke_without_command=True)
@cli_command
def results_command(
    ctx: typer.Context,
    store: Path = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP, parser=path_option),
    study: Optional[str] = typer.Option(None, "--study", help="study name (needed when the store holds several)"),
    format: str = typer.Option("table", "--format", help="table, csv or parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="file for csv/parquet (csv default: stdout)",
                                       parser=path_option),
    raw: bool = typer.Option(False, "--raw", help="one line per seed instead of mean ± std"),
    all_metrics: bool = typer.Option(False, "--all", help="table: every metric, not only the headline ones"),
    older: bool = typer.Option(False, "--older", help="also the runs made with other parameters than the study's "
                                                      "methods have now (an upgrade changed a default), marked"),
) -> None:
    """Show or export a study's results: mean ± std over seeds per (data set, model, request, method)."""
    if ctx.invoked_subcommand:  # `results merge`: the options above belong to showing results
        return
    from ..harness.tables import aggregate, mark_older, rows_frame, split_current  # pandas: only to show results

    if format not in ("table", "csv", "parquet"):
        raise ObliviateError(f"unknown format {format!r}; choose table, csv or parquet")
    if out is not None:
        if out.is_dir():
            raise ObliviateError(f"--out {out} is a folder; give a file name")
        check_writable_dir(out.parent, "--out")
    with Store(store, create=False) as st:
        name = pick_study(st, study)
        rows = st.rows(name)
        n_failed = len(st.rows(name, status="failed"))
        info = next((s for s in st.studies() if s["name"] == name), {})
    if not rows:
        raise ObliviateError(f"study {name!r} has no finished run in {store}")
    rows, stale = split_current(rows, info.get("text"), info.get("file"))
    source = f"study {name!r} from {store}: {len(rows)} finished runs"
    if stale:
        source += (f" and {len(stale)} made with older parameters" + (", marked" if older else
                   " (not shown; --older shows them)"))
        rows += mark_older(stale) if older else []
    if format == "csv" and out is None:  # stdout is the CSV: say where it came from on stderr
        err_console.print(source, highlight=False)
    else:
        console.print(source, highlight=False)
    frame = rows_frame(rows) if raw else aggregate(rows)
    if format == "csv":
        if out is None:
            typer.echo(frame.to_csv(index=False), nl=False)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(out, index=False)
            console.print(f"wrote {out} ({len(frame)} rows)")
        return
    if format == "parquet":
        if out is None:
            raise ObliviateError("--format parquet needs --out FILE")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            raise ObliviateError(f"parquet export needs pyarrow: pip install obliviate[parquet] ({exc})") from None
        console.print(f"wrote {out} ({len(frame)} rows)")
        return
    print_results(name, rows, all_metrics=all_metrics, n_failed=n_failed)


def default_report_dir(store: Path, study: str) -> Path:
    """Where a report goes without --out: ``reports/<study>/`` beside the store (a name from a received
    store that is not one folder name is refused, not followed out of ``reports/``)."""
    if not is_folder_name(study):
        raise ObliviateError(f"study name {study!r} in {store} is not a folder name; pass --out to choose "
                             "where the report goes")
    return store.parent / "reports" / study


@results_app.command("merge")
@cli_command
def merge_command(
    sources: List[Path] = typer.Argument(..., help="results stores to merge (SQLite files)"),
    into: Path = typer.Option(..., "--into", help="store to merge into (created when missing)", parser=path_option),
) -> None:
    """Merge stores made separately (e.g. on two machines): one row per run key, conflicts reported."""
    reports = merge_stores(sources, into)
    conflicts = 0
    for src, rep in reports.items():
        console.print(f"{escape(src)}: {rep.added} new runs, {rep.upgraded} finished runs replacing failed ones, "
                      f"{rep.duplicates} already there, {len(rep.conflicts)} conflicts", highlight=False)
        for line in rep.notes:
            console.print(f"[yellow]note[/] {escape(line)}", highlight=False)
        for line in rep.conflicts:
            err_console.print(f"[red]conflict[/] {escape(line)}", highlight=False)
        conflicts += len(rep.conflicts)
    with Store(into, create=False) as st:
        console.print(f"{into} holds {st.count()} runs", highlight=False)
    if conflicts:
        err_console.print(f"[red]{conflicts} runs finished in several stores with different results[/] "
                          f"(the first store's row is kept)", highlight=False)
        raise typer.Exit(1)


@app.command("report")
@cli_command
def report_command(
    out: Optional[Path] = typer.Option(None, "--out", parser=path_option,
                                       help="folder for report.html, report.md and figures/ (default: reports/STUDY/ "
                                            "beside the store)"),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help=STORE_HELP, parser=path_option),
    study: Optional[str] = typer.Option(None, "--study", help="study name (needed when the store holds several)"),
) -> None:
    """Write a self-contained HTML report (and Markdown) of a study's results."""
    from ..harness.report import write_report  # pandas and matplotlib: loaded only to write a report

    if out is not None:
        check_writable_dir(out, "--out")  # before reading anything: a bad --out is the first thing to say
    with Store(store, create=False) as st:
        name = pick_study(st, study)
    console.print(f"reading study {name!r} from {store}", highlight=False)
    html, md = write_report(store, out if out is not None else default_report_dir(store, name), name)
    console.print(f"wrote {html} and {md}", highlight=False)
