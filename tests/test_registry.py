"""The registries and the single sources of configuration: what a new method, model or CLI option relies on."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pytest
import typer

from obliviate.cli.app import key_values
from obliviate.cli.main import app
from obliviate.errors import ObliviateError
from obliviate.methods import METHODS, load_all, register
from obliviate.methods.finetune import FineTune
from obliviate.models import MODELS, ModelInfo, build_model, register_model
from obliviate.params import ConversionError, convert
from obliviate.training import TrainConfig

load_all()


def test_a_second_method_of_one_name_is_refused_and_the_first_kept():
    class Impostor(FineTune):
        pass  # same name "finetune", another class

    with pytest.raises(ObliviateError, match="method name 'finetune' is already registered"):
        register(Impostor)
    assert METHODS["finetune"] is FineTune
    assert register(FineTune) is FineTune  # the same class again is harmless (a re-import)


def test_a_second_model_of_one_name_is_refused_and_the_first_kept():
    original = MODELS["cnn"]
    with pytest.raises(ObliviateError, match="model name 'cnn' is already registered"):
        register_model("cnn", "an impostor")(lambda spec: None)
    assert MODELS["cnn"] is original
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=3)
    assert model.spec.name == "cnn"


def test_model_registry_entries_are_named():
    for name, info in MODELS.items():
        assert isinstance(info, ModelInfo) and info.name == name and callable(info.build) and info.summary


def _train_options() -> dict[str, object]:
    command = next(c for c in typer.main.get_command(app).commands.values() if c.name == "train")
    return {p.name: p.default for p in command.params}


def test_train_cli_defaults_are_train_configs():
    """One source for training defaults: ``obliviate train`` with no option trains what ``TrainConfig()`` says."""
    options, defaults = _train_options(), TrainConfig()
    shared = [f.name for f in dataclasses.fields(TrainConfig) if f.name in options]
    assert {"model", "epochs", "lr", "batch_size", "optimizer", "schedule", "weight_decay", "seed"} <= set(shared)
    for name in shared:
        assert options[name] == getattr(defaults, name), name
    assert options["model"] == TrainConfig.model == "cnn"


@pytest.mark.parametrize("value, annotation, parse, expected", [
    ("3", int, True, 3), ("0.5", float, True, 0.5), ("off", bool, True, False), ("none", Optional[float], True, None),
    (7, int, True, 7),  # not text: passed as it is
    (3, float, False, 3.0), (None, Optional[int], False, None), ({"a": 1}, dict, False, {"a": 1}),
])
def test_convert_reads_text_and_checks_typed_values(value, annotation, parse, expected):
    out = convert(value, annotation, parse=parse)
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize("value, annotation, parse, kind", [
    ("x", float, True, "a number"), ("maybe", bool, True, "true or false"), ("1.5", int, True, "an integer"),
    ("3", int, False, "an integer"), (True, float, False, "a number"), (None, int, False, "an integer"),
    ([1], dict, False, "a mapping"),
])
def test_convert_refuses_a_value_of_another_type(value, annotation, parse, kind):
    with pytest.raises(ConversionError) as err:
        convert(value, annotation, parse=parse)
    assert err.value.kind == kind


def test_key_values_splits_on_the_first_equals_and_names_the_option():
    assert key_values(["lr=0.01", " a = b=c "], "--param") == {"lr": "0.01", "a": "b=c"}
    assert key_values(None, "--param") == {}
    with pytest.raises(ObliviateError, match=r"^--data-root 'cifar10': expected DATASET=PATH$"):
        key_values(["cifar10"], "--data-root", "DATASET=PATH")
