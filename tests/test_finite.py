"""A diverged model (NaN weights or outputs) is an error where it happens, never a saved run or a metric."""
from __future__ import annotations

import copy

import pytest
import torch

from obliviate.api import forget
from obliviate.data import ForgetRequest
from obliviate.errors import ObliviateError
from obliviate.metrics import evaluate
from obliviate.training import TrainConfig, train


@pytest.mark.parametrize("mode", [{"epochs": 1}, {"blocks": 3, "epochs_per_block": 1}])
def test_diverging_training_is_an_error_and_leaves_no_run(digits, tmp_path, mode):
    out = tmp_path / "diverged"
    cfg = TrainConfig(model="cnn", batch_size=64, lr=1e4, seed=0, **mode)
    with pytest.raises(ObliviateError,
                       match=r"the trained model has NaN weights .*lower the learning rate \(lr=10000\)"):
        train(digits, cfg, out)
    assert not out.exists()  # block mode had written snapshots: removed with the run


def test_diverging_unlearning_is_an_error_not_a_saved_run(digits_run, tmp_path):
    out = tmp_path / "nan-forget"
    with pytest.raises(ObliviateError, match=r"the unlearned model has NaN weights .*--param lr=\.\.\., now lr=10000"):
        forget(digits_run.run.path, ForgetRequest.for_classes(3), "finetune", params={"lr": 1e4, "epochs": 0.5},
               out=out)
    assert not out.exists()


def test_library_unlearn_refuses_a_diverged_result(digits, digits_model, monkeypatch):
    """``obliviate.unlearn`` (no run folder, no CLI) must not hand back a NaN model as an unlearned one."""
    from obliviate import unlearn
    from obliviate.methods.finetune import FineTune

    request = ForgetRequest.for_classes(3)
    with pytest.raises(ObliviateError, match=r"^the unlearned model has NaN weights .*finetune diverged; "
                                             r"lower its learning rate \(--param lr=\.\.\., now lr=1e\+30\)"):
        unlearn(digits_model, digits, request, "finetune", params={"lr": 1e30, "epochs": 0.5})

    def poisoned_run(self, ctx, p):  # a method bug: finite inputs, one NaN weight out
        with torch.no_grad():
            ctx.model.head.bias[0] = float("nan")
        return ctx.model

    monkeypatch.setattr(FineTune, "run", poisoned_run)
    with pytest.raises(ObliviateError, match=r"NaN weights \(1 of [\d,]+ values NaN or infinite, first in head.bias\)"):
        unlearn(digits_model, digits, request, "finetune")
    assert torch.isfinite(digits_model.head.bias).all()  # the input model is untouched


def test_evaluate_refuses_nan_weights_and_overflowing_outputs(digits, digits_model):
    request = ForgetRequest.for_classes(3)
    nan = copy.deepcopy(digits_model)
    with torch.no_grad():
        nan.head.bias[0] = float("nan")
    with pytest.raises(ObliviateError, match=r"^the unlearned model has NaN weights \(1 of [\d,]+ values NaN or "
                                             r"infinite, first in head.bias\): it cannot be evaluated"):
        evaluate(digits_model, nan, digits, request, relearn=False, figures=False)
    huge = copy.deepcopy(digits_model)
    with torch.no_grad():
        huge.head.weight.mul_(1e38)  # finite weights, infinite logits
    with pytest.raises(ObliviateError, match=r"^the retrained model produces NaN or infinite outputs on [\d,]+ of "
                                             r"[\d,]+ training samples"):
        evaluate(digits_model, digits_model, digits, request, retrained=huge, relearn=False, figures=False)
