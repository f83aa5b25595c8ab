"""fcalb-samples against a planted backdoor on a BatchNorm model (issue 25.2).

A forget batch forwarded on its own in train mode is normalised by its own statistics; the forget loss can be
met through them while the eval-mode model still obeys the trigger. ``forget_bn=running`` (fcalb-samples'
default) computes that loss with the running statistics, so only the weights can meet it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from obliviate.backdoor_runs import plan_backdoor, poisoned
from obliviate.data import ForgetRequest
from obliviate.methods import get_method, resolve_params, unlearn
from obliviate.methods.common import batchnorm_frozen
from obliviate.metrics import backdoor_asr
from obliviate.metrics.accuracy import accuracy
from obliviate.training import TrainConfig, train

RECIPE = TrainConfig(model="cnn", epochs=8, batch_size=64, lr=0.05, seed=0)  # the small CNN has two BatchNorm layers


def test_batchnorm_frozen_uses_running_statistics_and_restores_the_mode():
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5)).train()
    bn = net[1]
    bn.running_mean.fill_(3.0)
    before = bn.running_mean.clone()
    x = torch.randn(16, 4)
    with batchnorm_frozen(net):
        assert not bn.training and net[2].training  # BatchNorm only; dropout keeps train mode
        out = bn(net[0](x))
    assert torch.equal(bn.running_mean, before)  # the forward did not move the running statistics
    bn.eval()
    assert torch.allclose(out, bn(net[0](x)))
    bn.train()
    with batchnorm_frozen(net, enabled=False):
        assert bn.training
    assert bn.training and net.training
    net.eval()
    with batchnorm_frozen(net):  # a layer already in eval mode stays there afterwards
        pass
    assert not bn.training


def test_fcalb_samples_defaults_to_running_statistics_and_fcalb_does_not():
    assert resolve_params(get_method("fcalb-samples"), {}).forget_bn == "running"
    assert resolve_params(get_method("fcalb"), {}).forget_bn == "batch"


@pytest.fixture(scope="module")
def poisoned_digits(digits, tmp_path_factory):
    plan = plan_backdoor(digits, 40, 0, seed=0)
    data = poisoned(digits, plan)
    model = train(data, RECIPE, tmp_path_factory.mktemp("runs") / "poisoned-digits").model
    return data, model, ForgetRequest.for_ids(list(plan.ids))


def test_fcalb_samples_removes_a_backdoor_from_a_batchnorm_model(poisoned_digits):
    data, model, request = poisoned_digits
    bd = data.spec["backdoor"]

    def asr(m):
        return backdoor_asr(m, data.test, bd["target"], bd["patch"])

    retrained, _ = unlearn(model, data, request, "retrain", train_config=RECIPE, seed=0, device="cpu")
    fixed, _ = unlearn(model, data, request, "fcalb-samples", params={"preset": "poisoned"}, seed=0, device="cpu")
    loophole, _ = unlearn(model, data, request, "fcalb-samples", params={"preset": "poisoned", "forget_bn": "batch"},
                          seed=0, device="cpu")
    assert asr(model) > 0.8  # the backdoor took (seeds 0-2 measured: 0.95-0.98)
    assert asr(fixed) <= asr(retrained) + 0.15, (asr(fixed), asr(retrained))  # seeds 0-2 measured: 0.08-0.13 vs 0.0
    assert asr(loophole) >= asr(fixed) + 0.2, (asr(loophole), asr(fixed))  # batch statistics: 0.36-0.55
    assert accuracy(fixed, data.test) >= accuracy(retrained, data.test) - 0.04
