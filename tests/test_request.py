"""Forget-request validation: every bad input gets a clear error; good ones resolve correctly."""
from __future__ import annotations

import numpy as np
import pytest

from obliviate.data import ForgetRequest
from obliviate.errors import RequestError


@pytest.mark.parametrize("request_, message", [
    (ForgetRequest(), "empty forget request"),
    (ForgetRequest.for_classes(10), "class 10 out of range"),
    (ForgetRequest.for_classes(-1), "class -1 out of range"),
    (ForgetRequest.for_classes(3, 3), "listed twice"),
    (ForgetRequest.for_classes(*range(10)), "forgetting every class"),
    (ForgetRequest(classes=(1,), fraction=0.1), "exactly one"),
    (ForgetRequest.for_fraction(0.0), r"fraction must be in \(0, 1\)"),
    (ForgetRequest.for_fraction(1.0), r"fraction must be in \(0, 1\)"),
    (ForgetRequest.for_fraction(1e-6), "selects none"),
    (ForgetRequest.for_ids([10**9]), "sample id 1000000000 is not in the training set"),
    (ForgetRequest.for_classes(1, subset_per_class=0), "subset_per_class"),
])
def test_bad_requests_fail_early_with_a_named_problem(digits, request_, message):
    with pytest.raises(RequestError, match=message):
        request_.resolve(digits.train, digits.num_classes)


def test_test_and_val_ids_are_not_forgettable(digits):
    test_only = int(digits.test.ids[0])
    assert test_only not in set(digits.train.ids.tolist())
    with pytest.raises(RequestError, match="not in the training set"):
        ForgetRequest.for_ids([test_only]).resolve(digits.train, 10)


def test_class_request_partitions_train_and_draws_subset_from_retain(digits):
    split = ForgetRequest.for_classes(4, subset_per_class=25, seed=1).resolve(digits.train, 10)
    y = digits.train.y.numpy()
    assert (y[split.forget_pos] == 4).all() and not (y[split.retain_pos] == 4).any()
    assert len(split.forget_pos) + len(split.retain_pos) == len(y)
    assert set(split.subset_pos) <= set(split.retain_pos)
    counts = np.bincount(y[split.subset_pos], minlength=10)
    assert counts[4] == 0 and (counts[np.arange(10) != 4] == 25).all()


def test_fraction_and_id_requests(digits):
    n = len(digits.train)
    split = ForgetRequest.for_fraction(0.1, seed=3).resolve(digits.train, 10)
    assert len(split.forget_pos) == round(0.1 * n)
    assert len(set(digits.train.y[split.forget_pos].tolist())) > 5  # spread over classes, not one class
    again = ForgetRequest.for_fraction(0.1, seed=3).resolve(digits.train, 10)
    assert np.array_equal(split.forget_pos, again.forget_pos)  # seeded
    ids = digits.train.ids[:7].tolist()
    by_id = ForgetRequest.for_ids(ids).resolve(digits.train, 10)
    assert sorted(by_id.forget_ids(digits.train).tolist()) == sorted(ids)


def test_ids_file_formats(tmp_path, digits):
    ids = digits.train.ids[:5].tolist()
    (tmp_path / "ids.txt").write_text(" ".join(map(str, ids[:3])) + "\n" + ",".join(map(str, ids[3:])))
    assert list(ForgetRequest.from_ids_file(tmp_path / "ids.txt").ids) == ids
    np.save(tmp_path / "ids.npy", np.asarray(ids))
    assert list(ForgetRequest.from_ids_file(tmp_path / "ids.npy").ids) == ids
    (tmp_path / "bad.txt").write_text("1 2 three")
    with pytest.raises(RequestError, match="not a list of integer ids"):
        ForgetRequest.from_ids_file(tmp_path / "bad.txt")
    with pytest.raises(RequestError, match="does not exist"):
        ForgetRequest.from_ids_file(tmp_path / "missing.txt")


def test_request_round_trips_through_dict():
    r = ForgetRequest.for_classes(1, 2, subset_per_class=50, seed=4)
    assert ForgetRequest.from_dict(r.to_dict()) == r
