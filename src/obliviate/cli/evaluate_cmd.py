"""``obliviate evaluate``: every metric of an unlearned run against its original (and a retrained run)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import typer
from rich.table import Table

from .. import api
from ..data import ForgetRequest
from ..env import pick_device
from ..errors import CheckpointError, ObliviateError
from ..io import check_writable_dir
from ..lineage import read_lineage
from ..metrics.evaluate import METRICS_FILE, evaluate
from ..metrics.lira import PerExampleMIA
from ..params import SEED_MAX
from ..training import open_run
from .app import app, cli_command, console, path_option
from .import_cmd import MODEL_CLASS_HELP, load_user_class

if TYPE_CHECKING:
    from ..data.request import Forgotten


def _same_data(a: dict, b: dict) -> bool:
    return a.get("source_hash") == b.get("source_hash") and a.get("spec") == b.get("spec")


def _check_run(label: str, path: Path, record: dict, ck) -> None:
    """A run must be on the original's data set (same source and splits) and of the same model."""
    if "data" not in record or "model" not in record:
        raise CheckpointError(f"{path}/run.json lacks the data or model record")
    if not _same_data(record["data"], ck.run.record["data"]):
        raise ObliviateError(f"--{label} {path} was made on data set {record['data'].get('name')!r} "
                             f"{record['data'].get('spec')}, but --original {ck.path} on "
                             f"{ck.data.name!r} {ck.run.record['data'].get('spec')}: evaluate runs of one data set")
    mine, theirs = record["model"], ck.run.record["model"]
    keys = ("name", "input_shape", "num_classes", "options")
    if any(mine.get(k) != theirs.get(k) for k in keys):
        raise ObliviateError(f"--{label} {path} holds a {mine.get('name')!r} model {mine.get('options') or ''}, "
                             f"--original {ck.path} a {theirs.get('name')!r} model {theirs.get('options') or ''}: "
                             "evaluate models of one architecture")


def _check_reference(path: Path, record: dict, unlearned: Path, forgotten: "Forgotten", ck) -> None:
    """The retrained reference must have left out exactly what the unlearned run forgot, all requests of
    its lineage together. Method inputs (D_sub's size) do not matter; the forgotten samples do."""
    train, nc = ck.data.train, ck.data.num_classes
    want = forgotten.mask(train)
    if record.get("kind") == "forget":
        theirs = read_lineage(path, record, train, nc).forgotten
        if not np.array_equal(theirs.mask(train), want):
            raise ObliviateError(f"--retrained {path} forgot {theirs.describe()} ({int(theirs.mask(train).sum())} "
                                 f"samples), --unlearned {unlearned} forgot {forgotten.describe()} "
                                 f"({int(want.sum())} samples) in all: not the same forgotten set")
    elif "excluded" in record and int(record["excluded"]) != int(want.sum()):
        raise ObliviateError(f"--retrained {path} was trained without {record['excluded']} samples, but "
                             f"--unlearned {unlearned} forgot {int(want.sum())} ({forgotten.describe()}): "
                             "retrain without exactly the forget set")


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v[:12]) + (", …]" if len(v) > 12 else "]")
    return str(v)


def _asr_line(m: dict) -> str:
    """Backdoor verification in one line: after deleting the poison, ASR should fall to the retrained level."""
    line = (f"backdoor attack success (triggered test inputs classified as the target): original "
            f"{_fmt(m.get('backdoor_asr_original'))} → unlearned {_fmt(m['backdoor_asr'])}")
    retrained = m.get("backdoor_asr_retrained")
    return line + (f" (retrained {_fmt(retrained)})" if retrained is not None else "")


def _lira_line(m: dict) -> str:
    """The per-example attack in one line: the deleted samples should look as unseen to it as to retrain's."""
    line = (f"per-example attack (LiRA, {m['lira_shadows']} shadows), AUC deleted vs unseen: original "
            f"{_fmt(m.get('lira_auc_original'))} → unlearned {_fmt(m['lira_auc'])}")
    retrained = m.get("lira_auc_retrained")
    return line + (f" (retrained {_fmt(retrained)})" if retrained is not None else "")


def attack_from_flags(ck, shadows: int | None, epochs: int | None, seed: int | None, folder: Path | None,
                    request=None) -> PerExampleMIA | None:
    """The attack's settings from the flags; shadows train with the original's recorded recipe."""
    if shadows is None:
        given = [f for f, v in (("--shadow-epochs", epochs), ("--shadow-seed", seed), ("--shadow-dir", folder))
                 if v is not None]
        if given:
            raise ObliviateError(f"{given[0]} sets up the per-example attack: add --per-example-mia K")
        return None
    if folder is not None:
        check_writable_dir(folder, "--shadow-dir")
    given = {k: v for k, v in (("max_epochs", epochs), ("seed", seed), ("cache", folder)) if v is not None}
    return api.attack_settings(ck, shadows, request, **given)


def _print_notes(metrics: dict, earlier: list, unlearned: Path) -> None:
    """The one-line verdicts below the table: backdoor ASR, the per-example attack, earlier requests."""
    if metrics.get("backdoor_asr") is not None:
        console.print(_asr_line(metrics), highlight=False)
    if metrics.get("lira_shadows") is not None:
        console.print(_lira_line(metrics), highlight=False)
    if earlier:
        console.print(f"still forgotten (forget accuracy on each earlier request of {unlearned}'s lineage):",
                      highlight=False)
        for desc, acc, acc0 in zip(metrics["earlier_requests"], metrics["earlier_forget_acc"],
                                   metrics["earlier_forget_acc_original"]):
            console.print(f"  {desc}: {_fmt(acc)} (original {_fmt(acc0)})", highlight=False)


@app.command("evaluate")
@cli_command
def evaluate_command(
    original: Path = typer.Option(..., "--original", help="run directory of the original model θ₀"),
    unlearned: Path = typer.Option(..., "--unlearned", help="run directory written by `obliviate forget`"),
    retrained: Optional[Path] = typer.Option(None, "--retrained",
                                             help="run directory of θ₀'s recipe retrained without the forget set"),
    out: Path = typer.Option(..., "--out", help="folder for metrics.json and the PNG figures", parser=path_option),
    no_figures: bool = typer.Option(False, "--no-figures", help="write metrics.json only"),
    no_relearn: bool = typer.Option(False, "--no-relearn", help="skip the relearn-time fine-tuning (slowest part)"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX,
                             help="seed of every subsample, CV split, relearn order and random model"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, … (default: cuda if present)"),
    model_class: Optional[str] = typer.Option(None, "--model-class", help="for runs of your own model "
                                              "(`obliviate import`): " + MODEL_CLASS_HELP),
    per_example_mia: Optional[int] = typer.Option(None, "--per-example-mia", metavar="K",
                                                  help="sample requests: LiRA on the deleted samples with K shadow "
                                                       "models (trained once with the original's recipe, cached)"),
    shadow_epochs: Optional[int] = typer.Option(None, "--shadow-epochs", help="cap the shadows' training epochs"),
    shadow_seed: Optional[int] = typer.Option(None, "--shadow-seed", help="seed of the shadows' halves and training"),
    shadow_dir: Optional[Path] = typer.Option(None, "--shadow-dir",
                                              help="shadow cache (default: $OBLIVIATE_CACHE/shadows)"),
) -> None:
    """Measure how well an unlearned model forgot and what it cost; writes metrics.json and figures."""
    check_writable_dir(out, "--out")  # before the metrics run: their results must have somewhere to go
    cls = load_user_class(model_class)
    ck = api.load_checkpoint(original, device, model_class=cls)
    lira = attack_from_flags(ck, per_example_mia, shadow_epochs, shadow_seed, shadow_dir)
    dev = pick_device(device)
    un = open_run(unlearned)
    if un.record.get("kind") != "forget":
        raise ObliviateError(f"--unlearned {unlearned} is not an unlearning run (its run.json has kind "
                             f"{un.record.get('kind')!r}; make one with `obliviate forget`)")
    if "request" not in un.record:
        raise CheckpointError(f"{unlearned}/run.json does not say what was forgotten (no request)")
    _check_run("unlearned", unlearned, un.record, ck)
    recorded = un.record.get("original")
    if recorded and Path(recorded).resolve() != ck.path.resolve():
        console.print(f"[yellow]note:[/] {unlearned} was unlearned from {recorded}, not {ck.path}; "
                      "data set and model match, so evaluating against the given original")
    lineage = read_lineage(un.path, un.record, ck.data.train, ck.data.num_classes)
    request = ForgetRequest.from_dict(un.record["request"])
    earlier = [ForgetRequest.from_dict(r["request"]) for r in lineage.requests[:-1]]
    re_model, re_record = None, None
    if retrained is not None:
        re = open_run(retrained)
        _check_run("retrained", retrained, re.record, ck)
        _check_reference(retrained, re.record, unlearned, lineage.forgotten, ck)
        re_model, re_record = re.load_model(dev, cls), re.record
    metrics = evaluate(ck.model, un.load_model(dev, cls), ck.data, request, retrained=re_model,
                       unlearn_record=un.record, retrain_record=re_record, out=out, figures=not no_figures,
                       seed=seed, relearn=not no_relearn, earlier=earlier, per_example_mia=lira)
    table = Table(title=f"{un.record.get('method', 'unlearned')} · {request.describe()} · {ck.data.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if key in ("figures",):
            continue
        table.add_row(key, _fmt(value))
    console.print(table)
    _print_notes(metrics, earlier, unlearned)
    figures = f" and {', '.join(metrics['figures'])}" if metrics.get("figures") else ""
    console.print(f"wrote {out / METRICS_FILE}{figures}")
