"""``obliviate forget`` and ``obliviate methods``."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..api import forget, load_checkpoint
from ..certificate import CERT_FILE
from ..data import ForgetRequest
from ..errors import RequestError
from ..methods import list_methods
from ..methods.base import FORGOTTEN_ATTR
from ..metrics.accuracy import accuracy
from ..params import SEED_MAX
from ..training import check_output_dir
from ..verdict import ACC_BAND, EXIT_NOT_FORGOTTEN, MIA_BAND, VerdictRule, answer, summary
from .app import app, cli_command, console, err_console, key_values, one_line, path_option
from .evaluate_cmd import attack_from_flags
from .import_cmd import MODEL_CLASS_HELP, load_user_class

_SUBSET = next(f.default for f in dataclasses.fields(ForgetRequest) if f.name == "subset_per_class")


def build_request(forget_class: list[int] | None, forget_ids: Path | None, forget_fraction: float | None,
                  subset_per_class: int, seed: int) -> ForgetRequest:
    given = sum([bool(forget_class), forget_ids is not None, forget_fraction is not None])
    if given != 1:
        raise RequestError("give exactly one of --forget-class, --forget-ids or --forget-fraction")
    kw = {"subset_per_class": subset_per_class, "seed": seed}
    if forget_class:
        return ForgetRequest.for_classes(*forget_class, **kw)
    if forget_ids is not None:
        return ForgetRequest.from_ids_file(forget_ids, **kw)
    return ForgetRequest.for_fraction(forget_fraction, **kw)


@app.command("forget")
@cli_command
def forget_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="run directory of the trained model"),
    method: str = typer.Option(..., "--method", help="method name (see `obliviate methods`)"),
    out: Path = typer.Option(..., "--out", help="run directory for the unlearned model", parser=path_option),
    forget_class: Optional[List[int]] = typer.Option(None, "--forget-class", help="class id to forget (repeatable)"),
    forget_ids: Optional[Path] = typer.Option(None, "--forget-ids", help="file of training sample ids (text or .npy)"),
    forget_fraction: Optional[float] = typer.Option(None, "--forget-fraction",
                                                    help="random fraction of the training set"),
    param: Optional[List[str]] = typer.Option(None, "--param", help="method parameter key=value (repeatable)"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    subset_per_class: int = typer.Option(_SUBSET, "--subset-per-class",
                                         help="size of the retain subset D_sub per class"),
    device: Optional[str] = typer.Option(None, "--device"),
    force: bool = typer.Option(False, "--force", help="overwrite a finished run in --out"),
    model_class: Optional[str] = typer.Option(None, "--model-class", help="for a run of your own model "
                                              "(`obliviate import`): " + MODEL_CLASS_HELP),
    max_forget_acc: Optional[float] = typer.Option(None, "--max-forget-acc",
                                                   help="verdict bound on a forgotten class's accuracy "
                                                        "(default 1/num_classes)"),
    acc_band: float = typer.Option(ACC_BAND, "--acc-band", help="verdict, sample requests: how far accuracy on "
                                   "the deleted samples may exceed accuracy on unseen samples"),
    mia_band: float = typer.Option(MIA_BAND, "--mia-band", help="verdict, sample requests: how far the loss "
                                   "attack may exceed 0.5"),
    per_example: Optional[int] = typer.Option(None, "--per-example-mia", metavar="K",
                                              help="sample requests: add the per-example attack (LiRA, K shadow "
                                                   "models trained once with the original's recipe, cached) to the "
                                                   "evidence; it can show a few samples forgotten"),
    shadow_epochs: Optional[int] = typer.Option(None, "--shadow-epochs", help="cap the shadows' training epochs"),
    shadow_seed: Optional[int] = typer.Option(None, "--shadow-seed", help="seed of the shadows' halves and training"),
    shadow_dir: Optional[Path] = typer.Option(None, "--shadow-dir",
                                              help="shadow cache (default: $OBLIVIATE_CACHE/shadows)"),
) -> None:
    """Make a trained model forget a class, several classes, a fraction or given samples.

    On a run made by `forget`, the request is applied on top: what it forgot stays forgotten. Ends with the
    verdict; exit 3 when the run is saved but the evidence says the data is not forgotten.
    """
    rule = VerdictRule(max_forget_acc=max_forget_acc, acc_band=acc_band, mia_band=mia_band)
    request = build_request(forget_class, forget_ids, forget_fraction, subset_per_class, seed)
    params = key_values(param, "--param")
    check_output_dir(out, force, reads=[checkpoint])  # before the data and model load (and any user code)
    ck = load_checkpoint(checkpoint, device, model_class=load_user_class(model_class))
    attack = attack_from_flags(ck, per_example, shadow_epochs, shadow_seed, shadow_dir, request)
    prior = ck.lineage.forgotten
    model, record = forget(ck, request, method, out=out, params=params, seed=seed, device=device, overwrite=force,
                           rule=rule, per_example_mia=attack)
    split = request.resolve(ck.data.train, ck.data.num_classes, prior)
    test_forget, test_retain = split.test_split(ck.data.test)
    table = Table("", "parent" if prior else "original", "unlearned",
                  title=f"{method}: forget {request.describe()} ({record['seconds']:.2f} s)")
    rows = [("forget (train)", split.forget(ck.data.train)), ("retain (train)", split.retain(ck.data.train)),
            ("test-forget", test_forget), ("test-retain" if request.classes else "test", test_retain)]
    for name, data in rows:
        if data is not None and len(data):
            table.add_row(name, f"{accuracy(ck.model, data):.4f}", f"{accuracy(model, data):.4f}")
    if prior:
        table.add_row(f"already forgotten ({prior.describe()})",
                      f"{accuracy(ck.model, ck.data.train.subset(prior.mask(ck.data.train).nonzero()[0])):.4f}",
                      f"{accuracy(model, ck.data.train.subset(prior.mask(ck.data.train).nonzero()[0])):.4f}")
    console.print(table)
    console.print(f"[green]saved[/] {one_line(out)} (certificate: {one_line(out / CERT_FILE)}; "
                  f"forgotten since the original: {getattr(model, FORGOTTEN_ATTR).describe()})", highlight=False)
    print_verdict(record["verdict"], out)


def print_verdict(verdict: dict, run: Path) -> None:
    """The verdict in plain words; a run that did not forget exits with EXIT_NOT_FORGOTTEN."""
    if verdict["forgotten"]:
        console.print(f"[bold green]{escape(summary(verdict))}[/]", highlight=False)
        return
    what = "not shown forgotten" if answer(verdict) == "not shown" else "not forgotten"
    err_console.print(f"[bold red]{escape(summary(verdict))}[/]\n{what} by the rule recorded "
                      f"in {escape(str(run / CERT_FILE))}; the run is kept for inspection "
                      f"(exit {EXIT_NOT_FORGOTTEN})", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_NOT_FORGOTTEN)


@app.command("methods")
@cli_command
def methods_command() -> None:
    """List every unlearning method and what it needs to read."""
    table = Table("method", "reads", "zero-glance", "requests", "what it does")
    for cls in list_methods():
        table.add_row(cls.name, ", ".join(sorted(cls.needs)) or "-", "yes" if cls.zero_glance else "no",
                      ", ".join(sorted(cls.request_kinds)), cls.summary)
    console.print(table)
