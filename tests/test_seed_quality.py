"""Issue 10/11 behaviour: resnet8, fast-retrain, the second speed-up column, the scaling figures, FCALB's
balance schemes, and DeepObliviate's stop rule, restart point and stitch arithmetic."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from obliviate import ForgetRequest, unlearn
from obliviate.data.dataset import ArrayData, DataBundle
from obliviate.harness.report import build_sections
from obliviate.harness.scaling import cost_slopes, fit_slope
from obliviate.harness.tables import rows_frame
from obliviate.methods.deepobliviate import dfa_exponent, plateau_decision, stitch, stop_decision
from obliviate.metrics.accuracy import accuracy
from obliviate.models import model_for
from obliviate.training import TrainConfig, load_block_assignment, load_block_snapshot, train
from obliviate.training.loop import make_optimizer
from obliviate.training.trainer import train_block


# ---------------------------------------------------------------- resnet8
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet8_builds_and_a_training_step_lowers_the_loss(shape):
    n = 32
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((n, *shape), generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % 10
    data = ArrayData(x, y, torch.arange(n))
    bundle = DataBundle("synthetic", data, data.subset(torch.arange(0)), data, [str(i) for i in range(10)], "image",
                        (0.5,) * shape[0], (0.25,) * shape[0], source_hash="synthetic")
    model = model_for("resnet8", bundle)
    assert model.wants_channels_last(torch.device("cpu")) and model(x[:2].float() / 255).shape == (2, 10)
    before = torch.nn.functional.cross_entropy(model(x.float() / 255), y).item()
    res = train(bundle, TrainConfig(model="resnet8", epochs=3, batch_size=32, lr=0.05, augment="none",
                                    schedule="constant"))
    res.model.train()
    after = torch.nn.functional.cross_entropy(res.model(x.float() / 255), y).item()
    assert after < before


# ---------------------------------------------------------------- fast-retrain
def test_fast_retrain_reads_only_the_retain_set_and_forgets(digits, digits_run, monkeypatch):
    from obliviate.methods import fast_retrain

    seen = []
    real_train = fast_retrain.train

    def spy(bundle, cfg, **kw):
        seen.append((bundle.train.ids.clone(), cfg))
        return real_train(bundle, cfg, **kw)

    monkeypatch.setattr(fast_retrain, "train", spy)
    request = ForgetRequest.for_classes(3)
    cfg = TrainConfig.from_dict(digits_run.record["config"])
    model, record = unlearn(digits_run.model, digits, request, method="fast-retrain", train_config=cfg)
    ids, used = seen[0]
    forget_ids = set(request.resolve(digits.train, 10).forget_ids(digits.train).tolist())
    assert forget_ids and not forget_ids & set(ids.tolist())
    assert record["touched"] == {"retain": len(ids)} and record["declared"] == ["retain"]
    assert used.epochs == int(np.ceil(cfg.epochs * 0.5)) and used.label_smoothing == 0.1
    split = request.resolve(digits.train, 10)
    test_forget, test_retain = split.test_split(digits.test)
    assert accuracy(model, test_forget) == 0.0 and accuracy(model, test_retain) > 0.9


# ---------------------------------------------------------------- the second speed-up column
def _row(method, seconds, seed=0, request="class 0", size=None, **metrics):
    m = {"seconds": seconds, "test_acc": 0.9, **metrics}
    if size:
        m.update(forget_size=size // 10, retain_size=size - size // 10)
    return {"study": "s", "dataset": "d", "model": "m", "request": request, "method": method,
            "method_name": method, "seed": seed, "params": {}, "metrics": m,
            "config": {"request_spec": {"classes": [0], "subset_per_class": 100}}}


def test_speedup_vs_fast_retrain_comes_from_the_same_experiment():
    rows = [_row("retrain", 100.0), _row("fast-retrain", 40.0), _row("unsir", 4.0),
            _row("fast-retrain", 80.0, seed=1), _row("unsir", 4.0, seed=1), _row("unsir", 5.0, request="other")]
    f = rows_frame(rows).set_index(["method", "seed", "request"])
    assert f.loc[("unsir", 0, "class 0"), "speedup_vs_fast_retrain"] == pytest.approx(10.0)
    assert f.loc[("unsir", 1, "class 0"), "speedup_vs_fast_retrain"] == pytest.approx(20.0)
    assert f.loc[("retrain", 0, "class 0"), "speedup_vs_fast_retrain"] == pytest.approx(0.4)
    assert np.isnan(f.loc[("unsir", 0, "other"), "speedup_vs_fast_retrain"])  # no fast-retrain there


# ---------------------------------------------------------------- cost vs size
def test_cost_slopes_and_the_report_figure():
    assert fit_slope([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)
    assert fit_slope([1, 10, 100], [5, 5, 5]) == pytest.approx(0.0, abs=1e-9)
    rows = []
    for n in (6000, 15000, 30000, 60000):
        rows += [_row("retrain", n / 100, size=n), _row("unsir", 3.0, size=n)]
    slopes = {s.method: s.slope for s in cost_slopes(rows)}
    assert slopes["retrain"] == pytest.approx(1.0) and slopes["unsir"] == pytest.approx(0.0, abs=1e-9)
    sections = build_sections(rows, [])
    scaling = [s for s in sections if s.title.startswith("Scaling")]
    assert scaling and scaling[0].figures[0].png.startswith(b"\x89PNG")
    assert "1.00" in scaling[0].table_md and "0.00" in scaling[0].table_md
    # one training-set size: no scaling section
    assert not [s for s in build_sections(rows[:2], []) if s.title.startswith("Scaling")]


# ---------------------------------------------------------------- FCALB's balance schemes
@pytest.mark.parametrize("balance", ["uncertainty", "dwa", "gradnorm"])
def test_fcalb_balance_weights_move_and_it_forgets(balance, digits, digits_model):
    request = ForgetRequest.for_classes(3)
    model, record = unlearn(digits_model, digits, request, method="fcalb", params={"balance": balance, "epochs": 3})
    trace = record["info"]["weights_trace"]
    assert trace[0] != record["info"]["final_weights"], trace  # learnt, not constant
    split = request.resolve(digits.train, 10)
    test_forget, test_retain = split.test_split(digits.test)
    assert accuracy(model, test_forget) <= 0.05 and accuracy(model, test_retain) >= 0.9


# ---------------------------------------------------------------- DeepObliviate's stop rule
class _FixedLogits(torch.nn.Module):
    """A 'model' whose output is a learnable logit table (one row per input), to read the loss's gradient."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.z = torch.nn.Parameter(logits.clone())

    def forward(self, x):
        return self.z


def test_retain_distillation_is_cross_entropy_at_zero_and_pushes_forgotten_logits_down():
    """The repair/recover loss: weight 0 is plain cross-entropy; with weight it pulls the model toward the
    original with the forgotten classes masked, so it lowers the forgotten logit even on a kept-class input."""
    from types import SimpleNamespace

    from obliviate.methods.common import retain_distillation

    torch.manual_seed(0)
    logits = torch.randn(16, 4)
    teacher, student = _FixedLogits(logits), _FixedLogits(logits)
    batch = SimpleNamespace(x=torch.zeros(16, 1), y=torch.randint(1, 4, (16,)))  # kept classes only
    ce = torch.nn.functional.cross_entropy(logits, batch.y)
    assert torch.allclose(retain_distillation(teacher, [0], 0.0)(student, batch), ce)
    loss = retain_distillation(teacher, [0], 1.0)(student, batch)
    assert loss.item() > 0  # the unmasked copy still gives class 0 probability mass
    loss.backward()
    assert (student.z.grad[:, 0] > 0).all()  # a descent step lowers class 0's logit on every input
    assert (student.z.grad[:, 1:].sum(1) < 0).all()  # and moves that mass to the kept classes
    with torch.no_grad():  # a student that already gives class 0 nothing matches the masked teacher
        student.z[:, 0] = -1e4
    assert retain_distillation(teacher, [0], 1.0)(student, batch).item() < 1e-4


def test_fcalb_distillation_keeps_more_of_the_kept_classes_and_forgets(digits, digits_model):
    """Measured on digits, D_sub 40 per class, 3 seeds (kept-class test accuracy, forget test accuracy):
    plain cross-entropy 0.978-0.984 / 0.38-0.68, distillation 0.9 0.988-0.991 / 0.00-0.08. With the
    cosine schedule the masked teacher is also what finishes the forgetting on this small model; on full
    Fashion-MNIST it raised kept-class accuracy from 93.3 to 94.0 % (see FCALBParams). Measured at 3 epochs
    (9 steps here), so ``min_steps`` is off: 64 steps of either loss forget the class and keep 0.99."""
    request = ForgetRequest.for_classes(3, subset_per_class=40)
    keep = digits.test.subset((digits.test.y != 3).nonzero().flatten())
    forget = digits.test.subset((digits.test.y == 3).nonzero().flatten())
    plain, distilled = [], []
    for seed in (0, 1, 2):
        for w, out in ((0.0, plain), (0.9, distilled)):
            model, _ = unlearn(digits_model, digits, request, "fcalb", params={"distill": w, "min_steps": 0}, seed=seed)
            out.append((accuracy(model, keep), accuracy(model, forget)))
    assert all(d[0] > p[0] for p, d in zip(plain, distilled)), (plain, distilled)
    assert max(d[1] for d in distilled) <= 0.15 and np.mean([p[1] for p in plain]) > 0.2, (plain, distilled)


def _first_stop(series, **kw) -> int | None:
    """The block (1-based) at which the rule, asked after every block as the method asks it, first stops."""
    for k in range(1, len(series) + 1):
        if stop_decision(series[:k], 0.02, 4, 0.7, **kw)["stop"]:
            return k
    return None


def _stop_rate(make, n: int, runs: int, **kw) -> float:
    return float(np.mean([_first_stop(make(np.random.default_rng(s), n), **kw) is not None for s in range(runs)]))


NOISY = {  # Δ series on which the residual memory has not faded: the rule must (almost) never stop
    "flat, ±10 % gaussian": lambda r, n: 1.0 + 0.1 * r.standard_normal(n),
    "flat, ±10 % uniform": lambda r, n: 1.0 + r.uniform(-0.1, 0.1, n),
    "rising": lambda r, n: np.linspace(1, 2, n) * (1 + 0.1 * r.standard_normal(n)),
    "linear 1 -> 0.6": lambda r, n: np.linspace(1, 0.6, n) * (1 + 0.02 * r.standard_normal(n)),
}


@pytest.mark.parametrize("kind", list(NOISY))
@pytest.mark.parametrize("n", [8, 16, 30])
def test_stop_rule_false_stop_rate_on_flat_rising_and_slow_series_is_at_most_5_percent(kind, n):
    """Asked after every block as the method asks: measured 0 of 60 for each (n = 8, 16, 30) with ``min_drop``
    0.5; before it flat noise stopped in 31–64 % of series, linear 1 → 0.5 at block 4. Bound: <= 5 % of 60."""
    assert _stop_rate(NOISY[kind], n, 60) <= 0.05


def test_stop_rule_without_the_drop_guard_stops_on_flat_noise():
    """The guard is what holds: the power-law fit alone stops on flat noisy Δ (the issue-27 failure)."""
    assert _stop_rate(NOISY["flat, ±10 % gaussian"], 16, 20, min_drop=0.0) > 0.2


def test_stop_rule_stops_a_slow_decay_only_once_delta_halved():
    """0.95^x: the old rule stopped at 74 % of the peak on a degenerate h ≈ 0 fit."""
    for seed in range(8):
        series = 0.95 ** np.arange(24) * (1 + 0.02 * np.random.default_rng(seed).standard_normal(24))
        k = _first_stop(series)
        assert k is None or np.median(series[k - 3:k]) <= 0.5 * series.max(), (seed, k)


@pytest.mark.parametrize("decay", [lambda x: 1 / x, lambda x: 0.7 ** x, lambda x: x ** -2.0])
def test_stop_rule_stops_clean_decays(decay):
    clean = _first_stop(decay(np.arange(1, 21, dtype=float)))
    assert clean is not None and clean <= 15, clean


def test_stop_rule_stops_noisy_decays():
    """1/x with ±10 % noise: 20 of 20 seeded series stop within 20 blocks (measured; bound 90 %)."""
    x = np.arange(1, 21, dtype=float)
    noisy = [_first_stop(1 / x * (1 + 0.1 * np.random.default_rng(s).standard_normal(20))) for s in range(20)]
    assert np.mean([k is not None for k in noisy]) >= 0.9, noisy


def test_stop_rule_on_hand_made_series():
    decay = list(1.0 / np.arange(1, 16))
    # rise, then decay: fitted from the peak on
    assert stop_decision([2e-3, 5e-3, 3e-3, 2e-3, 1.5e-3, 1.2e-3, 1.1e-3, 1.05e-3, 1.03e-3], 0.02, 4, 0.7)["stop"]
    for series in ([1e-3, 2e-3, 3e-3], list(np.linspace(1, 3, 12)), [1.0] * 10,
                   [1, 1.1, 0.9, 1.05, 0.95, 1.0, 1.1, 0.9], [0.96, 0.934, 0.988, 1.021, 1.057, 1.005, 0.972, 0.961]):
        assert not stop_decision(series, 0.02, 4, 0.7)["stop"], series
    assert not stop_decision(decay[:3], 0.5, 4, 0.7)["stop"]  # fewer than min_deltas values
    # min_deltas counts from the peak, not from the first block: a late peak leaves too few values
    late_peak = [0.5, 0.6, 0.7, 1.0, 0.3, 0.1]
    assert stop_decision(late_peak, 0.5, 3, 0.0)["points"] == 3
    assert not stop_decision(late_peak, 0.5, 4, 0.0)["stop"]


def test_dfa_starts_the_exponent_only_on_long_series():
    assert dfa_exponent([1, 2, 3]) is None
    rng = np.random.default_rng(0)
    alpha = dfa_exponent(rng.normal(size=200))
    assert 0.3 < alpha < 0.7  # white noise: α ≈ 0.5


def _block_ids(run, block: int, n: int = 3) -> list[int]:
    ids, blocks = load_block_assignment(run.run.path)
    return ids[blocks == block][:n].tolist()


def test_deepobliviate_restarts_before_the_first_deleted_block(digits, digits_blocks_run):
    """Retraining from θ_{d−1} equals full retraining without the samples bit for bit (CPU); restarting
    from θ_d — the off-by-one of a third-party version — would not."""
    ids = _block_ids(digits_blocks_run, 2)  # block 3 of 8
    model, record = unlearn(digits_blocks_run.model, digits, ForgetRequest.for_ids(ids), method="deepobliviate",
                            params={"epsilon": 0.0}, run_path=digits_blocks_run.run.path)
    assert record["info"]["retrained_blocks"] == list(range(3, 9)) and record["info"]["exact_retraining"]
    exact = train(digits, TrainConfig.from_dict(digits_blocks_run.record["config"]), exclude_ids=ids).model
    for (k, a), b in zip(model.state_dict().items(), exact.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), k


def _retrained_prefix(run, bundle, forget: list[int], t: int) -> dict:
    """θ'_t built independently of the method: from θ_{d−1}, blocks d..t on D_j minus S."""
    path, cfg = run.run.path, TrainConfig.from_dict(run.record["config"])
    ids, blocks = load_block_assignment(path)
    d = int(blocks[np.isin(ids, forget)].min())
    model = copy.deepcopy(run.model)
    start = load_block_snapshot(path, d)
    model.load_state_dict(start["model"])
    opt = make_optimizer(model.parameters(), cfg.optim())
    opt.load_state_dict(start["optimizer"])
    retain = bundle.train.subset(torch.as_tensor(~np.isin(bundle.train.ids.numpy(), forget)).nonzero().flatten())
    block_of = dict(zip(ids.tolist(), blocks.tolist()))
    rb = torch.as_tensor([block_of[int(i)] for i in retain.ids])
    for j in range(d, t):
        train_block(model, opt, retain.subset((rb == j).nonzero().flatten()), cfg, j, cfg.augment or "none")
    return {n: q.detach().clone() for n, q in model.named_parameters()}


PLATEAU_CASES = [  # (r series, stops?) — measured shapes (benchmarks/README.md) and what must not stop
    ([0.52, 0.56], True),  # one random sample, MNIST-5k: at the floor from the start
    ([9.4, 2.9, 1.0, 0.69, 0.58], True),  # 40 backdoored samples: falls, then levels off
    ([9.4, 2.9, 1.0, 0.69], False),  # ... still falling by more than 20 %
    ([9.4, 2.9], False),  # the deleted samples still change the updates more than the updates themselves
    ([1.7, 1.2, 1.1, 1.05], False),  # levelled off above 1: memory that does not fade
    ([0.2, 3.0, 0.9], False),  # samples in two blocks: the second one's spike is still falling
    ([0.5], False),  # one value says nothing about a trend
    ([0.5, float("nan")], False),
]


@pytest.mark.parametrize("ratios, stops", PLATEAU_CASES)
def test_plateau_rule_waits_for_the_ratio_to_fall_to_its_floor(ratios, stops):
    assert plateau_decision(ratios, 1.0, 0.8)["stop"] is stops


@pytest.mark.parametrize("rule", [{}, {"stop_rule": "power_law", "epsilon": 0.08}])
def test_deepobliviate_default_path_stitches_where_the_stitch_holds(digits, digits_global_blocks_run, rule):
    """Issues 25/27: with one lr schedule across the blocks, the (unstubbed) stop rule fires, the stitch
    check accepts, and the served model is θ'_t + (θ_B − θ_t) — not θ_B, not exact retraining — at fewer
    optimiser steps than ``retrain`` and within 2 points of its test accuracy. Both rules: the default
    plateau of Δ / update, and the paper's power law (ε 0.08: on 12 blocks Δ falls nearly linearly, fitted
    slope 0.04–0.12 by block 11; the default 0.02 is for longer runs)."""
    run = digits_global_blocks_run
    forget = _block_ids(run, 1)  # block 2 of 12
    model, record = unlearn(run.model, digits, ForgetRequest.for_ids(forget), method="deepobliviate",
                            params=rule, run_path=run.run.path)
    info = record["info"]
    t = info["stopped_at"]
    assert info["stitched"] and t < 12 and info["stitch_checks"][-1]["accepted"], info["decisions"]
    assert info["cost"]["steps"] < info["cost"]["retrain_steps"]
    theta_b, theta_t = load_block_snapshot(run.run.path, 12)["model"], load_block_snapshot(run.run.path, t)["model"]
    prefix = _retrained_prefix(run, digits, forget, t)
    served = dict(model.named_parameters())
    for name, q in served.items():
        assert torch.allclose(q.detach(), prefix[name] + theta_b[name] - theta_t[name], atol=1e-5), name
    assert max((served[n].detach() - theta_b[n]).abs().max().item() for n in served) > 1e-3  # not θ_B
    exact = train(digits, TrainConfig.from_dict(run.record["config"]), exclude_ids=forget).model
    assert accuracy(model, digits.test) >= accuracy(exact, digits.test) - 0.02


def test_deepobliviate_gives_up_early_and_costs_no_more_than_retrain(digits, digits_global_blocks_run, monkeypatch):
    """Where no stitch holds (every stitch broken), the checks stop once their budget (5 % of retraining) is
    spent, retraining runs to the end (exact) and the whole costs at most retraining plus that share."""
    import obliviate.methods.deepobliviate as do

    real = do.stitch

    def broken(model, *a, **k):
        real(model, *a, **k)
        with torch.no_grad():
            model.head.weight.mul_(-1.0)

    monkeypatch.setattr(do, "stitch", broken)
    monkeypatch.setattr(do, "decide_stop", lambda p, deltas, ratios: {"stop": True, "reason": "test"})
    run = digits_global_blocks_run
    model, record = unlearn(run.model, digits, ForgetRequest.for_ids(_block_ids(run, 1)), method="deepobliviate",
                            run_path=run.run.path)
    info, cost = record["info"], record["info"]["cost"]
    assert not info["stitched"] and info["exact_retraining"] and info["retrained_blocks"] == list(range(2, 13))
    assert 1 <= len(info["stitch_checks"]) <= 4 and not any(c["accepted"] for c in info["stitch_checks"])
    assert any("budget spent" in d["reason"] for d in info["decisions"])
    assert cost["check_samples"] <= cost["check_budget"] and cost["steps"] <= cost["retrain_steps"]
    batch = TrainConfig.from_dict(run.record["config"]).batch_size
    assert cost["steps"] * batch * 3 + cost["check_samples"] <= 1.05 * cost["retrain_steps"] * batch * 3


def test_stitch_arithmetic_returns_the_served_model_when_nothing_changed(digits, digits_blocks_run):
    """θ'_t = θ_t ⇒ θ'_t + (θ_B − θ_t) = θ_B on every parameter."""
    path = digits_blocks_run.run.path
    theta_t, theta_b = load_block_snapshot(path, 4)["model"], load_block_snapshot(path, 8)["model"]
    model = copy.deepcopy(digits_blocks_run.model)
    model.load_state_dict(theta_t)
    stitch(model, theta_b, theta_t, digits.train)
    for name, q in model.named_parameters():
        assert torch.allclose(q.detach(), theta_b[name].float(), atol=1e-6), name


def test_unsir_notebook_preset_draws_noise_where_the_notebook_did():
    """The notebook normalised its data outside the network, so its N(0, 1) noise lives in normalised space."""
    from obliviate.methods import get_method, resolve_params

    p = resolve_params(get_method("unsir"), {"preset": "notebook"})
    assert p.noise_space == "normalised" and p.noise_train_mode and not p.recalibrate_bn


def test_deepobliviate_removes_a_backdoor_planted_in_one_block(digits, tmp_path):
    """DeepObliviate's own verification: poison samples of one block with a trigger; after deleting them
    the attack success rate falls to the level of a model retrained without them."""
    from obliviate.metrics import TriggerPatch, backdoor_asr, plant_backdoor

    cfg = TrainConfig(model="cnn", blocks=8, epochs_per_block=4, batch_size=32, lr=0.05, schedule="cosine", seed=0)
    ids = digits.train.ids.numpy()
    candidates = ids[digits.train.y.numpy() != 0]
    poison = np.sort(np.random.default_rng(0).choice(candidates, 40, replace=False))
    bundle = plant_backdoor(digits, poison, target=0, patch=TriggerPatch(size=2, corner="br"))
    patch = bundle.spec["backdoor"]["patch"]
    run = train(bundle, cfg, tmp_path / "poisoned")
    asr_before = backdoor_asr(run.model, bundle.test, 0, patch)
    model, record = unlearn(run.model, bundle, ForgetRequest.for_ids(poison.tolist()), method="deepobliviate",
                            run_path=run.run.path)
    retrained = train(bundle, cfg, exclude_ids=poison).model
    asr_after = backdoor_asr(model, bundle.test, 0, patch)
    asr_retrained = backdoor_asr(retrained, bundle.test, 0, patch)
    run_ids, run_blocks = load_block_assignment(run.run.path)  # relabelled to 0, the poison spreads over blocks
    assert record["info"]["first_block"] == int(run_blocks[np.isin(run_ids, poison)].min()) + 1
    assert asr_before > asr_retrained + 0.3, (asr_before, asr_retrained)  # the backdoor took
    assert abs(asr_after - asr_retrained) <= 0.1, (asr_before, asr_after, asr_retrained, record["info"]["note"])


def test_deepobliviate_measures_delta_and_its_ratio_on_the_retrained_trajectory(digits, digits_global_blocks_run):
    """Δ_j and r_j = Δ_j / ‖θ'_j − θ'_{j−1}‖ for the second retrained block, rebuilt independently. (The method
    once kept θ'_{j−1} as a view of the live weights, so from the second block on Δ was just the original's
    update and r was infinite.)"""
    run = digits_global_blocks_run
    forget = _block_ids(run, 1)  # block 2 of 12: Δ_3 compares block 3's updates
    _, record = unlearn(run.model, digits, ForgetRequest.for_ids(forget), method="deepobliviate",
                        params={"epsilon": 0.0}, run_path=run.run.path)
    p2, p3 = _retrained_prefix(run, digits, forget, 2), _retrained_prefix(run, digits, forget, 3)
    o2, o3 = load_block_snapshot(run.run.path, 2)["model"], load_block_snapshot(run.run.path, 3)["model"]
    n = sum(q.numel() for q in p2.values())
    delta = sum(((o3[k] - o2[k]) - (p3[k] - p2[k])).abs().sum().item() for k in p2) / n
    update = sum((p3[k] - p2[k]).abs().sum().item() for k in p2) / n
    info = record["info"]
    assert info["deltas"][1] == pytest.approx(delta, rel=1e-4)
    assert info["delta_ratios"][1] == pytest.approx(delta / update, rel=1e-4) and 0 < info["delta_ratios"][1] < 10
