"""The unlearning-method interface: a registry, typed parameters, and data access by declaration.

A method is one module with one ``Method`` subclass decorated by ``@register``. It declares what it
may read (``needs``): the forget set, only the forget ids, the full retain set, only a retain subset
D_sub, the training snapshots. ``unlearn`` builds a ``MethodContext`` that hands over exactly those;
reaching for anything else raises ``AccessError``. The context holds nothing that leads back to the
data: no data-set name or spec to reload, no run directory (its ``run.json`` names the data) unless
snapshots were declared, no forget ids unless the forget set or its ids were. Zero-glance methods
(UNSIR, FCALB by default) may declare none of those and take class requests only, so they cannot
reach a forget sample even by mistake: they get the classes to forget, never ids or inputs.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import pkgutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.dataset import ArrayData, DataBundle
from ..data.request import ForgetRequest, ForgetSplit, Forgotten
from ..data.splits import default_augment
from ..env import pick_device, seed_everything, sync
from ..errors import AccessError, ObliviateError
from ..finite import require_finite
from ..models import Classifier, ForeignClassifier
from ..models.foreign import adopt
from ..params import ConversionError, check_fields, convert
from ..training.checkpoint import Snapshots

FORGET, RETAIN, RETAIN_SUBSET, SNAPSHOTS = "forget", "retain", "retain_subset", "snapshots"
#: ``ctx.info`` key a method sets True when its model was trained from scratch without every forgotten sample
#: (deletion by construction; the verdict counts it as a passed check)
TRAINED_WITHOUT = "trained_without_forgotten"
FORGET_IDS = "forget_ids"  # the ids of D_f without its samples (DeepObliviate: which blocks to retrain)
ACCESS_KINDS = frozenset({FORGET, FORGET_IDS, RETAIN, RETAIN_SUBSET, SNAPSHOTS})
#: what leads to a forget sample: its inputs, its ids, or the run directory (whose run.json names the data)
NOT_ZERO_GLANCE = frozenset({FORGET, FORGET_IDS, SNAPSHOTS})


@dataclass
class MethodContext:
    """What a method gets. Data fields are reachable only if the method declared them."""

    model: Classifier  # a private copy of the original model, on ``device``; methods may change it in place
    original: Classifier  # frozen copy of θ₀ (eval mode), for teachers and distances
    request: ForgetRequest
    forget_classes: tuple[int, ...]
    num_classes: int
    device: torch.device
    seed: int
    augment: str = "none"
    train_config: Any = None  # the original run's TrainConfig (a recipe: names no data), when known
    train_fn: Any = None  # a user's own training loop, train_fn(model, TensorDataset): retraining their model
    declared: frozenset = frozenset()
    _data: dict = field(default_factory=dict, repr=False)
    touched: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # method-specific facts for the record (e.g. blocks retrained)

    def _get(self, kind: str):
        if kind not in self.declared:
            declared = sorted(self.declared) or "none"
            raise AccessError(f"method did not declare access to {kind!r} (declared: {declared})")
        value = self._data.get(kind)
        if value is None:
            raise AccessError(f"{kind!r} is not available for this request")
        if isinstance(value, (ArrayData, np.ndarray)):
            self.touched[kind] = len(value)
        else:
            self.touched[kind] = True
        return value

    @property
    def forget(self) -> ArrayData:
        """D_f: the samples to forget (only for methods that declared ``forget``)."""
        return self._get(FORGET)

    @property
    def forget_ids(self) -> np.ndarray:
        """Ids of D_f: for methods that declared ``forget_ids``, or ``forget`` (then read from D_f itself)."""
        if FORGET_IDS not in self.declared and FORGET in self.declared:
            return self.forget.ids.cpu().numpy()
        return self._get(FORGET_IDS)

    @property
    def retain(self) -> ArrayData:
        """D_r: every training sample that stays."""
        return self._get(RETAIN)

    @property
    def retain_subset(self) -> ArrayData:
        """D_sub: a small per-class sample of D_r (``ForgetRequest.subset_per_class``)."""
        return self._get(RETAIN_SUBSET)

    @property
    def snapshots(self) -> Snapshots:
        """The original run's training snapshots (its recipe, block assignment, θ_j); AccessError without one."""
        return self._get(SNAPSHOTS)

    @property
    def retained_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c not in self.forget_classes]

    def generator(self, salt: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed * 7_919 + salt)
        return g


UnlearnContext = MethodContext  # the earlier name, kept for code that imports it


class Method:
    """Base class. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    zero_glance: ClassVar[bool] = False
    request_kinds: ClassVar[frozenset[str]] = frozenset({"class", "fraction", "ids"})
    Params: ClassVar[type] = None  # a dataclass with defaults
    presets: ClassVar[dict[str, dict]] = {}

    def needs_for(self, params, train_config=None) -> frozenset[str]:
        """What this call may read; a method whose needs depend on its parameters or the recipe overrides it.

        Kinds in ``needs`` are required; a kind only ``needs_for`` adds is optional: ``snapshots``
        without a run directory is then unavailable (``AccessError`` on access) instead of an error.
        """
        return self.needs

    def run(self, ctx: MethodContext, p: Any) -> Classifier:  # pragma: no cover - interface
        """Unlearn in ``ctx.model`` (or build a new model) and return it; ``p`` is an instance of ``Params``."""
        raise NotImplementedError


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: validate the declaration and add the method to the registry by ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    unknown = set(cls.needs) - ACCESS_KINDS
    if unknown:
        raise TypeError(f"{cls.name}: unknown access kinds {unknown}")
    if cls.zero_glance and NOT_ZERO_GLANCE & set(cls.needs):
        raise TypeError(f"{cls.name} is zero-glance and may not declare access to "
                        f"{', '.join(sorted(NOT_ZERO_GLANCE & set(cls.needs)))} (it would lead to forget samples)")
    if cls.zero_glance and set(cls.request_kinds) != {"class"}:
        raise TypeError(f"{cls.name} is zero-glance: it takes class requests only (a sample request names ids)")
    if cls.Params is None or not dataclasses.is_dataclass(cls.Params):
        raise TypeError(f"{cls.name}: Params must be a dataclass")
    if cls.name in METHODS and METHODS[cls.name] is not cls:  # a second name would silently replace the first
        raise ObliviateError(f"method name {cls.name!r} is already registered (by {METHODS[cls.name].__qualname__} "
                             f"in {METHODS[cls.name].__module__}); choose another name")
    METHODS[cls.name] = cls
    return cls


_loaded = False


def load_all() -> None:
    """Import every module of this package so its ``@register`` runs."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in ("base", "common"):
            importlib.import_module(f"{__package__}.{info.name}")
    _loaded = True


def list_methods() -> list[type[Method]]:
    load_all()
    return [METHODS[k] for k in sorted(METHODS)]


def get_method(name: str) -> Method:
    load_all()
    if name not in METHODS:
        raise ObliviateError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}")
    return METHODS[name]()


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Turn a CLI string into the parameter's declared type."""
    try:
        return convert(value, annotation, parse=True)
    except ConversionError as exc:
        raise ObliviateError(f"parameter {key}={value!r}: expected {exc.type_name}") from None


def resolve_params(method: Method, params: dict | None) -> Any:
    """Defaults ← preset ← user values, with unknown names, bad types and values outside the ranges the
    ``Params`` fields declare (``obliviate.params.param``) rejected by name, before any work is done."""
    params = dict(params or {})
    values: dict[str, Any] = {}
    preset = params.pop("preset", None)
    if preset is not None:
        if preset not in method.presets:
            raise ObliviateError(f"{method.name}: unknown preset {preset!r}; "
                                 f"choose one of: {', '.join(method.presets) or 'none defined'}")
        values.update(method.presets[preset])
    hints = typing.get_type_hints(method.Params)
    names = {f.name for f in dataclasses.fields(method.Params)}
    for k, v in params.items():
        key = k.replace("-", "_")
        if key not in names:
            raise ObliviateError(f"{method.name}: unknown parameter {k!r}; valid: {', '.join(sorted(names))}")
        values[key] = _convert(v, hints.get(key, str), k)
    p = method.Params(**values)
    check_fields(p, method.name)
    return p


#: Attribute on a model returned by ``unlearn``: the ``Forgotten`` union it has forgotten so far, so a
#: later ``unlearn`` on it excludes every earlier request too (``api.load_checkpoint`` sets it from run.json).
FORGOTTEN_ATTR = "obliviate_forgotten"


def _forgotten_in(available: dict, everything: Forgotten) -> dict[str, int]:
    """Per data set handed over: how many of its samples belong to what is forgotten (0 but for D_f)."""
    out = {}
    for kind, value in available.items():
        if isinstance(value, ArrayData):
            y, ids = value.y.cpu().numpy(), value.ids.cpu().numpy()
            out[kind] = int((np.isin(y, everything.classes) | np.isin(ids, everything.ids)).sum())
    return out


def _check_fits(m: Method, model: Classifier, data: DataBundle, request: ForgetRequest) -> None:
    if request.kind not in m.request_kinds:
        raise ObliviateError(f"method {m.name!r} handles {', '.join(sorted(m.request_kinds))} requests, "
                             f"not a {request.kind} request")
    if tuple(data.input_shape) != tuple(model.spec.input_shape) or data.num_classes != model.num_classes:
        raise ObliviateError(f"model expects input {tuple(model.spec.input_shape)} with {model.num_classes} classes "
                             f"but data set {data.name!r} has {data.input_shape} with {data.num_classes}")


def _check_snapshots(m: Method, model: Classifier, run_path) -> None:
    """A user's model has block snapshots only when obliviate block-trained it: say how to get them."""
    if SNAPSHOTS in m.needs and isinstance(model, ForeignClassifier) and run_path is None:
        raise ObliviateError(f"{m.name} rebuilds from the snapshots of obliviate's block-incremental training; "
                             "a model trained outside obliviate has none: block-train yours with "
                             "obliviate.train(data, TrainConfig(blocks=B), out=..., net=YourNet()) (CLI: "
                             "obliviate train --model-class ... --blocks B), or use another method")


def _available(m: Method, needs: frozenset, data: DataBundle, split: ForgetSplit, forget_pos: np.ndarray,
               dev: torch.device, run_path: str | Path | None) -> dict[str, Any]:
    """Exactly the data kinds the method declared, on ``dev``; nothing else is built."""
    train_dev = data.train.to(dev)
    available: dict[str, Any] = {}
    if FORGET in needs:
        available[FORGET] = train_dev.subset(forget_pos)
    if FORGET_IDS in needs:
        available[FORGET_IDS] = data.train.ids.cpu().numpy()[forget_pos]
    if RETAIN in needs:
        available[RETAIN] = split.retain(train_dev)
    if RETAIN_SUBSET in needs:
        available[RETAIN_SUBSET] = split.retain_subset(train_dev)
    if SNAPSHOTS in needs:
        if run_path is None and SNAPSHOTS in m.needs:
            raise ObliviateError(f"method {m.name!r} needs the training snapshots: pass the original run directory")
        available[SNAPSHOTS] = Snapshots(Path(run_path)) if run_path is not None else None
    return available


def _working_copies(start: Classifier, dev: torch.device) -> tuple[Classifier, Classifier]:
    """(the copy the method may change, a frozen eval-mode copy of θ₀); the caller's model is untouched."""
    work = copy.deepcopy(start).to(dev)
    original = copy.deepcopy(start).to(dev).eval()
    for q in original.parameters():
        q.requires_grad_(False)
    if work.wants_channels_last(dev):  # the training memory format: much faster for some models (resnet8 on CPU)
        work = work.to(memory_format=torch.channels_last)
        original = original.to(memory_format=torch.channels_last)
    return work, original


def unlearn(model: torch.nn.Module, data, request: ForgetRequest, method: str = "unsir", *,
            params: dict | None = None, device: str | torch.device | None = None, seed: int = 0,
            train_config=None, train_fn=None, run_path: str | Path | None = None, forgotten: Forgotten | None = None,
            root_model: Classifier | None = None, **model_options) -> tuple[torch.nn.Module, dict]:
    """Make ``model`` forget what ``request`` names, with ``method``; return (new model, record).

    The input model is not modified. The record says which method and parameters ran, how long it took
    (wall seconds, GPU synchronised), peak GPU memory, and which data the method actually touched.
    ``forgotten`` is what ``model`` already forgot (default: what a model returned by ``unlearn`` or
    loaded from an unlearned run carries): every data set the method reads excludes it, so earlier
    requests stay forgotten. A method that rebuilds from the training snapshots (DeepObliviate) starts
    from ``root_model``, the original, and ``run_path`` (the original run), forgetting the whole union.

    ``model`` may be any classifier ``nn.Module`` of the user's (output [batch, classes]); it comes back
    as the same class with the same state-dict keys. ``model_options`` (feature_layer, head, init,
    normalize) help find its parts (see ``models.foreign``). ``data`` may be a DataBundle, tensors
    (x_train, y_train, x_test, y_test) or Datasets. ``train_fn(model, TensorDataset)`` is a user's
    training loop for retraining their model (else ``train_config``).
    """
    m = get_method(method)
    p = resolve_params(m, params)
    user_module = not isinstance(model, (Classifier, ForeignClassifier))
    carried = getattr(model, FORGOTTEN_ATTR, None)
    model, data = adopt(model, data, **model_options)
    if carried is not None and getattr(model, FORGOTTEN_ATTR, None) is None:
        setattr(model, FORGOTTEN_ATTR, carried)  # a user's module returned by unlearn() keeps what it forgot
    if root_model is not None:
        root_model, _ = adopt(root_model, data, **model_options)
    _check_fits(m, model, data, request)
    _check_snapshots(m, model, run_path)
    forgotten = forgotten if forgotten is not None else getattr(model, FORGOTTEN_ATTR, None) or Forgotten()
    split: ForgetSplit = request.resolve(data.train, data.num_classes, forgotten)
    dev = pick_device(device)
    needs = m.needs_for(p, train_config)
    if m.zero_glance and NOT_ZERO_GLANCE & needs:
        raise ObliviateError(f"{m.name} is zero-glance but its parameters ask for {sorted(NOT_ZERO_GLANCE & needs)}")
    restart = bool(forgotten) and SNAPSHOTS in needs
    if restart and root_model is None:
        raise ObliviateError(f"{m.name} rebuilds from the original's snapshots, and this model already forgot "
                             f"{forgotten.describe()}: pass root_model (the original) or use forget() on the run")
    forget_pos = np.union1d(split.forget_pos, split.prior_pos) if restart else split.forget_pos
    everything = forgotten.union(Forgotten.of(request, data.train, data.num_classes))
    available = _available(m, needs, data, split, forget_pos, dev, run_path)
    work, original = _working_copies(root_model if restart else model, dev)
    classes = tuple(request.classes) + tuple(c for c in forgotten.classes if c not in request.classes)
    shown = request if {FORGET, FORGET_IDS} & needs else dataclasses.replace(request, ids=())  # ids only if declared
    ctx = MethodContext(model=work, original=original, request=shown, forget_classes=classes,
                         num_classes=data.num_classes, device=dev, seed=seed,
                         augment=(train_config.augment if train_config is not None and train_config.augment
                                  else default_augment(data.name)),
                         train_config=train_config, train_fn=train_fn, declared=needs, _data=available)
    result, seconds = _timed_run(m, ctx, p, seed, dev)
    if user_module:
        result = result.unwrap()  # the user's own class, own state-dict keys
    setattr(result, FORGOTTEN_ATTR, everything)
    record = {
        "method": m.name, "params": dataclasses.asdict(p), "seconds": seconds, "seed": seed,
        "request": request.to_dict(), "request_kind": request.kind, "zero_glance": m.zero_glance,
        "declared": sorted(needs), "touched": dict(ctx.touched), "info": dict(ctx.info),
        "forget_size": int(len(split.forget_pos)), "retain_size": int(len(split.retain_pos)),
        "peak_gpu_memory_mb": (torch.cuda.max_memory_allocated(dev) / 2**20) if dev.type == "cuda" else None,
        "device": str(dev),
    }
    record.update(forgotten_in_data=_forgotten_in(available, everything), forgotten_before=forgotten.describe(),
                  restarted_from_original=restart)
    return result, record


def _timed_run(m: Method, ctx: MethodContext, p, seed: int, dev: torch.device) -> tuple[torch.nn.Module, float]:
    """Run the method alone on the clock (GPU synchronised both ends) and refuse non-finite weights."""
    seed_everything(seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sync(dev)
    t0 = time.perf_counter()
    result = m.run(ctx, p)
    sync(dev)
    seconds = time.perf_counter() - t0
    result.eval()
    require_finite(result, "the unlearned model", diverged_hint(m.name, dataclasses.asdict(p)))
    return result, seconds


def diverged_hint(method: str, params: dict) -> str:
    """The fix for a diverged method, naming its learning rate(s): what a user changes first."""
    lrs = {k: v for k, v in params.items() if (k == "lr" or k.endswith("_lr")) and isinstance(v, (int, float))}
    now = ", ".join(f"{k}={v:g}" for k, v in lrs.items())
    return (f"{method} diverged; lower its learning rate "
            f"(--param {next(iter(lrs), 'lr')}=...{', now ' + now if now else ''})"
            " and re-run; nothing was saved")
