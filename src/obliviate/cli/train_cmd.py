"""``obliviate train`` and the catalogue commands (``datasets``, ``models``)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ..backdoor_runs import IDS_FILE, plan_backdoor, poisoned
from ..data import DataSpec, load_data
from ..data.sources import SOURCES
from ..data.splits import resolve_root
from ..errors import ObliviateError
from ..models import MODELS
from ..models.foreign import construct
from ..training import TrainConfig, check_output_dir, train
from .app import app, cli_command, console, one_line, path_option
from .import_cmd import MODEL_CLASS_HELP, load_user_class, parse_model_args

_CFG = TrainConfig()  # the single source of training defaults: each option below shows TrainConfig's
_VAL_FRACTION = next(f.default for f in dataclasses.fields(DataSpec) if f.name == "val_fraction")


def _accuracy_line(record: dict) -> str:
    acc = record["accuracy"]
    return (f"train {acc['train']:.4f}  val {acc['val']:.4f}  test {acc['test']:.4f}  "
            f"({record['seconds']:.1f} s, {record['steps']} steps, {record['device']})")


@app.command("train")
@cli_command
def train_command(
    dataset: str = typer.Option(..., "--dataset", help="data set name (see `obliviate datasets`)"),
    out: Path = typer.Option(..., "--out", help="run directory to write (model.pt, run.json, snapshots/)",
                             parser=path_option),
    model: str = typer.Option(_CFG.model, "--model", help="model name (see `obliviate models`)"),
    model_class: Optional[str] = typer.Option(None, "--model-class", help="train your own model instead of "
                                              "--model (e.g. with --blocks, for DeepObliviate): " + MODEL_CLASS_HELP),
    model_arg: Optional[List[str]] = typer.Option(None, "--model-arg", help="with --model-class: constructor "
                                                  "argument key=value"),
    epochs: int = typer.Option(_CFG.epochs, "--epochs", help="epochs of plain training"),
    seed: int = typer.Option(_CFG.seed, "--seed"),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="file or folder for data sets that need one"),
    snapshot_every: int = typer.Option(_CFG.snapshot_every, "--snapshot-every",
                                       help="save a resumable snapshot every K steps"),
    blocks: int = typer.Option(_CFG.blocks, "--blocks",
                               help="block-incremental training with B blocks (DeepObliviate)"),
    epochs_per_block: int = typer.Option(_CFG.epochs_per_block, "--epochs-per-block",
                                         help="epochs on each block in block mode"),
    block_schedule: str = typer.Option(_CFG.block_schedule, "--block-schedule",
                                       help="block mode: global (one lr schedule across all blocks) | restart "
                                            "(the schedule restarts every block)"),
    batch_size: int = typer.Option(_CFG.batch_size, "--batch-size"),
    lr: float = typer.Option(_CFG.lr, "--lr", help="peak learning rate"),
    optimizer: str = typer.Option(_CFG.optimizer, "--optimizer", help="sgd | adam | adamw"),
    schedule: str = typer.Option(_CFG.schedule, "--schedule", help="onecycle | cosine | constant"),
    weight_decay: float = typer.Option(_CFG.weight_decay, "--weight-decay"),
    label_smoothing: float = typer.Option(_CFG.label_smoothing, "--label-smoothing"),
    augment: Optional[str] = typer.Option(_CFG.augment, "--augment",
                                          help="none | flip | crop | crop-flip (default: per data set)"),
    train_per_class: Optional[int] = typer.Option(None, "--train-per-class", help="cap training samples per class"),
    test_per_class: Optional[int] = typer.Option(None, "--test-per-class", help="cap test samples per class"),
    val_fraction: float = typer.Option(_VAL_FRACTION, "--val-fraction"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: cuda if present)"),
    compile: bool = typer.Option(_CFG.compile, "--compile", help="torch.compile the model (CUDA)"),
    force: bool = typer.Option(False, "--force", help="overwrite a finished run in --out and delete "
                                                      "snapshots there of another config"),
    plant_backdoor: Optional[int] = typer.Option(None, "--plant-backdoor", help="backdoor verification: poison N "
                                                 "training samples with a corner trigger "
                                                 "(ids → <out>/backdoor_ids.txt)"),
    backdoor_target: Optional[int] = typer.Option(None, "--backdoor-target", help="class the trigger teaches"),
    backdoor_block: Optional[int] = typer.Option(None, "--backdoor-block", help="with --blocks: block 1..B "
                                                 "holding every poisoned sample (default: the middle one)"),
) -> None:
    """Train a model from scratch; a re-run into the same --out resumes from the last snapshot."""
    spec = DataSpec(dataset, resolve_root(data_root), val_fraction=val_fraction, train_per_class=train_per_class,
                    test_per_class=test_per_class)
    cfg = TrainConfig(model=model, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                      weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing, augment=augment,
                      seed=seed, snapshot_every=snapshot_every, blocks=blocks, epochs_per_block=epochs_per_block,
                      block_schedule=block_schedule, compile=compile)
    cfg.validate()  # every option against its declared range, before loading anything
    check_backdoor_options(plant_backdoor, backdoor_target, backdoor_block)
    check_output_dir(out, force)  # before loading data and training: a bad --out must not cost the run
    net, args = _users_net(model_class, model_arg, model)
    bundle = load_data(spec)
    extra = {}
    if plant_backdoor is not None:
        plan = plan_backdoor(bundle, plant_backdoor, backdoor_target, seed=seed, blocks=blocks, block=backdoor_block)
        bundle = poisoned(bundle, plan)
        extra = {"pinned_blocks": plan.pinned_blocks(), "extra_record": {"backdoor": plan.record()},
                 "extra_files": {IDS_FILE: plan.ids_text()}}
    result = train(bundle, cfg, out, device=device, overwrite=force, net=net, model_args=args, **extra)
    console.print(f"[green]trained[/] {one_line(model_class) if net is not None else model} on {dataset} → "
                  f"{one_line(out)}", highlight=False)
    if net is not None:
        console.print(f"forget from it with --checkpoint {one_line(out)} --model-class {one_line(model_class)}",
                      highlight=False)
    console.print(_accuracy_line(result.record))
    if plant_backdoor is not None:
        console.print(_backdoor_line(result.record["backdoor"], out, model_class), highlight=False, soft_wrap=True)


def _users_net(model_class: str | None, model_arg: list[str] | None, model: str):
    """(the user's freshly built model, its constructor arguments), or (None, None) for a zoo --model."""
    if model_class is None:
        if model_arg:
            raise ObliviateError("--model-arg needs --model-class")
        return None, None
    if model != _CFG.model:
        raise ObliviateError(f"--model {model} and --model-class {model_class}: choose one")
    cls, args = load_user_class(model_class), parse_model_args(model_arg)
    return construct(cls, args, what=f"--model-class {model_class}"), args


def check_backdoor_options(n: int | None, target: int | None, block: int | None) -> None:
    """The backdoor flags go together and count from 1 (ranges that need the data: ``plan_backdoor``)."""
    if n is None and (target is not None or block is not None):
        raise ObliviateError("--backdoor-target and --backdoor-block need --plant-backdoor N")
    if n is not None and target is None:
        raise ObliviateError("--plant-backdoor needs --backdoor-target C (the class the trigger teaches)")
    if n is not None and n < 1:
        raise ObliviateError(f"--plant-backdoor {n}: poison at least 1 sample")


def _backdoor_line(bd: dict, out: Path, model_class: str | None) -> str:
    where = f" in block {bd['block']}" if bd.get("block") else ""
    yours = f" --model-class {model_class}" if model_class else ""
    return (f"backdoor: {bd['n']} samples{where} carry the trigger and label {bd['target']}; delete them with "
            f"`obliviate forget --checkpoint {out}{yours} --forget-ids {out / bd['ids_file']} ...`")


@app.command("datasets")
@cli_command
def datasets_command() -> None:
    """List the data sets obliviate reads offline."""
    table = Table("name", "needs --data-root", "description")
    for name in sorted(SOURCES):
        info = SOURCES[name]
        table.add_row(name, "yes" if info.needs_root else "no", info.summary)
    console.print(table)


@app.command("models")
@cli_command
def models_command() -> None:
    """List the model architectures."""
    table = Table("name", "description")
    for name in sorted(MODELS):
        table.add_row(name, MODELS[name].summary)
    console.print(table)
