"""Loaders on real files, the decode cache, deterministic splits and the device pipeline."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from obliviate.data import BatchStream, ForgetRequest, load_data
from obliviate.data import sources as src
from obliviate.data.pipeline import _generator, augment_batch, random_crop
from obliviate.errors import ObliviateError

CIFAR_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.npz"


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fashion_mnist_reads_the_debian_idx_files():
    b = load_data("fashion-mnist")
    assert len(b.train) + len(b.val) == 60_000 and len(b.test) == 10_000
    assert b.train.x.dtype == torch.uint8 and b.input_shape == (1, 28, 28)
    assert b.num_classes == 10 and b.classes[9] == "ankle boot"
    assert b.train.class_counts(10) == [5700] * 10  # 5 % of each class went to val
    # ids index the source array: train and val are disjoint and together cover 0..59999
    ids = torch.cat([b.train.ids, b.val.ids]).sort().values
    assert torch.equal(ids, torch.arange(60_000))


def test_small_sets_have_stratified_test_splits():
    for name, n, classes in [("digits", 1797, 10), ("mnist-5k", 5000, 10), ("letter", 20_000, 26)]:
        b = load_data(name)
        assert len(b.train) + len(b.val) + len(b.test) == n
        assert b.num_classes == classes
        all_ids = torch.cat([b.train.ids, b.val.ids, b.test.ids])
        assert len(torch.unique(all_ids)) == n  # no sample in two splits
    letter = load_data("letter")
    assert letter.kind == "tabular" and letter.train.x.dtype == torch.float32 and letter.input_shape == (16,)


@pytest.mark.skipif(not CIFAR_NPZ.exists(), reason="shared CIFAR-10 JPEG copy not present")
def test_cifar10_jpeg_npz_decodes_to_the_official_split_sizes():
    b = load_data("cifar10", root=str(CIFAR_NPZ), val_fraction=0.0)
    assert len(b.train) == 50_000 and len(b.test) == 10_000 and b.input_shape == (3, 32, 32)
    assert b.train.class_counts(10) == [5000] * 10
    assert b.classes[0] == "airplane"
    assert 0.4 < b.mean[0] < 0.55  # natural-image statistics, not garbage


def _tiny_cifar_arrays(n: int = 40):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), np.arange(n) % 10


def test_cifar10_pickle_layout_and_folder_tree(tmp_path, private_cache):
    x, y = _tiny_cifar_arrays()
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        with open(root / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"data": x.reshape(len(x), -1), "labels": y.tolist()}, fh)
    with open(root / "test_batch", "wb") as fh:
        pickle.dump({"data": x[:20].reshape(20, -1), "labels": y[:20].tolist()}, fh)
    b = load_data("cifar10", root=str(tmp_path), val_fraction=0.0)
    assert len(b.train) == 200 and len(b.test) == 20
    assert torch.equal(b.train.x[:40], torch.from_numpy(x))  # pixels survive the round trip

    from PIL import Image

    tree = tmp_path / "tree"
    for split, count in [("train", 20), ("test", 10)]:
        for i in range(count):
            d = tree / split / f"class{y[i]}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i].transpose(1, 2, 0)).save(d / f"{i}.png")
    t = load_data("cifar10", root=str(tree), val_fraction=0.0)
    assert len(t.train) == 20 and len(t.test) == 10 and t.classes[0] == "class0"


@pytest.mark.parametrize("name, expected", [("cifar100", "cifar-100-python"), ("svhn", "train_32x32.mat"),
                                            ("cifar10", "--data-root")])
def test_missing_data_names_the_expected_path(name, expected, tmp_path):
    with pytest.raises(ObliviateError, match=expected.replace(".", r"\.")):
        load_data(name, root=str(tmp_path / "nowhere") if name != "cifar10" else None)


def test_unknown_dataset_is_named():
    with pytest.raises(ObliviateError, match="unknown dataset 'cifar11'"):
        load_data("cifar11")


def test_cache_is_keyed_by_source_hash_and_reused(tmp_path, private_cache, monkeypatch):
    csv = tmp_path / "m.csv"
    rows = np.concatenate([np.random.default_rng(0).integers(0, 255, (30, 784)), np.arange(30)[:, None] % 10], 1)
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    a = load_data("mnist-5k", root=str(csv))
    folders = list(private_cache.iterdir())
    assert len(folders) == 1 and (folders[0] / "meta.json").exists()

    def boom(_):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(src.SOURCES["mnist-5k"], "read", boom)
    b = load_data("mnist-5k", root=str(csv))
    assert torch.equal(a.train.x, b.train.x)
    monkeypatch.undo()
    monkeypatch.setenv("OBLIVIATE_CACHE", str(private_cache))
    rows[0, 0] = (rows[0, 0] + 1) % 255
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    load_data("mnist-5k", root=str(csv))
    assert len(list(private_cache.iterdir())) == 2  # a changed source gets its own entry


def test_damaged_cache_is_rebuilt(tmp_path, private_cache):
    a = load_data("digits")
    folder = next(private_cache.iterdir())
    (folder / "x_train.npy").write_bytes(b"garbage")
    b = load_data("digits")
    assert torch.equal(a.train.x, b.train.x)


def test_splits_are_deterministic_and_split_seed_matters():
    a, b = load_data("digits"), load_data("digits")
    assert torch.equal(a.train.ids, b.train.ids) and torch.equal(a.test.ids, b.test.ids)
    c = load_data("digits", split_seed=1)
    assert not torch.equal(a.test.ids, c.test.ids)
    capped = load_data("digits", train_per_class=20)
    assert max(capped.train.class_counts(10)) <= 20


def test_random_crop_is_a_shifted_window_and_flip_is_mirror():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    g = _generator(torch.device("cpu"), 0)
    out = random_crop(x, 2, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output equals some 8x8 window of the padded image
        assert any(torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    flipped = augment_batch(x, "flip", _generator(torch.device("cpu"), 3))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


def test_batch_stream_covers_every_sample_once_and_resumes_exactly(digits):
    s = BatchStream(digits.train, 100, augment="crop-flip", seed=5)
    batches = list(s.epoch(1))
    ids = torch.cat([b.ids for b in batches])
    assert torch.equal(ids.sort().values, digits.train.ids.sort().values)
    tail = list(s.epoch(1, start=3, step_offset=0))
    assert len(tail) == len(batches) - 3
    for a, b in zip(batches[3:], tail):
        assert torch.equal(a.x, b.x) and torch.equal(a.ids, b.ids)
    assert not torch.equal(torch.cat([b.ids for b in s.epoch(2)]), ids)  # a new epoch, a new order


def test_forget_request_splits_test_set_for_class_requests(digits):
    split = ForgetRequest.for_classes(2, 7).resolve(digits.train, 10)
    tf, tr = split.test_split(digits.test)
    assert set(tf.y.tolist()) == {2, 7} and not ({2, 7} & set(tr.y.tolist()))
    assert len(tf) + len(tr) == len(digits.test)
