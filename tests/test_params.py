"""Declared parameter ranges: every method parameter and training option is checked before any work."""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest

from obliviate.data import ForgetRequest
from obliviate.errors import ObliviateError
from obliviate.methods import METHODS, load_all, resolve_params, unlearn
from obliviate.params import RANGE, _base_type, _conventional, check_fields, param
from obliviate.training import TrainConfig

load_all()
#: Modules being rewritten elsewhere: their methods get the generic checks (finite floats, conventional names) only.
UNDECLARED: set[str] = set()  # every method declares its ranges
#: Fields any value of their type is fine for.
FREE = {"seed", "lr_decay_epochs", "normalise"}


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return [(f, _base_type(hints[f.name])[0]) for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_float_parameter_refuses_nan_and_inf_by_name(name):
    method = METHODS[name]()
    for f, base in _fields(method.Params):
        if base is not float:
            continue
        with pytest.raises(ObliviateError, match=rf"^{re.escape(name)}: {f.name}=nan is not a finite number"):
            resolve_params(method, {f.name: "nan"})
        if not (f.metadata.get(RANGE) and f.metadata[RANGE].inf):
            with pytest.raises(ObliviateError, match=rf"{f.name}=-?inf is not a finite number"):
                resolve_params(method, {f.name: "-inf"})


@pytest.mark.parametrize("name", sorted(set(METHODS) - UNDECLARED))
def test_every_parameter_declares_its_range(name):
    """A new numeric or text parameter must say what it accepts (``param(default, gt=..., choices=...)``)."""
    for f, base in _fields(METHODS[name].Params):
        if base in (int, float, str) and f.name not in FREE:
            assert RANGE in f.metadata or _conventional(f.name), f"{name}.{f.name} declares no range"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_defaults_and_presets_are_inside_the_declared_ranges(name):
    method = METHODS[name]()
    resolve_params(method, {})
    for preset in method.presets:
        resolve_params(method, {"preset": preset})


@pytest.mark.parametrize("method, params, message", [
    ("finetune", {"epochs": "0"}, "finetune: epochs=0.0 is out of range (allowed: > 0)"),
    ("finetune", {"lr": "-0.1"}, "finetune: lr=-0.1 is out of range (allowed: > 0)"),
    ("finetune", {"batch_size": "0"}, "finetune: batch_size=0 is out of range (allowed: >= 1)"),
    ("finetune", {"optimizer": "rmsprop"}, "finetune: unknown optimizer 'rmsprop'; choose one of: sgd, adam, adamw"),
    ("salun", {"mask_ratio": "1.5"}, "salun: mask_ratio=1.5 is out of range (allowed: in (0, 1])"),
    ("bad-teacher", {"retain_fraction": -0.1},
     "bad-teacher: retain_fraction=-0.1 is out of range (allowed: in [0, 1])"),
    ("neggrad+", {"momentum": 1.0}, "neggrad+: momentum=1.0 is out of range (allowed: in [0, 1))"),
    ("scrub", {"epochs": 0}, "scrub: epochs=0 is out of range (allowed: >= 1)"),
    ("scrub", {"epochs": 2.5}, "scrub: epochs=2.5: expected an integer (allowed: >= 1)"),
    ("fisher", {"labels": "guess"}, "fisher: unknown labels 'guess'; choose one of: expected, sampled, true"),
    ("retrain", {"schedule": "linear"}, "retrain: unknown schedule 'linear'; choose one of: onecycle, cosine"),
    ("random-label", {"lr": True}, "random-label: lr=True: expected a number (allowed: > 0)"),
    ("unsir", {"impair_lr": "0"}, "unsir: impair_lr=0.0 is out of range (allowed: > 0)"),  # by its name only
    ("unsir", {"optimizer": "rmsprop"}, "unsir: unknown optimizer 'rmsprop'"),
    ("deepobliviate", {"epsilon": "inf"}, "deepobliviate: epsilon=inf is not a finite number"),
])
def test_out_of_range_values_name_parameter_value_and_range(method, params, message):
    with pytest.raises(ObliviateError) as exc:
        resolve_params(METHODS[method](), params)
    assert message in str(exc.value)


def test_infinite_values_only_where_declared():
    assert resolve_params(METHODS["neggrad"](), {"max_loss": "inf"}).max_loss == float("inf")  # "no cap"
    assert resolve_params(METHODS["neggrad"](), {"preset": "unbounded"}).max_loss == float("inf")


def test_python_api_refuses_before_any_work(digits, digits_model, monkeypatch):
    ran = []
    monkeypatch.setattr(METHODS["finetune"], "run", lambda self, ctx, p: ran.append(p) or ctx.model)
    with pytest.raises(ObliviateError, match="lr=nan"):
        unlearn(digits_model, digits, ForgetRequest.for_classes(3), "finetune", params={"lr": float("nan")})
    assert not ran


@pytest.mark.parametrize("options, message", [
    ({"lr": float("nan")}, "train: lr=nan is not a finite number (allowed: > 0)"),
    ({"epochs": 0}, "train: epochs=0 is out of range (allowed: >= 1)"),
    ({"batch_size": 0}, "train: batch_size=0 is out of range (allowed: >= 1)"),
    ({"optimizer": "lbfgs"}, "train: unknown optimizer 'lbfgs'"),
    ({"augment": "rotate"}, "train: unknown augment 'rotate'; choose one of: none, flip, crop, crop-flip"),
    ({"label_smoothing": 1.0}, "train: label_smoothing=1.0 is out of range (allowed: in [0, 1))"),
    ({"weight_decay": float("inf")}, "train: weight_decay=inf is not a finite number (allowed: >= 0)"),
    ({"epochs_per_block": 0, "blocks": 4}, "train: epochs_per_block=0 is out of range (allowed: >= 1)"),
    ({"model": "resnet99"}, "unknown model 'resnet99'"),
])
def test_train_options_are_checked_by_their_declarations(options, message):
    with pytest.raises(ObliviateError) as exc:
        TrainConfig(**options).validate()
    assert message in str(exc.value)


def test_declaring_a_range_on_any_dataclass():
    @dataclasses.dataclass
    class Params:
        steps: int = param(10, ge=1, le=100)
        temperature: float | None = param(None, gt=0)
        note: str = "free"

    check_fields(Params(), "demo")
    check_fields(Params(temperature=0.5), "demo")
    with pytest.raises(ObliviateError, match=r"demo: steps=101 is out of range \(allowed: in \[1, 100\]\)"):
        check_fields(Params(steps=101), "demo")
    with pytest.raises(ObliviateError, match="demo: note=3: expected a string"):
        check_fields(Params(note=3), "demo")
