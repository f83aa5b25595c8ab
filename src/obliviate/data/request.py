"""Forget requests: what to forget, validated before any work starts.

A request names the data to delete — classes, a random fraction of the training set, or explicit
sample ids — and ``resolve`` turns it into positions of the forget set, the retain set and a small
retain subset D_sub, failing early with a message that names the problem.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ObliviateError, RequestError
from ..io import read_regular
from .dataset import ArrayData

ID_MAX = 2**63 - 1  # ids are int64 everywhere downstream


def _int_ids(values, what: str) -> tuple[int, ...]:
    """Integers only, within int64: a float, bool or string is refused (never truncated or cast)."""
    if hasattr(values, "tolist"):  # a numpy array or tensor: its elements as Python values (floats stay floats)
        values = values.tolist()
        values = values if isinstance(values, list) else [values]
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise RequestError(f"{what} must be a list of integers, got {type(values).__name__}")
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise RequestError(f"{what} must be integers, got {v!r:.40} ({type(v).__name__})")
        if not -ID_MAX - 1 <= int(v) <= ID_MAX:
            raise RequestError(f"{what}: {int(v)} is out of range (ids are 64-bit integers)")
        out.append(int(v))
    return tuple(out)


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
        return cls(ids=_int_ids(ids, "sample ids"), **kw)

    @classmethod
    def from_ids_file(cls, path: str | Path, **kw) -> "ForgetRequest":
        """Read ids from a text file (whitespace/comma separated integers) or a ``.npy`` integer array.

        Only integers are ids: a float, bool, complex or string array is refused, not rounded or cast
        (12.7 silently becoming 12 would delete a sample nobody asked to delete).
        """
        p = Path(path)
        try:
            raw = read_regular(p, "forget-ids file")
        except ObliviateError as exc:
            raise RequestError(str(exc)) from None
        if p.suffix == ".npy":
            try:
                arr = np.load(io.BytesIO(raw), allow_pickle=False)
            except Exception as exc:  # numpy raises several kinds (and EOFError on an empty file)
                raise RequestError(f"forget-ids file {p}: not a list of integer ids ({type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''})") from None
            if not np.issubdtype(arr.dtype, np.integer):
                raise RequestError(f"forget-ids file {p}: not a list of integer ids (it holds {arr.dtype} values; "
                                   "ids are integers, nothing is rounded)")
            ids = arr.reshape(-1).tolist()
        else:
            try:
                ids = [int(t) for t in raw.decode("utf-8").replace(",", " ").split()]
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(f"forget-ids file {p}: not a list of integer ids ({str(exc)[:120]})") from None
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
        """A request as ``to_dict`` wrote it. Run records are received files: any other shape is a
        RequestError naming the field, not a traceback later."""
        if not isinstance(d, dict):
            raise RequestError(f"a forget request is a mapping, got {type(d).__name__}")
        d = dict(d)
        d["classes"] = _int_ids(d.get("classes") or (), "request classes")
        d["ids"] = _int_ids(d.get("ids") or (), "request ids")
        frac = d.get("fraction")
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float))):
            raise RequestError(f"request fraction must be a number, got {frac!r:.60}")
        for key in ("subset_per_class", "seed"):
            if key in d and (isinstance(d[key], bool) or not isinstance(d[key], int) or not 0 <= d[key] < 2**63):
                raise RequestError(f"request {key} must be an integer >= 0, got {d[key]!r:.60}")
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
