"""Your own classifier under obliviate's interface: any ``nn.Module`` that maps a batch to logits.

Methods need more than ``forward``: FCALB, Boundary and Bad Teacher read the penultimate features
and the linear head, random-teacher methods and retraining need a freshly initialised copy, GradCAM
a convolutional layer. ``ForeignClassifier`` finds each on the user's module without changing it:

- the **head** is the ``nn.Linear`` whose output *is* the model's output, found by watching one
  forward pass (so a head defined before the backbone, or a second Linear elsewhere, is no trap);
- the **features** are the head's input, or the (flattened) output of a module the user names
  (``feature_layer="backbone.pool"``); a forward hook captures them and stops the pass there;
- a **fresh copy** comes from ``init`` (the user's constructor) or, without it, from a deep copy
  whose modules re-run ``reset_parameters``; a parameter no module can re-initialise is an error
  that says to pass ``init``.

The wrapped module is kept as ``net`` and changed in place by the methods; ``unwrap`` hands back
that module, an instance of the user's own class with its own state-dict keys.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..data.dataset import DataBundle
from ..data.user import as_bundle, fit_classes
from ..errors import CheckpointError, ObliviateError
from .base import ModelSpec

#: the model name a user's architecture is recorded under (``user:module:Class``); never in the registry
FOREIGN_PREFIX = "user:"


class _Stop(Exception):
    """Raised by the feature hook: the rest of the forward pass is not needed."""


def _qualname(net: nn.Module) -> str:
    cls = type(net)
    return f"{cls.__module__}:{cls.__qualname__}"


def _find_head(net: nn.Module, probe: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(name of the nn.Linear that produces the output, the output on ``probe``)."""
    produced: dict[int, str] = {}
    names = {id(m): n for n, m in net.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, inp, out: produced.__setitem__(id(out), names[id(mod)]))
             for m in net.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            out = net(probe)
    except Exception as exc:  # the user's forward on the data's shape: theirs to see, in one line
        raise ObliviateError(f"model {_qualname(net)} fails on a batch of 2 inputs shaped like the data "
                             f"{tuple(probe.shape[1:])}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                             ) from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor):
        raise ObliviateError(f"model {_qualname(net)} returns {type(out).__name__}, not a tensor of logits "
                             "[batch, classes]; wrap it so that forward returns the logits")
    return produced.get(id(out), ""), out


def _last_conv(net: nn.Module) -> str | None:
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


class ForeignClassifier(nn.Module):
    """A user's classifier ``net`` with what obliviate's methods read; see the module docstring.

    ``args`` are the keyword arguments ``type(net)(**args)`` was built with (recorded, so a saved run can be
    rebuilt from the user's class). ``input_shape`` is one sample's shape as the data gives it.
    ``normalize`` = (mean, std) per channel is applied before ``net`` when the data are raw and the model
    expects normalised inputs (the serving code then normalises too; the returned module is unchanged by it).
    """

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], *, feature_layer: str | None = None,
                 head: str | None = None, init: Callable[[], nn.Module] | None = None,
                 normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None, cam_layer: str | None = None,
                 args: dict | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ObliviateError(f"model must be a torch nn.Module, got {type(net).__name__}")
        self.net = net
        self.init = init
        self._options = {"feature_layer": feature_layer, "normalize": normalize, "cam_layer": cam_layer,
                         "args": dict(args or {})}
        self.input_shape = tuple(int(d) for d in input_shape)
        mean, std = normalize if normalize is not None else ((0.0,), (1.0,))
        shape = (1, -1, 1, 1) if len(self.input_shape) == 3 else (1, -1)
        self._norm = normalize is not None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape), persistent=False)
        self._locate(head, feature_layer)  # sets head_name and feature_layer
        self.num_classes = self.head.out_features
        self.feature_dim = self.head.in_features
        self.cam_layer = f"net.{cam_layer}" if cam_layer else (f"net.{_last_conv(net)}" if _last_conv(net) else None)
        self.spec = ModelSpec(f"{FOREIGN_PREFIX}{_qualname(net)}", self.input_shape, self.num_classes,
                              tuple(float(v) for v in mean), tuple(float(v) for v in std),
                              {"head": self.head_name, "feature_layer": self.feature_layer, "cam_layer": cam_layer,
                               "normalize": normalize is not None, "args": dict(args or {})})

    def _locate(self, head: str | None, feature_layer: str | None) -> None:
        net = self.net
        device = next((q.device for q in net.parameters()), torch.device("cpu"))
        probe = torch.rand(2, *self.input_shape, device=device)
        was_training = net.training
        net.eval()
        try:
            found, out = _find_head(net, self._prep(probe))
        finally:
            net.train(was_training)
        if out.dim() != 2 or out.shape[0] != 2:
            raise ObliviateError(f"model {_qualname(net)} maps a batch of 2 inputs {tuple(self.input_shape)} to "
                                 f"shape {tuple(out.shape)}; obliviate needs logits of shape [batch, classes]")
        name = head or found
        if not name:
            raise ObliviateError(f"model {_qualname(net)}: its output is not produced by an nn.Linear, so the "
                                 "classification head cannot be found; pass head='name.of.final.linear'")
        module = self._submodule(name, "head")
        if not isinstance(module, nn.Linear) or module.out_features != out.shape[1]:
            raise ObliviateError(f"model {_qualname(net)}: head {name!r} is not an nn.Linear with "
                                 f"{out.shape[1]} outputs (the model's output width)")
        if feature_layer is not None:
            self._submodule(feature_layer, "feature layer")
        self.head_name, self.feature_layer = name, feature_layer or name
        if head is not None or feature_layer is not None:  # found automatically, the split holds by construction
            self._check_split(probe, out)

    def _check_split(self, probe: torch.Tensor, out: torch.Tensor) -> None:
        """Methods compute logits as head(features): that must be the model's output, or they would change
        another function than the one served."""
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                feats = self.features(probe)
                ok = feats.shape[1] == self.head.in_features and torch.allclose(self.head(feats), out, atol=1e-5)
        finally:
            self.net.train(was_training)
        if not ok:
            raise ObliviateError(f"model {_qualname(self.net)}: {self.head_name!r} applied to the output of "
                                 f"{self.feature_layer!r} is not the model's output (a layer sits between them or "
                                 "after the head); name the module the head reads as feature_layer, and the layer "
                                 "that produces the logits as head")

    def _submodule(self, name: str, what: str) -> nn.Module:
        try:
            return self.net.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in self.net.named_modules() if n][:12]
            raise ObliviateError(f"model {_qualname(self.net)} has no {what} {name!r}; its modules include: "
                                 f"{', '.join(known)}") from None

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self._norm else x

    @property
    def head(self) -> nn.Linear:
        return self.net.get_submodule(self.head_name)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's input (or the named feature layer's output), flattened to [batch, features]."""
        module = self.net.get_submodule(self.feature_layer)
        captured: list[torch.Tensor] = []

        def grab(inputs_or_output):
            captured.append(inputs_or_output)
            raise _Stop

        if self.feature_layer == self.head_name:
            handle = module.register_forward_pre_hook(lambda mod, inp: grab(inp[0]))
        else:
            handle = module.register_forward_hook(lambda mod, inp, out: grab(out))
        try:
            self.net(self._prep(x))
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ObliviateError(f"model {_qualname(self.net)}: the forward pass never reached {self.feature_layer!r}")
        return captured[0].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prep(x))

    def wants_channels_last(self, device: torch.device) -> bool:
        return False  # the user's model runs in the memory format the user gave it

    def fresh(self) -> "ForeignClassifier":
        """The same architecture, freshly initialised (from the current torch RNG, so callers can seed it)."""
        if self.init is not None:
            net = self.init()
            if type(net) is not type(self.net):
                raise ObliviateError(f"init returned a {type(net).__name__}, not a {type(self.net).__name__}")
            net = net.to(next(self.net.parameters()).device)
        else:
            net = copy.deepcopy(self.net)
            reset = set()
            for m in net.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                    reset.update(id(q) for q in m.parameters(recurse=False))
            stale = [n for n, q in net.named_parameters() if id(q) not in reset]
            if stale:
                raise ObliviateError(f"model {_qualname(self.net)}: cannot re-initialise {', '.join(stale[:4])} "
                                     "(no reset_parameters); pass init=YourClass (a callable returning a fresh model)")
        return self._like(net)

    def _like(self, net: nn.Module) -> "ForeignClassifier":
        return ForeignClassifier(net, self.input_shape, feature_layer=self._options["feature_layer"],
                                 head=self.head_name, init=self.init, normalize=self._options["normalize"],
                                 cam_layer=self._options["cam_layer"], args=self._options["args"])

    def unwrap(self) -> nn.Module:
        return self.net


def adopt(model: nn.Module, data, **options) -> tuple[nn.Module, DataBundle]:
    """(obliviate's view of ``model``, ``data`` as a DataBundle): a user's own module is wrapped (``options``:
    feature_layer / head / init / normalize), a user's tensors or Datasets become a bundle sized to the
    model's head. A zoo model and a DataBundle pass unchanged."""
    bundle = as_bundle(data)
    options = {k: v for k, v in options.items() if v is not None}
    if hasattr(model, "spec") and hasattr(model, "features"):
        if options:
            raise ObliviateError(f"{', '.join(sorted(options))} only apply to your own model, not to an obliviate "
                                 f"{model.spec.name!r} model")
        return model, bundle
    wrapped = wrap(model, bundle.input_shape, **options)
    return wrapped, fit_classes(bundle, wrapped.num_classes)


def wrap(net: nn.Module, input_shape: tuple[int, ...], **options) -> ForeignClassifier:
    """``net`` under obliviate's interface (a zoo model or an already wrapped one is returned as it is)."""
    if isinstance(net, ForeignClassifier) or hasattr(net, "spec") and hasattr(net, "features"):
        return net
    return ForeignClassifier(net, input_shape, **options)


def load_state(net: nn.Module, state: dict, what: str) -> None:
    """``net.load_state_dict(state)`` with one line naming what does not fit (keys missing, extra, shapes)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{what} is not a state dict (name -> tensor)")
    own = net.state_dict()
    missing, extra = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        parts = [f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}" for label, keys in
                 (("missing", missing), ("unexpected", extra), ("other shape for", sorted(shapes))) if keys]
        raise CheckpointError(f"{what} do not fit {_qualname(net)}: {'; '.join(parts)}")
    net.load_state_dict(state)


def construct(model_class: Callable[..., nn.Module], args: dict, error: type[Exception] = ObliviateError,
              what: str | None = None, hint: str = "") -> nn.Module:
    """``model_class(**args)``: an error in the user's constructor is theirs to see, as one line naming the
    class (or ``what``), the arguments and ``hint``."""
    try:
        return model_class(**args)
    except Exception as exc:  # any error of the user's code
        name = what or f"{getattr(model_class, '__module__', '?')}:{getattr(model_class, '__qualname__', model_class)}"
        raise error(f"building {name} with {args} failed: {type(exc).__name__}: {exc}{hint}") from None


def build_user_model(model_class: Callable[..., nn.Module], args: dict, state: dict, where: str) -> nn.Module:
    """``model_class(**args)`` holding the weights ``state`` read from ``where``; one line for either failure."""
    net = construct(model_class, args, CheckpointError)
    load_state(net, state, f"the weights in {where}")
    return net


def rebuild(spec: ModelSpec, state: dict, model_class: Callable[..., nn.Module] | None,
            where: str) -> ForeignClassifier:
    """A saved user's model: ``model_class(**args)`` with the saved weights, under the recorded interface."""
    recorded = spec.name[len(FOREIGN_PREFIX):]
    if model_class is None:
        raise CheckpointError(f"{where} holds your own model {recorded}: pass its class (CLI: --model-class "
                              f"{recorded}); obliviate imports it, which runs that module's code")
    given = f"{getattr(model_class, '__module__', '?')}:{getattr(model_class, '__qualname__', model_class)}"
    if given.split(":")[-1] != recorded.split(":")[-1]:
        raise CheckpointError(f"{where} holds a {recorded} model, but the class given is {given}")
    args = dict(spec.options.get("args") or {})
    net = build_user_model(model_class, args, state, where)
    o = spec.options
    return ForeignClassifier(net, spec.input_shape, feature_layer=o.get("feature_layer"), head=o.get("head"),
                             init=lambda: model_class(**args), cam_layer=o.get("cam_layer"), args=args,
                             normalize=(spec.mean, spec.std) if o.get("normalize") else None)
