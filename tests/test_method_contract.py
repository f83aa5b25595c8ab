"""The contract every registered method keeps, checked for each name in the registry (timm's pattern).

A new method file registers itself and is tested here without anyone adding it to a list. On a tiny
digits slice and tiny settings, for every method: it reads exactly what it declared; the input model
stays bit-identical; the record has its keys; the same seed gives the same weights (CPU); and its
result depends on the forget samples' inputs exactly when it declared the forget set — so a method
that did not declare it (every zero-glance method) provably never read it. ``evaluate`` is checked
for the same-seed property too.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from obliviate.data import ForgetRequest, load_data
from obliviate.data.dataset import ArrayData, DataBundle
from obliviate.methods import METHODS, get_method, list_methods, load_all, resolve_params, unlearn
from obliviate.methods.base import FORGET, SNAPSHOTS
from obliviate.metrics import evaluate
from obliviate.training import TrainConfig, load_block_assignment, train

load_all()
NAMES = sorted(METHODS)

TINY_RECIPE = TrainConfig(model="cnn", epochs=2, batch_size=64, lr=0.05, seed=0, model_options={"width": 8})

#: The general rule: any of these fields a method's parameters have is shrunk to this value. A method
#: whose training length is named ``epochs`` (most, and any new fine-tuning method) needs nothing more.
TINY_DEFAULTS = {"epochs": 1, "noise_n": 8, "noise_steps": 2}
#: Methods the rule alone does not make fast (or whose other knobs must follow the shorter run).
OVERRIDES = {
    "unsir": {"impair_epochs": 1, "repair_epochs": 1},
    "scrub": {"msteps": 1, "lr_decay_epochs": ""},
    "fisher": {"max_samples": 64},
    "deepobliviate": {"bn_samples": 64},
}
RECORD_KEYS = {"method", "params", "seconds", "seed", "request", "request_kind", "zero_glance", "declared",
               "touched", "info", "forget_size", "retain_size", "peak_gpu_memory_mb", "device"}


def tiny_params(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(get_method(name).Params)}
    return {**{k: v for k, v in TINY_DEFAULTS.items() if k in fields}, **OVERRIDES.get(name, {})}


@pytest.fixture(scope="module")
def tiny():
    """300 digits training images (30 per class) and a width-8 CNN trained for 2 epochs (seconds)."""
    data = load_data("digits", train_per_class=30, val_fraction=0.0)
    return data, train(data, TINY_RECIPE).model


def _setting(name, tiny, digits, digits_blocks_run):
    """(model, data, request, unlearn kwargs): the tiny slice, or the block-trained run for snapshot methods."""
    if SNAPSHOTS in get_method(name).needs:
        ids, blocks = load_block_assignment(digits_blocks_run.run.path)
        last = ids[blocks == blocks.max()][:5]  # deleting from the last block retrains one block only
        return (digits_blocks_run.model, digits, ForgetRequest.for_ids(last),
                {"run_path": digits_blocks_run.run.path})
    data, model = tiny
    return model, data, ForgetRequest.for_classes(3, subset_per_class=10), {"train_config": TINY_RECIPE}


def _with_other_forget_inputs(data: DataBundle, request: ForgetRequest) -> DataBundle:
    """The same data set with every forget sample's image replaced by random pixels (labels and ids kept)."""
    pos = torch.as_tensor(request.resolve(data.train, data.num_classes).forget_pos)
    x = data.train.x.clone()
    g = torch.Generator().manual_seed(123)
    x[pos] = torch.randint(0, 256, x[pos].shape, generator=g, dtype=torch.int64).to(x.dtype)
    train_split = ArrayData(x, data.train.y, data.train.ids)
    return dataclasses.replace(data, train=train_split)


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_contract_covers_every_method_the_cli_lists():
    """``obliviate methods`` prints ``list_methods()``; every one of those names is a case of the contract."""
    assert [m.name for m in list_methods()] == NAMES


def test_every_registered_method_has_fast_settings():
    """A method is fast here through the general rule (an ``epochs`` field) or an explicit entry."""
    for name in NAMES:
        fields = {f.name for f in dataclasses.fields(get_method(name).Params)}
        assert name in OVERRIDES or "epochs" in fields, f"{name}: add tiny settings to OVERRIDES"
        resolve_params(get_method(name), tiny_params(name))  # every override names a real parameter
    assert set(OVERRIDES) <= set(NAMES), set(OVERRIDES) - set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_method_contract(name, tiny, digits, digits_blocks_run):
    method = get_method(name)
    model, data, request, kwargs = _setting(name, tiny, digits, digits_blocks_run)
    params = tiny_params(name)
    given = _state(model)

    first, record = unlearn(model, data, request, name, params=params, seed=0, device="cpu", **kwargs)
    assert _same(given, _state(model)), f"{name} changed the input model"
    assert RECORD_KEYS <= set(record), RECORD_KEYS - set(record)
    assert record["method"] == name and record["zero_glance"] is method.zero_glance
    assert set(record["params"]) == {f.name for f in dataclasses.fields(method.Params)}
    assert json.loads(json.dumps(record)) is not None  # the record is plain data
    # it read exactly what it declared
    assert set(record["touched"]) == set(record["declared"]), (record["declared"], record["touched"])
    if method.zero_glance:
        assert FORGET not in record["declared"] and "forget_ids" not in record["declared"]

    again, _ = unlearn(model, data, request, name, params=params, seed=0, device="cpu", **kwargs)
    assert _same(_state(first), _state(again)), f"{name}: the same seed gave different weights"

    # the result depends on the forget samples' inputs exactly when the method declared the forget set
    other, _ = unlearn(model, _with_other_forget_inputs(data, request), request, name, params=params, seed=0,
                       device="cpu", **kwargs)
    if FORGET in record["declared"]:
        assert not _same(_state(first), _state(other)), f"{name} declared the forget set but ignores it"
    else:
        assert _same(_state(first), _state(other)), f"{name} did not declare the forget set but depends on it"


def test_evaluate_is_deterministic_for_a_seed(tiny):
    data, model = tiny
    request = ForgetRequest.for_classes(3, subset_per_class=10)
    unlearned, _ = unlearn(model, data, request, "finetune", params={"epochs": 1}, train_config=TINY_RECIPE)
    retrained, _ = unlearn(model, data, request, "retrain", params={"epochs": 1}, train_config=TINY_RECIPE)

    def run() -> str:
        m = evaluate(model, unlearned, data, request, retrained=retrained, figures=False, seed=0)
        return json.dumps(m, sort_keys=True)  # NaN-safe equality: the same text

    first = run()
    assert run() == first
    assert np.isfinite(json.loads(first)["mia_loss_lr"])
