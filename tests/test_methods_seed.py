"""The seed methods on real data: UNSIR and FCALB forget classes without seeing them, DeepObliviate
deletes samples by retraining a suffix of blocks (and equals exact retraining when it never stops)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIGITS_RECIPE

from obliviate import ForgetRequest, ObliviateError, unlearn
from obliviate.api import load_checkpoint
from obliviate.data import load_data
from obliviate.data.dataset import ArrayData
from obliviate.data.pipeline import predict
from obliviate.errors import AccessError
from obliviate.methods import METHODS, get_method
from obliviate.methods.base import RETAIN_SUBSET, Method, UnlearnContext, register
from obliviate.methods.common import error_maximising_noise
from obliviate.metrics.accuracy import accuracy
from obliviate.training import TrainConfig, load_block_assignment, load_block_snapshot, train

RETAIN_MARGIN = 0.05  # retain accuracy may fall at most 5 points below the original's
FORGET_MAX = 0.05


def _accs(model, data, request):
    split = request.resolve(data.train, data.num_classes)
    test_forget, test_retain = split.test_split(data.test)
    return {"forget": accuracy(model, split.forget(data.train)), "retain": accuracy(model, split.retain(data.train)),
            "test_forget": accuracy(model, test_forget), "test_retain": accuracy(model, test_retain)}


def _check_forgot(original, unlearned, data, request):
    before, after = _accs(original, data, request), _accs(unlearned, data, request)
    assert after["forget"] <= FORGET_MAX and after["test_forget"] <= FORGET_MAX, (before, after)
    assert after["retain"] >= before["retain"] - RETAIN_MARGIN, (before, after)
    assert after["test_retain"] >= before["test_retain"] - RETAIN_MARGIN, (before, after)


@pytest.fixture(scope="module")
def fmnist_model(fmnist_run):
    return fmnist_run.model


# ---------------------------------------------------------------- UNSIR / FCALB: forgetting a class
@pytest.mark.parametrize("method", ["unsir", "fcalb"])
def test_forgets_one_class_on_digits(method, digits, digits_model):
    request = ForgetRequest.for_classes(3)
    model, record = unlearn(digits_model, digits, request, method=method)
    _check_forgot(digits_model, model, digits, request)
    assert record["zero_glance"] is True
    assert record["info"]["noise"]["labels"] == [3]  # the noise block is labelled with its class, not 0


@pytest.mark.parametrize("method", ["unsir", "fcalb"])
def test_forgets_two_classes_in_one_pass(method, digits, digits_model):
    request = ForgetRequest.for_classes(1, 7)
    model, record = unlearn(digits_model, digits, request, method=method)
    _check_forgot(digits_model, model, digits, request)
    assert record["info"]["noise"]["labels"] == [1, 7]


def test_unsir_forgets_on_fashion_mnist(fmnist, fmnist_model):
    request = ForgetRequest.for_classes(3)
    model, _ = unlearn(fmnist_model, fmnist, request, method="unsir")
    _check_forgot(fmnist_model, model, fmnist, request)


def test_unsir_paper_preset_is_one_param_away(digits, digits_model):
    _, record = unlearn(digits_model, digits, ForgetRequest.for_classes(3), method="unsir",
                        params={"preset": "paper"})
    assert record["params"]["impair_lr"] == 0.02 and record["params"]["repair_lr"] == 0.01


@pytest.mark.parametrize("forget_class", [3, 8])
def test_unsir_noise_does_the_forgetting_when_d_sub_is_small(forget_class, digits, digits_model, monkeypatch):
    """With D_sub well below the class size (40 of ~137 per class) and a gentle impair rate, fine-tuning
    on D_sub alone leaves the class partly in; the error-maximising noise is what removes it.

    Measured (3 seeds, mean p(class | forget sample)): class 3 0.001 with noise vs 0.14 without;
    class 8 0.06 vs 0.34. At the default impair rate (1e-2) D_sub alone forgets as well (0.00
    either way, also on the Fashion-MNIST slice): there the noise is not what forgets. The repair's
    distillation from the masked original forgets on its own too (it pulls p(c) to 0 on every D_sub input:
    0.09 without noise here), so it is off to isolate the noise; so is ``repair_min_steps`` (48 steps of
    cross-entropy on D_sub forget the class on their own: 0.04 without noise, against 8 steps' 0.14+).
    """
    import obliviate.methods.unsir as unsir_mod

    request = ForgetRequest.for_classes(forget_class, subset_per_class=40)
    forget = request.resolve(digits.train, 10).forget(digits.train)
    params = {"noise_n": 40, "impair_lr": 3e-3, "repair_distill": 0.0, "repair_min_steps": 0}

    def mean_confidence() -> float:
        conf = []
        for seed in (0, 1, 2):
            model, record = unlearn(digits_model, digits, request, "unsir", params=params, seed=seed)
            assert record["touched"] == {"retain_subset": 9 * 40}  # D_sub, not D_r
            conf.append(torch.softmax(predict(model, forget.x).float(), 1)[:, forget_class].mean().item())
        return float(np.mean(conf))

    with_noise = mean_confidence()
    real = unsir_mod.noise_for
    monkeypatch.setattr(unsir_mod, "noise_for", lambda ctx, p, *a: real(ctx, p, *a).subset(torch.zeros(0).long()))
    without = mean_confidence()
    # class 8 with 2 torch threads, 2026-12-04: 0.105 with noise vs 0.39 without (0.06 with one thread; the
    # commit before this session gives the same 0.105, so thread-count numerics, not a regression)
    assert with_noise < 0.15, with_noise
    assert without > with_noise + 0.1, (with_noise, without)


def test_noise_is_labelled_by_class_and_maximises_error(digits_model):
    model = digits_model.eval()
    g = torch.Generator().manual_seed(0)
    noise = error_maximising_noise(model, [2, 5], (1, 8, 8), n=32, steps=40, generator=g)
    assert noise.x.shape == (64, 1, 8, 8) and noise.x.dtype == torch.float32
    assert noise.y.tolist() == [2] * 32 + [5] * 32
    assert (noise.ids < 0).all()  # can never collide with a real sample id
    with torch.no_grad():
        pred = model(noise.x).argmax(1)
    assert (pred != noise.y).float().mean() > 0.9  # the model is sure these are not their label


# ---------------------------------------------------------------- zero glance
@pytest.mark.parametrize("method", ["unsir", "fcalb"])
def test_zero_glance_never_sees_a_forget_sample(method, digits, digits_model, monkeypatch):
    request = ForgetRequest.for_classes(4)
    forget_ids = set(request.resolve(digits.train, 10).forget_ids(digits.train).tolist())
    seen: list[torch.Tensor] = []
    import obliviate.methods.fcalb as fcalb_mod
    import obliviate.methods.unsir as unsir_mod

    for mod in (unsir_mod, fcalb_mod):
        real = mod.fine_tune

        def spy(model, data, *a, _real=real, **kw):
            seen.append(data.ids.cpu())
            return _real(model, data, *a, **kw)

        monkeypatch.setattr(mod, "fine_tune", spy)

    def no_forget(self):
        raise AssertionError("a zero-glance method read the forget set")

    monkeypatch.setattr(UnlearnContext, "forget", property(no_forget))
    _, record = unlearn(digits_model, digits, request, method=method)
    assert seen, "the spy saw no training data"
    assert not forget_ids & set(torch.cat(seen).tolist())
    assert record["touched"].keys() == {"retain_subset"}
    assert record["declared"] == ["retain_subset"]


def test_zero_glance_context_refuses_the_forget_set(digits, digits_model):
    """Even a context that holds D_f (a builder bug) refuses it to a method that did not declare it."""
    split = ForgetRequest.for_classes(1).resolve(digits.train, 10)
    held = {"forget": split.forget(digits.train), "forget_ids": split.forget_ids(digits.train),
            "retain_subset": split.retain_subset(digits.train), "snapshots": Path(".")}
    ctx = UnlearnContext(model=digits_model, original=digits_model, request=ForgetRequest.for_classes(1),
                         forget_classes=(1,), num_classes=10, device=torch.device("cpu"), seed=0,
                         declared=get_method("fcalb").needs, _data=held)
    for kind in ("forget", "forget_ids", "snapshots", "retain"):
        with pytest.raises(AccessError, match=kind):
            getattr(ctx, kind)
    assert len(ctx.retain_subset) == len(split.subset_pos)
    assert ctx.touched == {"retain_subset": len(split.subset_pos)}


@contextmanager
def _registered(cls):
    """Register a test method for the duration of a test, then take it out of the registry again."""
    register(cls)
    try:
        yield cls.name
    finally:
        METHODS.pop(cls.name, None)


class _Probe(Method):
    """A hostile zero-glance method: it tries every door the context offers towards the forget set."""

    name = "test-hostile-probe"
    needs = frozenset({RETAIN_SUBSET})
    zero_glance = True
    request_kinds = frozenset({"class"})
    found: dict = {}

    @dataclass
    class Params:
        pass

    def run(self, ctx, p):
        found = {"ids": [], "refused": [], "loaded": [], "strings": []}
        reached = []
        for kind in ("forget", "forget_ids", "retain", "snapshots", "run_path", "dataset"):
            try:
                reached.append(getattr(ctx, kind))
            except (AccessError, AttributeError):
                found["refused"].append(kind)
        found["ids"] += [i for v in reached for i in _ids_in(v)]
        found["ids"] += [i for v in vars(ctx).values() for i in _ids_in(v)]  # bypass the properties
        found["ids"] += [i for v in ctx._data.values() for i in _ids_in(v)]
        found["ids"] += _ids_in(ctx.retain_subset)
        # every string and path the context holds, as a data set to reload or a run directory to open
        for obj in filter(None, (ctx, ctx.request, ctx.model.spec, ctx.train_config)):
            reached += vars(obj).values()
        found["strings"] = [str(v) for v in reached if isinstance(v, (str, Path))]
        for text in found["strings"]:
            for opener in (lambda t: load_data(t), lambda t: load_checkpoint(t).data):
                try:
                    found["loaded"].append(opener(text))
                except Exception:  # noqa: BLE001 - the probe tries everything; failing is the point
                    pass
        for bundle in found["loaded"]:
            found["ids"] += bundle.train.ids.tolist()
        _Probe.found = found
        return ctx.model


def _ids_in(value) -> list[int]:
    if isinstance(value, ArrayData):
        return value.ids.tolist()
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return value.tolist()
    if isinstance(value, Path) and value.exists():
        return [-1]  # a run directory: its run.json names the data set
    return []


def test_hostile_zero_glance_probe_cannot_reach_a_forget_sample(digits, digits_run):
    """Given everything the harness passes (recipe, run directory), a zero-glance method still gets
    only D_sub and the classes: no data spec to reload, no forget ids, no run directory."""
    request = ForgetRequest.for_classes(4, subset_per_class=20)
    forget_ids = set(request.resolve(digits.train, 10).forget_ids(digits.train).tolist())
    with _registered(_Probe) as name:
        _, record = unlearn(digits_run.model, digits, request, name, train_config=DIGITS_RECIPE,
                            run_path=digits_run.run.path)
    found = _Probe.found
    assert set(found["refused"]) == {"forget", "forget_ids", "retain", "snapshots", "run_path", "dataset"}
    assert found["loaded"] == [] and found["strings"], found["strings"]  # it had strings; none led to data
    assert found["ids"] and -1 not in found["ids"]  # it saw D_sub's ids, never a path
    assert not forget_ids & set(found["ids"])
    assert record["touched"] == {"retain_subset": 9 * 20} and record["declared"] == ["retain_subset"]


@pytest.mark.parametrize("door", ["dataset", "run_path"])
def test_the_probe_would_notice_a_leak(door, digits, digits_run, monkeypatch):
    """The probe is not blind: give the context a data-set name or the run directory, as it used to
    have, and the probe reaches every forget sample through it."""
    request = ForgetRequest.for_classes(4, subset_per_class=20)
    forget_ids = set(request.resolve(digits.train, 10).forget_ids(digits.train).tolist())
    leak = {"dataset": "digits", "run_path": digits_run.run.path}[door]
    monkeypatch.setattr(UnlearnContext, door, leak, raising=False)
    with _registered(_Probe) as name:
        unlearn(digits_run.model, digits, request, name, run_path=digits_run.run.path)
    assert forget_ids <= set(_Probe.found["ids"])


@pytest.mark.parametrize("needs, kinds", [({"forget"}, {"class"}), ({"forget_ids"}, {"class"}),
                                          ({"snapshots", "retain_subset"}, {"class"}),
                                          ({"retain_subset"}, {"class", "ids"})])
def test_registry_refuses_a_zero_glance_method_that_could_reach_forget_samples(needs, kinds):
    bad = type("Bad", (_Probe,), {"name": "test-bad", "needs": frozenset(needs), "request_kinds": frozenset(kinds)})
    with pytest.raises(TypeError, match="zero-glance"):
        register(bad)
    assert "test-bad" not in METHODS


def test_undeclared_access_raises_at_run_time(digits, digits_model, monkeypatch):
    """A method that reads what it did not declare fails with AccessError; a zero-glance method whose
    parameters ask for the forget set is refused before it runs."""
    class Greedy(_Probe):
        name, zero_glance, request_kinds = "test-greedy", False, frozenset({"class", "ids"})

        def run(self, ctx, p):
            return ctx.retain  # declared only retain_subset

    class Sneaky(_Probe):
        name = "test-sneaky"

        def needs_for(self, params, train_config=None):
            return self.needs | {"forget"}

        def run(self, ctx, p):  # pragma: no cover - must never run
            raise AssertionError("a zero-glance method asking for the forget set was run")

    with _registered(Greedy) as name:
        with pytest.raises(AccessError, match="did not declare access to 'retain'"):
            unlearn(digits_model, digits, ForgetRequest.for_classes(2), name)
    with _registered(Sneaky) as name:
        with pytest.raises(ObliviateError, match="zero-glance"):
            unlearn(digits_model, digits, ForgetRequest.for_classes(2), name)


def test_forget_ids_come_only_with_a_declaration(digits, digits_model):
    """``forget_ids`` is its own kind (DeepObliviate); ``forget`` implies the ids (read from D_f)."""
    class IdsOnly(_Probe):
        name, zero_glance, needs = "test-ids-only", False, frozenset({"forget_ids"})
        request_kinds = frozenset({"ids"})

        def run(self, ctx, p):
            _Probe.found = {"ids": ctx.forget_ids}
            return ctx.model

    ids = digits.train.ids[[5, 9, 11]].tolist()
    with _registered(IdsOnly) as name:
        _, record = unlearn(digits_model, digits, ForgetRequest.for_ids(ids), name)
    assert sorted(_Probe.found["ids"].tolist()) == sorted(ids)
    assert record["touched"] == {"forget_ids": 3}
    assert get_method("bad-teacher").needs >= {"forget"} and "forget_ids" not in get_method("bad-teacher").needs

    class Blind(IdsOnly):  # declares neither: the request it sees names no ids either
        name, needs = "test-blind", frozenset({"retain"})

        def run(self, ctx, p):
            _Probe.found = {"request_ids": ctx.request.ids, "kind": ctx.request.kind}
            with pytest.raises(AccessError, match="forget_ids"):
                _ = ctx.forget_ids
            return ctx.model

    with _registered(Blind) as name:
        _, record = unlearn(digits_model, digits, ForgetRequest.for_ids(ids), name)
    assert _Probe.found == {"request_ids": (), "kind": "ids"} and record["request"]["ids"] == ids


def test_fcalb_samples_declares_and_reads_the_forget_set(digits, digits_model):
    assert "forget" in get_method("fcalb-samples").needs and not get_method("fcalb-samples").zero_glance
    request = ForgetRequest.for_classes(3)
    model, record = unlearn(digits_model, digits, request, method="fcalb-samples")
    assert record["touched"]["forget"] == record["forget_size"]
    _check_forgot(digits_model, model, digits, request)


def test_fcalb_rejects_unknown_balance(digits, digits_model):
    with pytest.raises(ObliviateError, match="balance"):
        unlearn(digits_model, digits, ForgetRequest.for_classes(3), method="fcalb", params={"balance": "magic"})


def test_unsir_refuses_sample_requests(digits, digits_model):
    with pytest.raises(ObliviateError, match="class"):
        unlearn(digits_model, digits, ForgetRequest.for_ids([0, 1]), method="unsir")


# ---------------------------------------------------------------- DeepObliviate
def _block_ids(run, block: int, n: int = 10) -> list[int]:
    ids, blocks = load_block_assignment(run.run.path)
    return ids[blocks == block][:n].tolist()


def _deepobliviate(run, digits, ids, **params):
    """Small check samples: at digits' size the default 2,048 + 1,024 would exceed the check budget
    (5 % of retraining) at once, and no stitch would be tried."""
    params = {"bn_samples": 128, "check_samples": 128, **params}
    return unlearn(run.model, digits, ForgetRequest.for_ids(ids), method="deepobliviate", params=params,
                   run_path=run.run.path)


def test_deepobliviate_late_deletion_retrains_a_suffix(digits, digits_blocks_run):
    ids = _block_ids(digits_blocks_run, 5)  # block 6 of 8
    model, record = _deepobliviate(digits_blocks_run, digits, ids)
    info = record["info"]
    assert info["first_block"] == 6 and info["last_block"] == 6
    assert info["retrained_blocks"] == [6, 7, 8] and len(info["deltas"]) == 3
    assert all(d > 0 for d in info["deltas"])
    request = ForgetRequest.for_ids(ids)
    before, after = _accs(digits_blocks_run.model, digits, request), _accs(model, digits, request)
    assert after["retain"] >= before["retain"] - RETAIN_MARGIN
    assert after["test_retain"] >= before["test_retain"] - RETAIN_MARGIN
    # the deleted samples are now unseen data: their accuracy is at the test level, not above it
    assert after["forget"] <= after["test_retain"] + 0.1


def test_deepobliviate_stops_early_and_stitches(digits, digits_blocks_run, monkeypatch):
    """When the stop rule fires, retraining ends there and the rest is stitched (rule itself: test_seed_quality)."""
    import obliviate.methods.deepobliviate as do

    monkeypatch.setattr(do, "decide_stop", lambda p, deltas, ratios: {"stop": len(deltas) >= 2, "reason": "test"})
    ids = _block_ids(digits_blocks_run, 2)  # block 3 of 8
    model, record = _deepobliviate(digits_blocks_run, digits, ids)
    info = record["info"]
    assert info["retrained_blocks"] == [3, 4] and info["stitched"] is True and info["stopped_at"] == 4
    assert info["exact_retraining"] is False and "stitched" in info["note"]
    assert accuracy(model, digits.test) >= accuracy(digits_blocks_run.model, digits.test) - RETAIN_MARGIN


def test_deepobliviate_rejects_a_stitch_that_loses_accuracy(digits, digits_blocks_run, monkeypatch):
    """A stitch that breaks the model is refused; retraining goes on and the next block's stitch is served."""
    import obliviate.methods.deepobliviate as do

    monkeypatch.setattr(do, "decide_stop", lambda p, deltas, ratios: {"stop": len(deltas) >= 2, "reason": "test"})
    real = do.stitch

    def broken_at_block_4(model, theta_b, theta_t, *a, **k):
        real(model, theta_b, theta_t, *a, **k)
        block_4 = load_block_snapshot(digits_blocks_run.run.path, 4)["model"]
        if torch.equal(theta_t["head.weight"], block_4["head.weight"]):
            with torch.no_grad():
                model.head.weight.mul_(-1.0)  # a stitch that went wrong: the classifier is flipped

    monkeypatch.setattr(do, "stitch", broken_at_block_4)
    ids = _block_ids(digits_blocks_run, 2)  # block 3 of 8: the rule fires at block 4, then 5
    model, record = _deepobliviate(digits_blocks_run, digits, ids)
    info = record["info"]
    assert [c["accepted"] for c in info["stitch_checks"]] == [False, True] and info["stopped_at"] == 5
    assert info["retrained_blocks"] == [3, 4, 5] and info["stitched"] is True
    assert [d["reason"] for d in info["decisions"] if d["block"] == 4][0].startswith("stitch check failed")
    assert accuracy(model, digits.test) >= accuracy(digits_blocks_run.model, digits.test) - RETAIN_MARGIN
    # without the check the broken stitch is served
    model, record = _deepobliviate(digits_blocks_run, digits, ids, max_stitch_drop=None)
    assert record["info"]["stopped_at"] == 4 and accuracy(model, digits.test) < 0.5


def test_deepobliviate_without_stopping_equals_exact_retraining(digits, digits_blocks_run):
    ids = _block_ids(digits_blocks_run, 0)  # d = 1: retraining restarts from the recorded initialisation
    model, record = _deepobliviate(digits_blocks_run, digits, ids, epsilon=0.0)
    assert record["info"]["retrained_blocks"] == list(range(1, 9)) and not record["info"]["stitched"]
    cfg = TrainConfig.from_dict(digits_blocks_run.record["config"])
    exact = train(digits, cfg, exclude_ids=ids).model
    for (k, a), b in zip(model.state_dict().items(), exact.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), k


def test_deepobliviate_class_request_degenerates_to_retraining(digits, digits_blocks_run):
    _, record = unlearn(digits_blocks_run.model, digits, ForgetRequest.for_classes(3), method="deepobliviate",
                        params={"epsilon": 1.0}, run_path=digits_blocks_run.run.path)
    assert record["info"]["first_block"] == 1 and record["info"]["retrained_blocks"] == list(range(1, 9))
    assert "retrain" in get_method("deepobliviate").summary


def test_deepobliviate_refuses_a_plain_run(digits, digits_run):
    with pytest.raises(ObliviateError, match="--blocks B --epochs-per-block E"):
        unlearn(digits_run.model, digits, ForgetRequest.for_ids([0, 1]), method="deepobliviate",
                run_path=digits_run.run.path)


@pytest.mark.parametrize("damage", ["bytes", "blocks-out-of-range", "repeated-ids", "snapshot"])
def test_deepobliviate_says_a_damaged_block_index_is_corrupt(digits, digits_blocks_run, tmp_path, damage):
    """A broken blocks.npy (or block snapshot) is corrupt, not "no block snapshots" (which sends the user
    off to retrain a run that is in fact block-incremental)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_blocks_run.run.path, run)
    index = run / "snapshots" / "blocks.npy"
    ids, blocks = load_block_assignment(run)
    if damage == "bytes":
        index.write_bytes(b"\x93NUMPY garbage" + bytes(range(40)))
    elif damage == "blocks-out-of-range":
        np.save(index, np.stack([ids, blocks + 8], 1))
    elif damage == "repeated-ids":
        np.save(index, np.stack([np.r_[ids[:-1], ids[0]], blocks], 1))
    else:
        (run / "snapshots" / "block_002.pt").write_bytes(b"not a torch file")
    with pytest.raises(ObliviateError, match="corrupt|does not match the SHA-256") as info:
        unlearn(digits_blocks_run.model, digits, ForgetRequest.for_ids(_block_ids(digits_blocks_run, 2, 3)),
                method="deepobliviate", params={"epsilon": 0.0}, run_path=run)
    assert "no block snapshots" not in str(info.value) and "\n" not in str(info.value)


def test_deepobliviate_needs_the_run_directory(digits, digits_blocks_run):
    with pytest.raises(ObliviateError, match="snapshots"):
        unlearn(digits_blocks_run.model, digits, ForgetRequest.for_ids([0]), method="deepobliviate")


def test_stitching_keeps_batchnorm_statistics_valid(digits, digits_blocks_run):
    """Regression: adding θ_B − θ_t to θ'_t's running variance could make it negative (NaN outputs)."""
    import copy

    from obliviate.methods.deepobliviate import stitch

    path = digits_blocks_run.run.path
    theta_t = load_block_snapshot(path, 4)["model"]
    theta_b = {k: v.clone() for k, v in load_block_snapshot(path, 8)["model"].items()}
    for k in theta_b:
        if k.endswith("running_var"):
            theta_b[k] = theta_t[k] - 10.0  # an additive stitch would drive the variance far below zero
    model = copy.deepcopy(digits_blocks_run.model)
    model.load_state_dict(load_block_snapshot(path, 5)["model"])
    stitch(model, theta_b, theta_t, digits.train)
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            assert (buf > 0).all(), name
    assert accuracy(model, digits.test) > 0.5
