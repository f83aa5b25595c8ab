"""Your own model and data: every registered method on a classifier obliviate has never seen.

``UserNet`` is defined here, trained by its own loop (not obliviate's trainer), on data given as plain
tensors (scikit-learn digits, rows of 64 floats). It is not a zoo model and not a ``Classifier``. Each
registered method must forget a class on it, keep retain accuracy within its band, and hand back a
``UserNet`` with the same state-dict keys — and a new method cannot ship without a line here.
The bands and parameters are measured on this model (2026-12-04): obliviate's defaults were chosen on
BatchNorm conv nets, and several need a larger step on a small MLP trained to saturation with Adam.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import obliviate
from obliviate import ForgetRequest, TrainConfig
from obliviate.errors import ObliviateError
from obliviate.methods import METHODS, get_method, load_all
from obliviate.methods.base import SNAPSHOTS
from obliviate.training import load_block_assignment, load_block_snapshot

load_all()
FORGET = 3


class UserNet(nn.Module):
    """A user's classifier: its own names (``body``, ``out``), no obliviate base class."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.out(self.body(x.flatten(1)))


def user_training_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 30, seed: int = 0):
    """The user's own loop (Adam, shuffled mini-batches): obliviate never sees how the model was made."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def user_data():
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def user_model(user_data):
    x, y, _, _ = user_data
    torch.manual_seed(0)
    return user_training_loop(UserNet(), x, y)


def acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


RECIPE = TrainConfig(epochs=10, lr=0.05, batch_size=64)  # how retrain / fast-retrain retrain UserNet
NEEDS_RECIPE = {"retrain", "fast-retrain"}
#: method: (params on UserNet, max forget accuracy on the deleted training samples, max retain-accuracy drop).
#: Fine-tune and L1-sparse cannot forget a class on this model at any setting tried (lr up to 0.5, 30 epochs):
#: a saturated MLP keeps class 3 when it only sees the other classes, so they are held to the retain band only.
CASES = {
    "bad-teacher": ({}, 0.15, 0.08),
    "boundary-expand": ({"lr": 0.01}, 0.05, 0.05),
    "boundary-shrink": ({}, 0.05, 0.02),
    "fast-retrain": ({}, 0.0, 0.10),
    "fcalb": ({"lr": 0.03}, 0.05, 0.02),
    "fcalb-samples": ({"lr": 0.03}, 0.05, 0.02),
    "finetune": ({}, None, 0.01),
    "fisher": ({}, 0.10, 0.02),
    "l1-sparse": ({}, None, 0.02),
    "neggrad": ({"lr": 0.1}, 0.05, 0.05),
    "neggrad+": ({"lr": 0.1}, 0.05, 0.02),
    "random-label": ({}, 0.05, 0.03),
    "retrain": ({}, 0.0, 0.05),
    "salun": ({}, 0.05, 0.04),
    "scrub": ({"lr": 0.003}, 0.05, 0.02),
    "unsir": ({"impair_lr": 0.05, "impair_epochs": 2, "repair_lr": 0.01}, 0.05, 0.03),
}


def test_every_registered_method_has_a_case_on_a_users_model():
    """A new method file registers itself; it must also say how it does on a model obliviate did not build."""
    snapshot_methods = {n for n in METHODS if SNAPSHOTS in get_method(n).needs}
    assert set(CASES) | snapshot_methods == set(METHODS), set(METHODS) - set(CASES) - snapshot_methods


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_forgets_a_class_of_a_users_model(name, user_model, user_data):
    x, y, xt, yt = user_data
    given = {k: v.clone() for k, v in user_model.state_dict().items()}
    request = ForgetRequest.for_classes(FORGET)
    if name not in CASES:  # needs obliviate's block-training snapshots: refused with the reason, not a crash
        with pytest.raises(ObliviateError, match=r"block-incremental.*obliviate.train\(data, TrainConfig\(blocks=B\), "
                                                 r"out=..., net=YourNet\(\)\)"):
            obliviate.unlearn(user_model, user_data, request, method=name)
        return
    params, max_forget, max_drop = CASES[name]
    recipe = {"train_config": RECIPE} if name in NEEDS_RECIPE else {}  # the others must not ask for one
    unlearned, record = obliviate.unlearn(user_model, (x, y, xt, yt), request, method=name, params=params, seed=0,
                                          **recipe)
    assert type(unlearned) is UserNet
    assert list(unlearned.state_dict()) == list(given)
    assert all(torch.equal(v, user_model.state_dict()[k]) for k, v in given.items()), "the input model changed"
    f = y == FORGET
    if max_forget is not None:
        assert acc(unlearned, x[f], y[f]) <= max_forget, (name, acc(unlearned, x[f], y[f]))
    assert acc(unlearned, x[~f], y[~f]) >= acc(user_model, x[~f], y[~f]) - max_drop, name
    assert record["forget_size"] == int(f.sum())


def test_deepobliviate_on_a_users_model_block_trained_by_obliviate(user_data, tmp_path):
    """Your own class gets DeepObliviate once obliviate block-trains it (``train(net=...)``): deleting samples of
    the last block retrains that one block, gives your class back, and equals exact retraining without them."""
    cfg = TrainConfig(blocks=6, epochs_per_block=3, lr=0.05, batch_size=64, seed=0)
    res = obliviate.train(user_data, cfg, out=tmp_path / "run", net=UserNet())
    assert type(res.model) is UserNet and res.record["accuracy"]["test"] > 0.85
    ids_by_pos, blocks = load_block_assignment(tmp_path / "run")
    ids = ids_by_pos[blocks == 5][:3].tolist()  # block 6 of 6
    params = {"epsilon": 0.0, "bn_samples": 128, "check_samples": 128}
    model, record = obliviate.unlearn(res.model, user_data, ForgetRequest.for_ids(ids), method="deepobliviate",
                                      params=params, run_path=tmp_path / "run")
    assert type(model) is UserNet and record["info"]["retrained_blocks"] == [6]
    assert record["info"]["cost"]["steps"] * 4 < record["info"]["cost"]["retrain_steps"]
    exact = obliviate.train(user_data, cfg, net=UserNet(), exclude_ids=ids).model
    for (k, a), b in zip(model.state_dict().items(), exact.state_dict().values()):
        assert torch.equal(a, b), k
    # the saved path: reload with your class, forget into a run with a certificate that verifies
    ck = obliviate.load_checkpoint(tmp_path / "run", data=user_data, model_class=UserNet)
    _, record = obliviate.forget(ck, ForgetRequest.for_ids(ids), "deepobliviate", params=params, out=tmp_path / "u")
    assert record["verdict"]["forgotten"], record["verdict"]
    assert obliviate.verify(tmp_path / "u").ok
    assert obliviate.verify(tmp_path / "u", evidence=True, data=user_data, model_class=UserNet).ok
    res = obliviate.verify(tmp_path / "u", evidence=True, model_class=UserNet)  # the tensors are not on disk
    assert not res.ok and "pass the same data" in res.problems[0], res.problems


class ZeroHead(UserNet):
    """Its own initialisation (a zeroed head) and a bare parameter: no ``reset_parameters`` re-creates either."""

    def __init__(self, hidden: int = 64):
        super().__init__(hidden)
        nn.init.zeros_(self.out.weight)
        self.shift = nn.Parameter(torch.ones(hidden))

    def forward(self, x):
        return self.out(self.body(x.flatten(1)) + self.shift)


def test_train_net_starts_from_the_users_constructor_and_records_its_arguments(user_data, tmp_path):
    run = obliviate.train(user_data, TrainConfig(blocks=2, lr=0.05, batch_size=64), out=tmp_path / "z",
                          net=ZeroHead(hidden=32), model_args={"hidden": 32})
    theta_0 = load_block_snapshot(tmp_path / "z", 0)["model"]
    assert not theta_0["net.out.weight"].any() and bool((theta_0["net.shift"] == 1.0).all())  # ZeroHead's own start
    assert type(run.model) is ZeroHead and run.record["model"]["options"]["args"] == {"hidden": 32}
    with pytest.raises(ObliviateError, match=r"ZeroHead\(\*\*\{\}\) builds another model than net"):
        obliviate.train(user_data, TrainConfig(blocks=2), net=ZeroHead(hidden=32))  # args forgotten: refused first


def test_train_net_refuses_a_zoo_model_and_a_second_builder(user_data):
    with pytest.raises(ObliviateError, match="for your own model"):
        obliviate.train(user_data, TrainConfig(), net=obliviate.build_model("mlp", input_shape=(64,), num_classes=10))
    with pytest.raises(ObliviateError, match="not both"):
        obliviate.train(user_data, TrainConfig(), net=UserNet(), build=UserNet)


# ---------------------------------------------------------------- your own data
def test_ids_are_the_users_row_indices_in_the_request_and_the_record(user_model, user_data):
    x, y, xt, yt = user_data
    rows = [5, 17, 400, 1399]
    unlearned, record = obliviate.unlearn(user_model, user_data, ForgetRequest.for_ids(rows), method="neggrad+",
                                          params={"lr": 0.1})
    assert record["request"]["ids"] == rows and record["forget_size"] == 4
    bundle = obliviate.from_tensors(x, y, xt, yt)
    assert bundle.train.ids.tolist() == list(range(len(y))) and len(bundle.val) == 0
    assert torch.equal(bundle.train.x[rows], x[rows])  # the user's rows, exactly as given (no rescaling)


def test_datasets_and_tensors_give_the_same_bundle(user_data):
    x, y, xt, yt = user_data
    a = obliviate.from_tensors(x, y, xt, yt)
    b = obliviate.from_datasets(torch.utils.data.TensorDataset(x, y), torch.utils.data.TensorDataset(xt, yt))
    assert a.source_hash == b.source_hash and a.classes == b.classes
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)


class ConvNet(nn.Module):
    """A user's conv net: GradCAM finds its last convolution, a named feature layer is honoured."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.pool = nn.Flatten()
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)))


def test_a_named_feature_layer_and_gradcam_on_a_users_conv_net(user_data, tmp_path):
    x, y, xt, yt = (t.view(-1, 1, 8, 8) if t.dim() == 2 else t for t in user_data)
    torch.manual_seed(0)
    net = user_training_loop(ConvNet(), x, y, epochs=15)
    data = (x, y, xt, yt)
    wrapped = obliviate.wrap(net, (1, 8, 8), feature_layer="pool")
    assert wrapped.feature_layer == "pool" and wrapped.head_name == "fc" and wrapped.cam_layer == "net.conv.0"
    assert torch.allclose(wrapped.head(wrapped.features(x[:4])), net(x[:4]), atol=1e-6)
    unlearned, _ = obliviate.unlearn(net, data, ForgetRequest.for_classes(FORGET), method="fcalb",
                                     params={"lr": 0.03}, feature_layer="pool")
    assert type(unlearned) is ConvNet
    from obliviate.metrics.evaluate import evaluate
    m = evaluate(net, unlearned, data, ForgetRequest.for_classes(FORGET), out=tmp_path, relearn=False)
    assert m["forget_acc"] <= 0.05 and m["forget_acc_original"] >= 0.9
    assert "gradcam.png" in m["figures"] and (tmp_path / "gradcam.png").stat().st_size > 0


# ---------------------------------------------------------------- bad input: one clear error, before any work
class ThreeD(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).unsqueeze(1)


class Probabilities(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)).softmax(1)


@pytest.mark.parametrize("net, options, message", [
    (ThreeD(), {}, r"logits of shape \[batch, classes\]"),
    (Probabilities(), {}, "head cannot be found; pass head="),
    (Probabilities(), {"head": "fc"}, "is not the model's output"),
    (UserNet(), {"feature_layer": "backbone.pool"}, "no feature layer 'backbone.pool'; its modules include: body"),
    (UserNet(), {"head": "body.0"}, "is not an nn.Linear with 10 outputs"),
])
def test_a_model_obliviate_cannot_read_is_refused_with_what_to_pass(net, options, message, user_data):
    with pytest.raises(ObliviateError, match=message):
        obliviate.unlearn(net, user_data, ForgetRequest.for_classes(FORGET), method="finetune", **options)


def test_labels_beyond_the_head_and_bad_arrays_are_refused(user_model, user_data):
    x, y, xt, yt = user_data
    with pytest.raises(ObliviateError, match="labels up to 12 but the model has 10 outputs"):
        obliviate.unlearn(user_model, (x, torch.where(y == 9, 12, y), xt, yt), ForgetRequest.for_classes(3), "finetune")
    with pytest.raises(ObliviateError, match="labels must be integers"):
        obliviate.from_tensors(x, y.float())
    with pytest.raises(ObliviateError, match="expected 1400 labels"):
        obliviate.from_tensors(x, y[:10])
    with pytest.raises(ObliviateError, match="test inputs have shape"):
        obliviate.from_tensors(x, y, xt[:, :10], yt)


def test_retraining_a_users_model_needs_its_recipe_or_loop(user_model, user_data):
    with pytest.raises(ObliviateError, match="needs its recipe: pass train_config"):
        obliviate.unlearn(user_model, user_data, ForgetRequest.for_classes(FORGET), method="retrain")
    x, y = user_data[:2]
    calls = []

    def my_loop(model, dataset):  # the user's own training code retrains the fresh model
        calls.append(len(dataset))
        xs, ys = dataset.tensors
        user_training_loop(model, xs, ys, epochs=10)

    retrained, _ = obliviate.unlearn(user_model, user_data, ForgetRequest.for_classes(FORGET), method="retrain",
                                     train_fn=my_loop)
    f = y == FORGET
    assert calls == [int((~f).sum())] and type(retrained) is UserNet
    assert acc(retrained, x[f], y[f]) == 0.0 and acc(retrained, x[~f], y[~f]) > 0.95


# ---------------------------------------------------------------- the command line
USER_MODULE = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden=64):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.out(self.body(x.flatten(1)))


class Conv(nn.Module):  # expects 1x8x8 images: fails on the rows of 64 in data.npz
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.out = nn.Linear(144, 10)

    def forward(self, x):
        return self.out(self.conv(x).flatten(1))
'''


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, user_data):
    """A user's model file, their weights (safetensors, their own loop) and their data (.npz), made once."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("user-project")
    (folder / "cli_user_nets.py").write_text(USER_MODULE)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        import cli_user_nets
    x, y, xt, yt = user_data
    torch.manual_seed(0)
    net = user_training_loop(cli_user_nets.Net(hidden=32), x, y)
    save_file(net.state_dict(), folder / "model.safetensors")
    np.savez(folder / "data.npz", x_train=x.numpy(), y_train=y.numpy(), x_test=xt.numpy(), y_test=yt.numpy())
    return folder, cli_user_nets


@pytest.fixture
def user_project(user_files, tmp_path, monkeypatch):
    """The user's folder as the current folder (a copy per test): their module importable from it."""
    import shutil

    src, nets = user_files
    for f in ("cli_user_nets.py", "model.safetensors", "data.npz"):
        shutil.copy(src / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path, nets


def _cli(*args: str):
    from typer.testing import CliRunner

    from obliviate.cli.main import app
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


IMPORT = ("import", "--model-class", "cli_user_nets:Net", "--model-arg", "hidden=32", "--weights", "model.safetensors",
          "--dataset", "arrays", "--data-root", "data.npz")


def test_import_forget_verify_and_load_back_from_the_command_line(user_project):
    folder, nets = user_project
    r = _cli(*IMPORT, "--epochs", "10", "--lr", "0.05", "--batch-size", "64", "--out", "served")
    assert r.exit_code == 0, r.output
    assert "head 'out'" in r.output
    r = _cli("forget", "--checkpoint", "served", "--method", "fcalb", "--param", "lr=0.03", "--forget-class", "3",
             "--out", "f3")
    assert r.exit_code == 2 and "--model-class cli_user_nets:Net" in r.output  # never imported on its own
    assert not (folder / "f3").exists()
    r = _cli("forget", "--checkpoint", "served", "--model-class", "cli_user_nets:Net", "--method", "fcalb",
             "--param", "lr=0.03", "--forget-class", "3", "--out", "f3")
    assert r.exit_code == 0, r.output
    r = _cli("forget", "--checkpoint", "f3", "--model-class", "cli_user_nets:Net", "--method", "retrain",
             "--forget-class", "5", "--out", "f35")
    assert r.exit_code == 0, r.output
    r = _cli("verify", "f35", "--evidence", "--model-class", "cli_user_nets:Net")
    assert r.exit_code == 0, r.output
    from safetensors.torch import load_file
    x, y, _, _ = (torch.as_tensor(a) for a in np.load("data.npz").values())
    for f in ("f3", "f35"):
        served = nets.Net(hidden=32)
        served.load_state_dict(load_file(folder / f / "model.safetensors"))  # drops back into the user's code
        plain = nets.Net(hidden=32)
        plain.load_state_dict(torch.load(folder / f / "state_dict.pt", weights_only=True))
        assert all(torch.equal(a, b) for a, b in zip(served.state_dict().values(), plain.state_dict().values()))
        assert acc(served, x[y == 3], y[y == 3]) <= 0.05 and acc(served, x[y == 0], y[y == 0]) >= 0.95
    assert acc(served, x[y == 5], y[y == 5]) == 0.0  # f35: both classes out, the retrain kept class 3 out too


def test_block_train_your_model_and_delete_samples_with_deepobliviate_from_the_command_line(user_project):
    folder, nets = user_project
    train = ("train", "--model-class", "cli_user_nets:Net", "--model-arg", "hidden=32", "--dataset", "arrays",
             "--data-root", "data.npz", "--blocks", "4", "--epochs-per-block", "3", "--lr", "0.05",
             "--batch-size", "64", "--val-fraction", "0", "--out", "blocks")
    r = _cli(*train[:-2], "--model-arg", "width=3", "--out", "bad")  # the user's constructor refuses it
    line = " ".join(r.output.split())
    assert r.exit_code == 2 and "building --model-class cli_user_nets:Net with" in line, r.output
    assert not (folder / "bad").exists()
    r = _cli(*train)
    assert r.exit_code == 0 and "--model-class cli_user_nets:Net" in r.output, r.output
    ids, blocks = load_block_assignment(folder / "blocks")
    (folder / "ids.txt").write_text("\n".join(str(i) for i in ids[blocks == 3][:3]))
    r = _cli("forget", "--checkpoint", "blocks", "--model-class", "cli_user_nets:Net", "--method", "deepobliviate",
             "--forget-ids", "ids.txt", "--param", "bn_samples=128", "--param", "check_samples=128", "--out", "gone")
    assert r.exit_code == 0 and "forgotten: yes" in r.output, r.output
    record = json.loads((folder / "gone" / "run.json").read_text())
    assert record["info"]["retrained_blocks"] == [4] and record["method"] == "deepobliviate"
    assert _cli("verify", "gone", "--evidence", "--model-class", "cli_user_nets:Net").exit_code == 0
    r = _cli("train", "--model-arg", "hidden=32", "--dataset", "digits", "--out", "zoo")
    assert r.exit_code == 2 and "--model-arg needs --model-class" in r.output
    r = _cli(*train[:-2], "--model", "resnet8", "--out", "both")
    assert r.exit_code == 2 and "choose one" in r.output and not (folder / "both").exists()
    r = _cli("train", "--model-class", "cli_user_nets:Conv", *train[5:-2], "--out", "conv")  # its forward fails
    assert r.exit_code == 2 and "fails on a batch of 2 inputs shaped like the data (64,)" in " ".join(r.output.split())
    assert not (folder / "conv").exists()
    assert _cli(*IMPORT, "--out", "served").exit_code == 0  # imported: no blocks, and the way to get them
    r = _cli("forget", "--checkpoint", "served", "--model-class", "cli_user_nets:Net", "--method", "deepobliviate",
             "--forget-ids", "ids.txt", "--out", "nope")
    assert r.exit_code == 2 and "obliviate train --model-class cli_user_nets:Net ... --blocks B" in r.output, r.output
    assert not (folder / "nope").exists()


@pytest.mark.parametrize("change, message", [
    (("--model-arg", "hidden=16"), "do not fit cli_user_nets:Net: other shape for"),
    (("--model-class", "cli_user_nets:Nope"), "cli_user_nets has no 'Nope'"),
    (("--model-class", "not_a_module_here:Net"), "no module named 'not_a_module_here'"),
    (("--feature-layer", "backbone.pool"), "no feature layer 'backbone.pool'"),
    (("--data-root", "labels12.npz"), "labels up to 12 but the model has 10 outputs"),
    (("--weights", "garbage.safetensors"), "corrupt weights file"),
])
def test_import_refuses_bad_input_in_one_line_and_writes_nothing(user_project, change, message):
    folder, _ = user_project
    z = dict(np.load("data.npz"))
    z["y_train"] = np.where(z["y_train"] == 9, 12, z["y_train"])
    np.savez("labels12.npz", **z)
    (folder / "garbage.safetensors").write_bytes(b"\x00" * 64)
    args = list(IMPORT)
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    r = _cli(*args, "--out", "served")
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()), r.output
    assert not (folder / "served").exists()


def test_an_image_folder_tree_loads_grey_with_sorted_classes_and_refuses_mixed_sizes(tmp_path):
    from PIL import Image

    from obliviate.data import load_data
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("dog", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (6, 5), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(tmp_path / split / cls / f"{i}.png")
    data = load_data("image-folder", root=str(tmp_path), val_fraction=0.0)
    assert data.classes == ["cat", "dog"] and data.input_shape == (1, 6, 5) and len(data.train) == 8
    assert data.train.ids.tolist() == list(range(8)) and data.train.y.tolist() == [0] * 4 + [1] * 4
    Image.fromarray(np.zeros((7, 5), np.uint8), "L").save(tmp_path / "train" / "dog" / "odd.png")
    with pytest.raises(ObliviateError, match=r"images differ in size .* resize them"):
        load_data("image-folder", root=str(tmp_path), val_fraction=0.0)


def test_torch_is_a_lower_bound_so_a_users_pytorch_stays():
    """pip keeps an installed torch 2.x that satisfies the bound (checked by hand: a venv holding 2.5.1 gets
    no other torch); an exact pin would replace it. The local wheel is pinned in constraints.txt only."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if d.replace(" ", "").startswith("torch") and not d.startswith("torchvision"))
    assert "==" not in torch_req and ">=2." in torch_req, torch_req
    assert "torch==" in (root / "constraints.txt").read_text()


def test_the_per_example_attack_trains_its_shadows_from_the_users_class(user_model, user_data, tmp_path):
    """Shadows of an imported model are fresh copies of the user's class, trained with its recorded recipe."""
    ck = obliviate.import_model(user_model, user_data, tmp_path / "imported", train_config=RECIPE)
    request = ForgetRequest.for_ids(list(range(0, 200, 10)))
    attack = obliviate.api.attack_settings(ck, 4, request, cache=tmp_path / "shadows", max_epochs=2)
    assert attack.build is not None
    model, record = obliviate.forget(ck, request, "retrain", out=tmp_path / "re", per_example_mia=attack)
    assert isinstance(getattr(model, "unwrap", lambda: model)(), UserNet)
    tests = record["evidence"]["per_request"][0]["per_example"]
    assert tests["deleted"] == 20 and 0.0 <= tests["p_seen"] <= 1.0
    assert record["evidence"]["per_example"]["shadows"] == 4
    assert len(list((tmp_path / "shadows").glob("*/phi-*.npy"))) == 4
    assert obliviate.verify(tmp_path / "re", evidence=True, data=user_data, model_class=UserNet,
                            shadow_dir=tmp_path / "shadows").ok
