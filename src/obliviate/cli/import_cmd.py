"""``obliviate import``: a model trained outside obliviate becomes a run that ``forget`` can start from.

``--model-class pkg.module:Class`` is imported: that runs the module's code, so name only your own.
The weights file is never unpickled beyond tensors (``.safetensors``, or a ``.pt`` state dict read
weights-only). Commands that reload such a run (``forget``, ``evaluate``, ``verify --evidence``) take
the same ``--model-class``: obliviate never imports a class because a run folder names it.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import api
from ..data import DataSpec, load_data
from ..data.splits import resolve_root
from ..errors import ObliviateError
from ..models.foreign import build_user_model
from ..training import TrainConfig, check_output_dir
from ..training.checkpoint import SAFETENSORS_FILE, STATE_DICT_FILE, read_state_dict
from .app import app, cli_command, console, key_values, one_line, path_option

_CFG = TrainConfig()
MODEL_CLASS_HELP = ("your model's class as module:Class (importable from the current folder or PYTHONPATH); "
                    "importing it runs that module's code")


def load_user_class(text: str | None):
    """``pkg.module:Class`` → the class, with one-line errors (the module's own import errors included)."""
    if text is None:
        return None
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ObliviateError(f"--model-class {text!r}: expected module:Class, e.g. my_pkg.nets:Net")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as `python -m` does: the user's own files are importable
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ObliviateError(f"--model-class {text!r}: no module named {exc.name!r} (run from the folder that "
                             "holds it, or set PYTHONPATH)") from None
    except Exception as exc:  # the user's module failed while importing: theirs to see, in one line
        raise ObliviateError(f"--model-class {text!r}: importing {module_name} failed: {type(exc).__name__}: "
                             f"{exc}") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ObliviateError(f"--model-class {text!r}: {module_name} has no {attr!r}")
    if not callable(obj):
        raise ObliviateError(f"--model-class {text!r} is not a class or factory")
    return obj


def parse_model_args(items: list[str] | None) -> dict:
    """``--model-arg hidden=64`` → {"hidden": 64}: values parse as JSON (numbers, true, lists), else stay text."""
    out = {}
    for k, v in key_values(items, "--model-arg").items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _recipe(epochs, lr, batch_size, optimizer, schedule, weight_decay, seed) -> TrainConfig | None:
    if epochs is None:
        return None
    cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, schedule=schedule,
                      weight_decay=weight_decay, seed=seed)
    cfg.validate()
    return cfg


@app.command("import")
@cli_command
def import_command(
    model_class: str = typer.Option(..., "--model-class", help=MODEL_CLASS_HELP),
    weights: Path = typer.Option(..., "--weights", help="trained weights: .safetensors or a .pt state dict"),
    dataset: str = typer.Option(..., "--dataset", help="image-folder, arrays, or any `obliviate datasets` name"),
    out: Path = typer.Option(..., "--out", help="run directory to write (model.pt, weights, run.json)",
                             parser=path_option),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="image-folder: DIR with train/<class>/; "
                                             "arrays: FILE.npz with x_train, y_train, x_test, y_test"),
    model_arg: Optional[List[str]] = typer.Option(None, "--model-arg", help="constructor argument key=value"),
    feature_layer: Optional[str] = typer.Option(None, "--feature-layer", help="module whose output are the "
                                                "features (default: the input of the final nn.Linear)"),
    head: Optional[str] = typer.Option(None, "--head", help="the final nn.Linear (default: found automatically)"),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="held out of training for validation"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="retraining recipe: epochs (without it, methods "
                                         "that retrain ask for one)"),
    lr: float = typer.Option(_CFG.lr, "--lr", help="retraining recipe: peak learning rate"),
    batch_size: int = typer.Option(_CFG.batch_size, "--batch-size", help="retraining recipe"),
    optimizer: str = typer.Option(_CFG.optimizer, "--optimizer", help="retraining recipe: sgd | adam | adamw"),
    schedule: str = typer.Option(_CFG.schedule, "--schedule", help="retraining recipe: onecycle | cosine | constant"),
    weight_decay: float = typer.Option(_CFG.weight_decay, "--weight-decay", help="retraining recipe"),
    seed: int = typer.Option(_CFG.seed, "--seed", min=0, help="retraining recipe's seed"),
    device: Optional[str] = typer.Option(None, "--device"),
    force: bool = typer.Option(False, "--force", help="overwrite a finished run in --out"),
) -> None:
    """Take a model trained outside obliviate (your class, your weights, your data) under obliviate's records."""
    cfg = _recipe(epochs, lr, batch_size, optimizer, schedule, weight_decay, seed)
    check_output_dir(out, force)  # before the import runs the user's code
    cls = load_user_class(model_class)
    args = parse_model_args(model_arg)
    net = build_user_model(cls, args, read_state_dict(weights), str(weights))
    data = load_data(DataSpec(dataset, root=resolve_root(data_root), val_fraction=val_fraction))
    ck = api.import_model(net, data, out, train_config=cfg, weights_file=weights, model_args=args, device=device,
                          overwrite=force, feature_layer=feature_layer, head=head)
    acc = ck.run.record["accuracy"]
    m = ck.model
    feats = f"the input of {m.head_name!r}" if m.feature_layer == m.head_name else f"{m.feature_layer!r}"
    console.print(f"imported {one_line(model_class)} ({m.num_classes} classes, head {m.head_name!r}, features "
                  f"from {feats}) on {data.name}: train {acc['train']:.4f}  test {acc['test']:.4f}", highlight=False)
    console.print(f"[green]saved[/] {one_line(out)} (model.pt, {SAFETENSORS_FILE}, {STATE_DICT_FILE}, run.json); "
                  f"forget from it with --checkpoint {one_line(out)} --model-class {one_line(model_class)}",
                  highlight=False)
