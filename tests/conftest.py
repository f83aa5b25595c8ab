"""Shared fixtures: small real data sets and models trained once per test session (CPU, seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from obliviate.data import load_data
from obliviate.training import TrainConfig, train

torch.set_num_threads(min(2, torch.get_num_threads()))

DIGITS_RECIPE = TrainConfig(model="cnn", epochs=8, batch_size=64, lr=0.05, seed=0)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits: 1,368 train / 70 val / 359 test, 8x8 grey, 10 classes."""
    return load_data("digits")


@pytest.fixture(scope="session")
def digits_run(digits, tmp_path_factory):
    """A small CNN trained on digits (~98 % test accuracy), saved as a run directory."""
    out = tmp_path_factory.mktemp("runs") / "digits-cnn"
    return train(digits, DIGITS_RECIPE, out)


@pytest.fixture(scope="session")
def digits_model(digits_run):
    return digits_run.model


@pytest.fixture(scope="session")
def digits_blocks_run(digits, tmp_path_factory):
    """The same CNN trained block-incrementally (DeepObliviate's mode): 8 blocks x 4 epochs, the schedule
    restarted per block (the recipe before issue 25; ``digits_global_blocks_run`` is today's default)."""
    out = tmp_path_factory.mktemp("runs") / "digits-blocks"
    cfg = TrainConfig(model="cnn", blocks=8, epochs_per_block=4, batch_size=32, lr=0.05, schedule="cosine",
                      block_schedule="restart", seed=0)
    return train(digits, cfg, out)


@pytest.fixture(scope="session")
def digits_global_blocks_run(digits, tmp_path_factory):
    """Block-incremental with one cosine schedule across all 12 blocks (issue 25's recipe: Δ decays)."""
    out = tmp_path_factory.mktemp("runs") / "digits-global-blocks"
    cfg = TrainConfig(model="cnn", blocks=12, epochs_per_block=3, batch_size=32, lr=0.05, schedule="cosine",
                      block_schedule="global", seed=0)
    return train(digits, cfg, out)


@pytest.fixture(scope="session")
def fmnist():
    """A Fashion-MNIST slice: 300 train images per class, 100 test images per class (real IDX files)."""
    return load_data("fashion-mnist", train_per_class=300, test_per_class=100, val_fraction=0.0)


@pytest.fixture(scope="session")
def fmnist_run(fmnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fmnist-cnn"
    return train(fmnist, TrainConfig(model="cnn", epochs=6, batch_size=64, lr=0.05, seed=0), out)


# ------------------------------------------------------------------ the tiny digits study
FINETUNE = {"name": "finetune", "params": {"epochs": 0.5}}


def _flow(value) -> str:
    """A value as YAML flow text; a string is written as is (so ``.nan`` stays YAML's NaN)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def tiny_study_yaml(name: str = "tiny", methods=("retrain", FINETUNE), seeds=(0,), figures: bool = False,
                    extra: str = "") -> str:
    """The smallest real study: digits, a 1-epoch CNN, class 3 forgotten (a 50-per-class retain subset).

    Tests vary it through the arguments only, so all of them share the same models (content-addressed)
    and the same line layout (tests/test_harness.py checks error line numbers). ``methods`` items are a
    name, or a dict (name, params, ...) written as a block; ``extra`` is appended as is.
    """
    lines = [f"name: {name}", "datasets:", "  - name: digits", "models: [cnn]",
             "train: {epochs: 1, batch_size: 64, lr: 0.05}", "requests:", "  - classes: [3]",
             "    subset_per_class: 50", "methods:"]
    for m in methods:
        if isinstance(m, str):
            lines.append(f"  - {m}")
            continue
        lines.append(f"  - name: {m['name']}")
        lines += [f"    {k}: {_flow(v)}" for k, v in m.items() if k != "name"]
    lines += [f"seeds: {_flow(list(seeds))}", f"evaluate: {{relearn: false, figures: {_flow(figures)}}}"]
    return "\n".join(lines) + "\n" + extra


def tiny_study(path: Path, **kw) -> Path:
    """Write ``tiny_study_yaml(**kw)`` to ``path`` (its folder made); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tiny_study_yaml(**kw))
    return path
