"""Metrics on constructed cases with known answers (small digits slice, CPU, small models)."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from obliviate.data import ForgetRequest, load_data
from obliviate.data.dataset import to_float
from obliviate.errors import ObliviateError
from obliviate.methods import unlearn
from obliviate.metrics import (
    CORE_KEYS,
    TriggerPatch,
    activation_distance,
    apply_trigger,
    backdoor_asr,
    evaluate,
    gradcam,
    js_divergence,
    layer_distances,
    mean_js,
    mia_entropy,
    mia_loss_lr,
    mia_loss_threshold,
    mia_svc_efficacy,
    plant_backdoor,
    prediction_distribution,
    random_init_like,
    relearn_time,
    weight_distance,
    zrf_score,
)
from obliviate.metrics.mia import MIN_PER_SIDE
from obliviate.metrics.relearn import RelearnResult, anamnesis_index
from obliviate.training import TrainConfig, train

# Adam at a constant rate and no weight decay drives the training loss to ~0: a memorising model.
MEMORISE = TrainConfig(model="mlp", epochs=30, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0,
                       schedule="constant", seed=0)
CNN = TrainConfig(model="cnn", epochs=20, batch_size=64, optimizer="adam", lr=3e-3, weight_decay=0.0,
                  schedule="constant", seed=0, model_options={"width": 8})


@pytest.fixture(scope="module")
def small():
    """200 digits training images (20 per class) and the 359-image test split: easy to memorise."""
    return load_data("digits", train_per_class=20, val_fraction=0.0)


@pytest.fixture(scope="module")
def half():
    return ForgetRequest.for_fraction(0.5, seed=0)


@pytest.fixture(scope="module")
def sets(small, half):
    split = half.resolve(small.train, small.num_classes)
    return {"forget": split.forget(small.train), "retain": split.retain(small.train),
            "ids": split.forget_ids(small.train)}


@pytest.fixture(scope="module")
def memorised(small):
    return train(small, MEMORISE)


@pytest.fixture(scope="module")
def retrained(small, sets):
    return train(small, MEMORISE, exclude_ids=sets["ids"], kind="retrain")


@pytest.fixture(scope="module")
def retrained_seed1(small, sets):
    """Another model that never saw D_f (other seed): should score like ``retrained``."""
    return train(small, TrainConfig(**{**MEMORISE.to_dict(), "seed": 1}), exclude_ids=sets["ids"], kind="retrain")


# ----------------------------------------------------------------------------------- JS / divergences
def test_js_of_equal_distributions_is_zero_and_of_disjoint_one_hots_is_one():
    p = torch.softmax(torch.randn(6, 10, generator=torch.Generator().manual_seed(0)), 1)
    assert torch.allclose(js_divergence(p, p), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    a, b = torch.eye(4)[[0, 1, 2]], torch.eye(4)[[1, 2, 3]]
    assert torch.allclose(js_divergence(a, b), torch.ones(3, dtype=torch.float64))
    # textbook value, by hand: m = [.75, .25]; ½·KL(p‖m) + ½·KL(q‖m) in bits
    p1, q1 = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
    expect = 0.5 * (1 * math.log2(1 / 0.75)) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25))
    assert js_divergence(p1, q1).item() == pytest.approx(expect, abs=1e-12)
    assert js_divergence(p1, q1).item() == pytest.approx(js_divergence(q1, p1).item())  # symmetric


def test_output_distances_of_a_model_to_itself_are_zero(memorised, retrained, sets):
    f = sets["forget"]
    assert mean_js(retrained.model, copy.deepcopy(retrained.model), f) == pytest.approx(0.0, abs=1e-9)
    assert activation_distance(retrained.model, retrained.model, f) == pytest.approx(0.0, abs=1e-9)
    assert mean_js(memorised.model, retrained.model, f) > 0.0
    rand = random_init_like(memorised.model, seed=0)
    # ZRF of the random model against itself is exactly 1; a model that knows D_f scores lower
    assert zrf_score(rand, f, reference=rand) == pytest.approx(1.0)
    assert zrf_score(memorised.model, f, reference=rand) < 0.8
    # the random model is seeded and leaves the global RNG alone
    state = torch.get_rng_state()
    again = random_init_like(memorised.model, seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(rand.parameters(), again.parameters()))


# ----------------------------------------------------------------------------------- membership inference
def test_loss_attack_catches_a_memorising_model_but_not_one_that_never_saw_the_data(memorised, retrained, sets,
                                                                                   small):
    f = sets["forget"]
    caught = np.mean([mia_loss_lr(memorised.model, f, small.test, seed=s) for s in range(3)])
    blind = np.mean([mia_loss_lr(retrained.model, f, small.test, seed=s) for s in range(3)])
    assert memorised.record["accuracy"]["train"] == 1.0
    assert caught > 0.56, caught
    assert abs(blind - 0.5) < 0.08, blind
    assert caught - blind > 0.08
    # the other attacks see the same thing, each in its own direction
    r = sets["retain"]
    assert mia_loss_threshold(memorised.model, r, f) > mia_loss_threshold(retrained.model, r, f) + 0.15
    assert mia_entropy(memorised.model, r, small.test, f) > mia_entropy(retrained.model, r, small.test, f) + 0.15
    # MIA-efficacy: share of D_f called non-member, low for the model that trained on it
    assert mia_svc_efficacy(memorised.model, r, small.test, f) < mia_svc_efficacy(retrained.model, r, small.test, f)


def test_attacks_are_seeded_and_undefined_on_tiny_sets(memorised, sets, small):
    f = sets["forget"]
    assert mia_loss_lr(memorised.model, f, small.test, seed=3) == mia_loss_lr(memorised.model, f, small.test, seed=3)
    assert math.isnan(mia_loss_lr(memorised.model, f.subset(np.arange(3)), small.test))
    assert math.isnan(mia_loss_lr(memorised.model, f, None))


@pytest.mark.parametrize("n", [4, 5, 6])
def test_attacks_on_the_smallest_sets_give_a_number_or_nan_never_a_crash(memorised, sets, small, n):
    """5 a side is the documented minimum: the loss attack's 90/10 split then needs a test sample of each
    side (scikit-learn refused a 1-sample split: ValueError); below the minimum every attack is NaN."""
    f, r, u = (d.subset(np.arange(n)) for d in (sets["forget"], sets["retain"], small.test))
    scores = {"lr": mia_loss_lr(memorised.model, f, u), "entropy": mia_entropy(memorised.model, r, u, f),
              "svc": mia_svc_efficacy(memorised.model, r, u, f), "threshold": mia_loss_threshold(memorised.model, r, f)}
    if n < MIN_PER_SIDE:
        assert all(math.isnan(v) for v in scores.values()), scores
    else:
        assert all(0.0 <= v <= 1.0 for v in scores.values()), scores


def test_loss_attack_keeps_the_kits_split_on_ordinary_sets(memorised, sets, small):
    """The tiny-set guard must not change the attack where it was defined: the kit's 10 % test share."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    from obliviate.metrics.outputs import per_sample_loss, subsample

    f, u = sets["forget"], small.test
    rng = np.random.default_rng(0)
    n = min(len(f), len(u))
    f_loss = per_sample_loss(memorised.model, subsample(f, n, rng))  # mia_loss_lr's draws, in its order
    u_loss = per_sample_loss(memorised.model, subsample(u, n, rng))
    x = np.concatenate([u_loss, f_loss]).reshape(-1, 1)
    y = np.r_[np.zeros(n), np.ones(n)]
    kit = np.mean(cross_val_score(LogisticRegression(), x, y, cv=StratifiedShuffleSplit(n_splits=10, random_state=0),
                                  scoring="accuracy"))
    assert mia_loss_lr(memorised.model, f, u, seed=0) == pytest.approx(kit)


def test_comparisons_have_known_values_when_the_unlearned_model_is_the_original(small, half, memorised, retrained,
                                                                                sets):
    """Constructed case: "unlearning" that changed nothing. Every unlearned-model figure then equals θ₀'s,
    every gap is θ₀'s distance to the retrained model (large for a memorising θ₀), the weight distance to
    θ₀ is 0 and the distances to the retrained model are the ones computed directly."""
    m = evaluate(memorised.model, copy.deepcopy(memorised.model), small, half, retrained=retrained.model,
                 relearn=False)
    attacks = ("mia_loss_lr", "mia_entropy", "mia_svc_efficacy", "mia_loss_threshold")
    for key in attacks + ("forget_acc", "retain_acc", "test_acc", "zrf"):
        assert m[key] == m[key + "_original"], key
    for key in attacks:
        assert m[key + "_gap"] == pytest.approx(abs(m[key + "_original"] - m[key + "_retrained"]), abs=1e-12), key
    assert m["mia_loss_threshold_gap"] > 0.15 and m["mia_entropy_gap"] > 0.15  # θ₀ memorised D_f; retrained did not
    f = sets["forget"]
    assert m["weight_distance"] == 0.0
    assert m["weight_distance_to_retrained"] == pytest.approx(weight_distance(memorised.model, retrained.model))
    assert m["weight_distance_to_retrained"] == m["weight_distance_retrained_to_original"] > 0
    assert m["js_to_retrained"] == pytest.approx(mean_js(memorised.model, retrained.model, f))
    assert m["activation_distance"] == pytest.approx(activation_distance(memorised.model, retrained.model, f))
    assert m["js_to_retrained"] > 0 and m["activation_distance"] > 0


def test_a_model_that_never_saw_the_forget_set_scores_like_the_retrained_model(
        small, half, memorised, retrained, retrained_seed1):
    """An independent model (another seed) that never saw D_f: close to the retrained one, closer than θ₀."""
    other = evaluate(memorised.model, retrained_seed1.model, small, half, retrained=retrained.model, relearn=False)
    assert other["weight_distance_to_retrained"] > 0
    for key in ("mia_loss_lr", "mia_entropy", "mia_svc_efficacy", "mia_loss_threshold"):
        gap_original = abs(other[key + "_original"] - other[key + "_retrained"])
        assert other[key + "_gap"] == pytest.approx(abs(other[key] - other[key + "_retrained"]), abs=1e-12), key
        # another model that never saw D_f is close to the retrained one, and closer than θ₀ is
        assert other[key + "_gap"] < 0.1 and other[key + "_gap"] < gap_original, key
    assert other["js_to_retrained"] < mean_js(memorised.model, retrained.model, small.train)


# ----------------------------------------------------------------------------------- relearn
def test_relearn_is_immediate_for_the_original_and_slow_for_a_random_model(memorised, sets):
    f = sets["forget"]
    res = relearn_time(memorised.model, f, memorised.model)
    assert res.steps == 0 and not res.capped
    rand = random_init_like(memorised.model, seed=0)
    slow = relearn_time(rand, f, memorised.model, max_steps=40)
    assert slow.capped or slow.steps >= 10, slow
    assert slow.steps > res.steps
    # the model handed in is not modified
    assert all(torch.equal(a, b) for a, b in zip(rand.parameters(), random_init_like(memorised.model, 0).parameters()))
    capped = relearn_time(rand, f, 1.0 + 0.1, max_steps=3)  # an unreachable goal hits the cap
    assert capped.capped and capped.steps == 3


def test_anamnesis_index_is_unlearned_steps_over_retrained_steps():
    fast, slow = RelearnResult(10, False, 0.9, 0.95), RelearnResult(40, False, 0.9, 0.92)
    assert anamnesis_index(fast, slow) == 0.25  # relearns 4x faster than a model that never saw D_f: hidden
    assert anamnesis_index(slow, fast) == 4.0
    assert math.isnan(anamnesis_index(fast, RelearnResult(0, False, 0.9, 0.95)))  # undefined, not infinite


# ----------------------------------------------------------------------------------- weights, predictions
def test_weight_distance_is_zero_to_itself_and_positive_to_another_model(memorised, retrained):
    d = layer_distances(memorised.model, copy.deepcopy(memorised.model))
    assert set(d) == {n for n, _ in memorised.model.named_parameters()}
    assert all(v == 0.0 for v in d.values())
    d2 = layer_distances(memorised.model, retrained.model)
    assert all(v > 0 for v in d2.values())
    total = math.sqrt(sum(v * v for v in d2.values()))
    assert weight_distance(memorised.model, retrained.model) == pytest.approx(total)


def test_weight_distance_refuses_different_architectures(small, memorised):
    from obliviate.models import model_for

    with pytest.raises(ObliviateError, match="architecture"):
        layer_distances(memorised.model, model_for("mlp", small, hidden=32))


def test_prediction_histogram_counts_every_forget_sample(memorised, sets, small):
    f = sets["forget"]
    d = prediction_distribution(memorised.model, f, small.num_classes, forgotten_classes=(3,))
    assert sum(d.counts) == len(f)
    assert sum(d.fractions) == pytest.approx(1.0)
    assert 0.0 <= d.entropy_retained <= 1.0 and 0.0 <= d.max_share_retained <= 1.0
    assert d.forgotten_share == pytest.approx(d.counts[3] / len(f))
    # a memorising model classifies D_f (all classes) correctly: spread close to even
    assert d.entropy_retained > 0.9


# ----------------------------------------------------------------------------------- backdoor
@pytest.fixture(scope="module")
def poisoned(small):
    """30 training images of classes 1..9 carry a 2x2 white corner and label 0."""
    rng = np.random.default_rng(0)
    ids = small.train.ids.numpy()[small.train.y.numpy() != 0]
    poison = np.sort(rng.choice(ids, 30, replace=False))
    bundle = plant_backdoor(small, poison, target=0, patch=TriggerPatch(size=2, corner="br"))
    return bundle, poison


def test_plant_backdoor_patches_and_relabels_only_the_chosen_samples(small, poisoned):
    bundle, poison = poisoned
    hit = torch.isin(bundle.train.ids, torch.as_tensor(poison))
    assert torch.equal(bundle.train.ids, small.train.ids)
    assert (bundle.train.y[hit] == 0).all() and torch.equal(bundle.train.y[~hit], small.train.y[~hit])
    assert (bundle.train.x[hit][:, :, -2:, -2:] == 255).all()
    assert torch.equal(bundle.train.x[~hit], small.train.x[~hit])
    assert torch.equal(bundle.test.x, small.test.x)  # the test split stays clean
    assert bundle.source_hash != small.source_hash and bundle.spec["backdoor"]["target"] == 0
    x = apply_trigger(small.test.x[:2], TriggerPatch(size=3, corner="tl"))
    assert (x[:, :, :3, :3] == 255).all() and torch.equal(x[:, :, 3:, 3:], small.test.x[:2, :, 3:, 3:])
    with pytest.raises(ObliviateError, match="not in the training split"):
        plant_backdoor(small, [10**9], target=0)


def test_backdoor_asr_high_when_poisoned_and_back_to_clean_after_retraining_without_poison(poisoned, memorised):
    bundle, poison = poisoned
    bad = train(bundle, MEMORISE)
    patch = bundle.spec["backdoor"]["patch"]
    asr_bad = backdoor_asr(bad.model, bundle.test, 0, patch)
    asr_clean = backdoor_asr(memorised.model, bundle.test, 0, patch)
    cured = train(bundle, MEMORISE, exclude_ids=poison, kind="retrain")
    asr_cured = backdoor_asr(cured.model, bundle.test, 0, patch)
    assert asr_bad > 0.7, asr_bad
    assert asr_clean < 0.15, asr_clean
    assert asr_cured < 0.15 and abs(asr_cured - asr_clean) < 0.1, (asr_cured, asr_clean)
    # evaluate() reports it for data made with plant_backdoor, for every model it is given
    m = evaluate(bad.model, cured.model, bundle, ForgetRequest.for_ids(poison), retrained=cured.model, relearn=False)
    assert m["backdoor_asr"] == pytest.approx(asr_cured) and m["backdoor_asr_original"] == pytest.approx(asr_bad)


# ----------------------------------------------------------------------------------- GradCAM and evaluate()
@pytest.fixture(scope="module")
def cnn_runs(small):
    """A small CNN, the same recipe retrained without class 3, and a fine-tune unlearning of class 3."""
    request = ForgetRequest.for_classes(3)
    split = request.resolve(small.train, small.num_classes)
    original = train(small, CNN)
    retrained = train(small, CNN, exclude_ids=split.forget_ids(small.train), kind="retrain")
    unlearned, record = unlearn(original.model, small, request, "finetune", params={"epochs": 3, "lr": 0.01},
                                device="cpu")
    return request, original, retrained, unlearned, record


def test_gradcam_maps_have_the_input_size_and_finite_values(cnn_runs, small):
    _, original, *_ = cnn_runs
    x, y = small.test.x[:5], small.test.y[:5]
    before = [None if p.grad is None else p.grad.clone() for p in original.model.parameters()]
    maps = gradcam(original.model, x, y)
    assert maps.shape == (5, 8, 8)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert (maps.amax(dim=(1, 2)) > 0).any()
    after = [p.grad for p in original.model.parameters()]  # gradients of the parameters untouched
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before, after))
    from obliviate.models import model_for

    with pytest.raises(ObliviateError, match="GradCAM"):
        gradcam(model_for("mlp", small), x)  # no convolutional layer to explain


class _TwoChannelCam(torch.nn.Module):
    """Constructed so GradCAM has a known answer: channel 0 is the image x, channel 1 is 1 − x; class 0's
    logit is mean(ch0) − mean(ch1), class 1's the opposite. On a black-and-white x, class 0's map is
    ReLU(x − (1 − x)) ∝ x and class 1's ∝ 1 − x; a map from activations alone (no gradients) or from
    |gradients| would be flat, x + (1 − x) = 1."""

    cam_layer = "conv"

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.head = torch.nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))

    def forward(self, x):
        return self.head(self.conv(x).mean(dim=(2, 3)))


def test_gradcam_weights_channels_by_the_gradient_of_the_explained_class():
    x = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    x[..., :, :3] = 255  # left half white
    model = _TwoChannelCam()
    left = torch.zeros(6, 6)
    left[:, :3] = 1.0
    for cls, expect in ((0, left), (1, 1.0 - left)):
        maps = gradcam(model, x.expand(2, -1, -1, -1), torch.tensor([cls, cls]))
        torch.testing.assert_close(maps, expect.expand(2, 6, 6), atol=1e-6, rtol=0)
    # default label: the predicted class (0 for a mostly white image, 1 for a mostly black one)
    mostly_black = torch.zeros(1, 1, 6, 6, dtype=torch.uint8)
    mostly_black[..., :2, :2] = 255
    torch.testing.assert_close(gradcam(model, mostly_black)[0], 1.0 - to_float(mostly_black)[0, 0], atol=1e-6, rtol=0)


def test_evaluate_with_the_original_as_unlearned_gives_ain_zero(cnn_runs, small):
    """Nothing forgotten: relearning takes 0 steps, so AIN is exactly 0 (an inverted ratio would be undefined)."""
    request, original, retrained, *_ = cnn_runs
    m = evaluate(original.model, copy.deepcopy(original.model), small, request, retrained=retrained.model,
                 figures=False)
    assert m["relearn_steps"] == 0 and m["relearn_steps_retrained"] > 0
    assert m["relearn_ain"] == 0.0


def test_evaluate_writes_metrics_json_with_the_documented_keys_and_figures(cnn_runs, small, tmp_path):
    request, original, retrained, unlearned, record = cnn_runs
    given = [{k: v.clone() for k, v in mod.state_dict().items()}
             for mod in (original.model, unlearned, retrained.model)]
    m = evaluate(original.model, unlearned, small, request, retrained=retrained.model, unlearn_record=record,
                 retrain_record=retrained.record, out=tmp_path, seed=0)
    for before, mod in zip(given, (original.model, unlearned, retrained.model)):  # evaluate changes no model
        assert all(torch.equal(before[k], v) for k, v in mod.state_dict().items())
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    missing = [k for k in CORE_KEYS if k not in on_disk]
    assert not missing, missing
    rates = ["forget_acc", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc", "mia_loss_lr",
             "mia_entropy", "mia_svc_efficacy", "mia_loss_threshold", "js_to_retrained", "zrf",
             "pred_entropy_retained", "pred_max_share_retained", "pred_forgotten_share"]
    for key in rates:
        assert 0.0 <= on_disk[key] <= 1.0, key
    assert sum(on_disk["pred_counts"]) == on_disk["forget_size"] == len(request.resolve(small.train, 10).forget_pos)
    assert on_disk["forget_acc_original"] > 0.9 and on_disk["forget_acc_retrained"] == 0.0
    assert on_disk["test_forget_acc_retrained"] == 0.0
    assert on_disk["seconds"] == pytest.approx(record["seconds"])
    assert on_disk["speedup_vs_retrain"] == pytest.approx(retrained.record["seconds"] / record["seconds"])
    assert on_disk["peak_gpu_memory_mb"] is None  # CPU run: not measured, not made up
    assert isinstance(on_disk["relearn_steps"], int) and isinstance(on_disk["relearn_capped"], bool)
    # class 3 must be learnt from scratch by the retrained model; AIN = unlearned steps / retrained steps
    assert on_disk["relearn_steps_retrained"] > 0 and not on_disk["relearn_retrained_capped"]
    assert on_disk["relearn_ain"] == pytest.approx(on_disk["relearn_steps"] / on_disk["relearn_steps_retrained"])
    assert set(on_disk["figures"]) == {"weight_distance.png", "forget_predictions.png", "gradcam.png"}
    for name in on_disk["figures"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_evaluate_without_retrained_model_leaves_comparisons_empty(cnn_runs, small):
    request, original, _, unlearned, _ = cnn_runs
    m = evaluate(original.model, unlearned, small, request, relearn=False)
    for key in ("mia_loss_lr_gap", "js_to_retrained", "activation_distance", "weight_distance_to_retrained",
                "relearn_ain", "speedup_vs_retrain", "seconds"):
        assert m[key] is None, key
    assert m["weight_distance"] > 0


def test_evaluate_refuses_models_of_different_architectures(cnn_runs, small, memorised):
    request, original, *_ = cnn_runs
    with pytest.raises(ObliviateError, match="architecture"):
        evaluate(original.model, memorised.model, small, request, relearn=False)
