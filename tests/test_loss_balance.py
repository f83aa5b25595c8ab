"""FCALB's loss balancing on constructed losses: which task each scheme up-weights, and why.

No model training: the losses are built so that one cause (a loss that falls slower, a larger gradient, a
larger loss) differs between the two tasks, and the weights must move the way the cited scheme says.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from obliviate.methods.fcalb import DWABalance, FCALBParams, GradNormBalance, UncertaintyBalance


class _Shared(torch.nn.Module):
    """A 'model' whose ``body`` ends in one shared weight matrix, as GradNorm reads it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 3))


def _gradnorm_weights(grad_scale, values, steps=30, **params):
    """Run GradNorm for ``steps`` steps with L_i = grad_scale_i·f(W) + c_i, where c_i shifts L_i to
    ``values(step)[i]`` without changing its gradient; return the final weights (w_forget, w_recover)."""
    model = _Shared()
    p = dataclasses.replace(FCALBParams(), balance="gradnorm", **params)
    balance = GradNormBalance(p, model, torch.device("cpu"))
    w = model.body[0].weight
    x = torch.ones(3)
    for step in range(steps):
        f = (w @ x).pow(2).sum()
        target = values(step)
        losses = [grad_scale[i] * f + (target[i] - grad_scale[i] * f.detach()) for i in range(2)]
        balance.total(losses)
    return balance.weights


def test_gradnorm_up_weights_the_task_whose_loss_falls_slower():
    """Equal gradients; the recover loss halves while the forget loss stays: GradNorm's inverse training
    rate r_i = L_i(t)/L_i(0) is larger for forget, so forget's target gradient norm, and its weight, rise.
    A sign flip of GradNorm's weight gradient (descending |G − G*| the wrong way) fails here."""
    w = _gradnorm_weights((1.0, 1.0), lambda t: (1.0, 1.0 if t == 0 else 0.5))
    assert w[0] > 1.05 and w[1] < 0.95, w
    assert sum(w) == pytest.approx(2.0)


def test_gradnorm_with_alpha_zero_balances_gradient_norms():
    """α = 0 ignores training rates: the task with 4x the gradient is down-weighted toward equal norms."""
    w = _gradnorm_weights((4.0, 1.0), lambda t: (1.0, 1.0), gradnorm_alpha=0.0, steps=60)
    assert w[0] < 0.8 and w[1] > 1.2, w


def _dwa_weights(values, epochs=4):
    p = dataclasses.replace(FCALBParams(), balance="dwa")
    balance = DWABalance(p, None, torch.device("cpu"), steps_per_epoch=1)
    for t in range(epochs):
        balance.total([torch.tensor(v) for v in values(t)])
    return balance.weights


def test_dwa_up_weights_the_task_whose_loss_falls_slower():
    """Liu et al. 2019: w_i ∝ exp(r_i / T), r_i = L_i(t−1)/L_i(t−2). Forget flat (r = 1), recover halving each
    epoch (r = 0.5): forget gets the larger weight. Inverting the ratio (L(t−2)/L(t−1)) fails here."""
    w = _dwa_weights(lambda t: (1.0, 0.5 ** t))
    expected = torch.softmax(torch.tensor([1.0, 0.5]) / 2.0, 0) * 2  # T = dwa_temperature = 2
    assert w == pytest.approx(expected.tolist(), rel=1e-6)
    assert w[0] > w[1]


def test_dwa_keeps_equal_weights_for_the_first_two_epochs():
    assert _dwa_weights(lambda t: (1.0, 0.5 ** t), epochs=2) == [1.0, 1.0]


def test_uncertainty_down_weights_the_larger_loss_to_one_over_its_value():
    """L = Σ e^{−s_i}·L_i + s_i: ∂/∂s_i = 1 − e^{−s_i}·L_i = 0 at weight e^{−s_i} = 1/L_i, so the task with the
    larger loss gets the smaller weight. (Kendall et al.'s classification form e^{−s}L + ½s would settle at
    1/(2L_i): the same ratio between the tasks, half the scale — see ``UncertaintyBalance``.)"""
    p = dataclasses.replace(FCALBParams(), balance="uncertainty", balance_lr=0.05)
    balance = UncertaintyBalance(p, None, torch.device("cpu"))
    opt = torch.optim.Adam(balance.extra_params())
    losses = [torch.tensor(4.0), torch.tensor(0.25)]
    for _ in range(400):
        opt.zero_grad()
        balance.total(losses).backward()
        opt.step()
    w = torch.exp(-balance.log_vars).tolist()
    assert w[0] == pytest.approx(0.25, rel=0.05) and w[1] == pytest.approx(4.0, rel=0.05), w
