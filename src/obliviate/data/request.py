"""Forget requests: what to forget, validated before any work starts.

A request names the data to delete — classes, a random fraction of the training set, or explicit
sample ids — and ``resolve`` turns it into positions of the forget set, the retain set and a small
retain subset D_sub, failing early with a message that names the problem.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import RequestError
from .dataset import ArrayData


@dataclass(frozen=True)
class ForgetRequest:
    """What to forget. Exactly one of ``classes``, ``fraction`` or ``ids`` is set.

    ``subset_per_class`` sizes D_sub, the small retain subset that zero-glance methods (UNSIR, FCALB)
    repair on; 1,000 per class follows UNSIR's notebook, capped by what the retain set holds.
    """

    classes: tuple[int, ...] = ()
    fraction: float | None = None
    ids: tuple[int, ...] = ()
    subset_per_class: int = 1000
    seed: int = 0

    @classmethod
    def for_classes(cls, *classes: int, **kw) -> "ForgetRequest":
        return cls(classes=tuple(int(c) for c in classes), **kw)

    @classmethod
    def for_fraction(cls, fraction: float, **kw) -> "ForgetRequest":
        return cls(fraction=float(fraction), **kw)

    @classmethod
    def for_ids(cls, ids, **kw) -> "ForgetRequest":
        return cls(ids=tuple(int(i) for i in ids), **kw)

    @classmethod
    def from_ids_file(cls, path: str | Path, **kw) -> "ForgetRequest":
        """Read ids from a text file (whitespace/comma separated) or a ``.npy`` array."""
        p = Path(path)
        if not p.exists():
            raise RequestError(f"forget-ids file {p} does not exist")
        if not p.is_file():
            what = "a folder" if p.is_dir() else "not a regular file"
            raise RequestError(f"forget-ids file {p} is {what}, not a file of ids")
        try:
            if p.suffix == ".npy":
                ids = np.load(p, allow_pickle=False).reshape(-1)
            else:
                ids = [int(t) for t in p.read_text().replace(",", " ").split()]
        except ValueError as exc:
            raise RequestError(f"forget-ids file {p}: not a list of integer ids ({exc})") from exc
        except OSError as exc:
            raise RequestError(f"cannot read forget-ids file {p}: {exc.strerror or exc}") from None
        return cls.for_ids(ids, **kw)

    @property
    def kind(self) -> str:
        return "class" if self.classes else "fraction" if self.fraction is not None else "ids"

    def describe(self) -> str:
        if self.classes:
            return "classes " + ",".join(map(str, self.classes))
        if self.fraction is not None:
            return f"random {self.fraction:.1%}"
        return f"{len(self.ids)} ids"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"], d["ids"] = list(self.classes), list(self.ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ForgetRequest":
        d = dict(d)
        d["classes"] = tuple(d.get("classes") or ())
        d["ids"] = tuple(d.get("ids") or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def validate(self, num_classes: int) -> None:
        given = sum([bool(self.classes), self.fraction is not None, bool(self.ids)])
        if given == 0:
            raise RequestError("empty forget request: give classes, a fraction or sample ids")
        if given > 1:
            raise RequestError("a forget request takes exactly one of classes, fraction or ids")
        bad = [c for c in self.classes if not 0 <= c < num_classes]
        if bad:
            raise RequestError(f"class {bad[0]} out of range: this data set has classes 0..{num_classes - 1}")
        if len(set(self.classes)) != len(self.classes):
            raise RequestError(f"class listed twice in {list(self.classes)}")
        if self.classes and len(self.classes) >= num_classes:
            raise RequestError("forgetting every class leaves nothing to retain")
        if self.fraction is not None and not 0.0 < self.fraction < 1.0:
            raise RequestError(f"forget fraction must be in (0, 1), got {self.fraction}")
        if self.subset_per_class < 1:
            raise RequestError(f"subset_per_class must be >= 1, got {self.subset_per_class}")

    def resolve(self, train: ArrayData, num_classes: int, forgotten: "Forgotten | None" = None) -> "ForgetSplit":
        """Positions (into ``train``) of the forget set, the retain set and D_sub.

        ``forgotten`` is what the model already forgot (earlier requests of its lineage): those samples
        leave the retain set and D_sub too (else a method would train them back in) and are not forgotten
        again; a request that names nothing new is an error.
        """
        self.validate(num_classes)
        y = train.y.cpu().numpy()
        ids = train.ids.cpu().numpy()
        rng = np.random.default_rng(self.seed)
        if self.classes:
            forget_mask = np.isin(y, self.classes)
        elif self.fraction is not None:
            n = int(round(self.fraction * len(y)))
            if n == 0:
                raise RequestError(f"forget fraction {self.fraction} of {len(y)} samples selects none")
            forget_mask = np.zeros(len(y), bool)
            forget_mask[rng.choice(len(y), n, replace=False)] = True
        else:
            want = np.asarray(self.ids, np.int64)
            pos_of = {int(i): p for p, i in enumerate(ids)}
            missing = [int(i) for i in want if int(i) not in pos_of]
            if missing:
                lo, hi = int(ids.min()), int(ids.max())
                raise RequestError(f"sample id {missing[0]} is not in the training set "
                                   f"({len(missing)} missing; training ids span {lo}..{hi})")
            forget_mask = np.zeros(len(y), bool)
            forget_mask[[pos_of[int(i)] for i in want]] = True
        before = forgotten.mask(train) if forgotten is not None else np.zeros(len(y), bool)
        if forget_mask.any() and not (forget_mask & ~before).any():
            raise RequestError(f"the request ({self.describe()}) only repeats what the model already forgot "
                               f"({forgotten.describe()}): nothing new to forget")
        forget = np.flatnonzero(forget_mask & ~before)
        retain = np.flatnonzero(~(forget_mask | before))
        if len(forget) == 0:
            raise RequestError(f"the request ({self.describe()}) selects no training sample")
        if len(retain) == 0:
            raise RequestError("the request forgets every training sample: nothing left to retain")
        sub = []
        for c in range(num_classes):
            pos = retain[y[retain] == c]
            if len(pos):
                sub.append(np.sort(rng.permutation(pos)[: self.subset_per_class]))
        subset = np.sort(np.concatenate(sub))
        return ForgetSplit(self, forget, retain, subset, prior_pos=np.flatnonzero(before),
                           prior_classes=forgotten.classes if forgotten is not None else ())


@dataclass
class ForgetSplit:
    """A resolved request: positions into the training split, plus what the test split looks like."""

    request: ForgetRequest
    forget_pos: np.ndarray
    retain_pos: np.ndarray
    subset_pos: np.ndarray
    extra: dict = field(default_factory=dict)
    prior_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # forgotten before the request
    prior_classes: tuple[int, ...] = ()  # classes forgotten before the request: not "retained" on the test split

    def forget(self, train: ArrayData) -> ArrayData:
        return train.subset(self.forget_pos)

    def retain(self, train: ArrayData) -> ArrayData:
        return train.subset(self.retain_pos)

    def retain_subset(self, train: ArrayData) -> ArrayData:
        return train.subset(self.subset_pos)

    def forget_ids(self, train: ArrayData) -> np.ndarray:
        return train.ids.cpu().numpy()[self.forget_pos]

    def test_split(self, test: ArrayData) -> tuple[ArrayData | None, ArrayData]:
        """(test-forget, test-retain): for class requests the test samples of forgotten / other classes;
        for sample requests there is no test-forget and test-retain is the whole test split (either way
        without the classes forgotten before the request)."""
        gone = torch.isin(test.y, torch.as_tensor(self.request.classes + tuple(self.prior_classes),
                                                  dtype=test.y.dtype, device=test.y.device))
        retained = test.subset(torch.nonzero(~gone).flatten()) if gone.any() else test
        if not self.request.classes:
            return None, retained
        mask = torch.isin(test.y, torch.as_tensor(self.request.classes, device=test.y.device))
        return test.subset(torch.nonzero(mask).flatten()), retained


@dataclass
class Forgotten:
    """What a model has forgotten so far: the union of every request since the original training.

    Classes stay classes (a class request forgets the class, whatever its ids); sample requests (ids,
    or a fraction resolved with its seed) become sorted unique ids. ``ids_text`` is the canonical form
    (one id per line, ascending) whose SHA-256 names the id set in records and certificates.
    """

    classes: tuple[int, ...] = ()
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self):
        self.classes = tuple(sorted({int(c) for c in self.classes}))
        self.ids = np.unique(np.asarray(self.ids, np.int64).reshape(-1))

    @classmethod
    def of(cls, request: ForgetRequest, train: ArrayData, num_classes: int) -> "Forgotten":
        """The set one request names, concretely (a fraction becomes the ids it selects)."""
        if request.classes:
            request.validate(num_classes)
            return cls(classes=request.classes)
        split = request.resolve(train, num_classes)
        return cls(ids=split.forget_ids(train))

    def union(self, other: "Forgotten") -> "Forgotten":
        return Forgotten(self.classes + other.classes, np.concatenate([self.ids, other.ids]))

    def __bool__(self) -> bool:
        return bool(self.classes) or len(self.ids) > 0

    def __eq__(self, other) -> bool:
        return (isinstance(other, Forgotten) and self.classes == other.classes
                and np.array_equal(self.ids, other.ids))

    def mask(self, train: ArrayData) -> np.ndarray:
        """Which training samples this set covers (by class or by id)."""
        y, ids = train.y.cpu().numpy(), train.ids.cpu().numpy()
        return np.isin(y, self.classes) | np.isin(ids, self.ids)

    def describe(self) -> str:
        parts = (["classes " + ",".join(map(str, self.classes))] if self.classes else []) + \
                ([f"{len(self.ids)} ids"] if len(self.ids) else [])
        return " + ".join(parts) or "nothing"

    def ids_text(self) -> str:
        return "".join(f"{int(i)}\n" for i in self.ids)

    def ids_sha256(self) -> str:
        return hashlib.sha256(self.ids_text().encode()).hexdigest()
