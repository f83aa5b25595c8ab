"""The classifier wrapper every model shares, and the model registry.

Every model is ``normalise → body → head``. Inputs are in [0, 1] (images) or raw features (tabular);
normalisation lives inside the model as buffers, so methods that synthesise inputs (UNSIR noise,
FGSM steps, GradCAM) work in one input space and a saved model carries its own statistics.
``features`` exposes the penultimate layer (FCALB's feature constraint) and ``cam_layer`` names the
last convolutional block (GradCAM).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import ObliviateError


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild a model: the registry name and the data set's shape."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"], d["mean"], d["std"] = list(self.input_shape), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(d["name"], tuple(d["input_shape"]), int(d["num_classes"]), tuple(d["mean"]), tuple(d["std"]),
                   dict(d.get("options", {})))


class Classifier(nn.Module):
    def __init__(self, body: nn.Module, feature_dim: int, spec: ModelSpec, cam_layer: str | None = None):
        super().__init__()
        shape = (1, -1, 1, 1) if len(spec.input_shape) == 3 else (1, -1)
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(shape))
        self.body = body
        self.head = nn.Linear(feature_dim, spec.num_classes)
        self.spec = spec
        self.feature_dim = feature_dim
        self.cam_layer = cam_layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def wants_channels_last(self, device: torch.device) -> bool:
        """Channels-last memory is faster on CUDA for every conv net; on CPU only for models measured
        faster with it (``channels_last_cpu``: resnet8 runs 1.4x faster on 2 cores), since oneDNN's
        choice of kernel differs by layer shape and a slower format would also change CPU numerics."""
        if len(self.spec.input_shape) != 3:
            return False
        return device.type == "cuda" or (device.type == "cpu" and self.channels_last_cpu)

    channels_last_cpu: bool = False

    def fresh(self) -> "Classifier":
        """The same architecture, freshly initialised from the current torch RNG (random teachers, retraining)."""
        return build_model(self.spec)

    def unwrap(self) -> nn.Module:
        """What a caller gets back: a zoo model is its own class (a user's model is unwrapped, see foreign)."""
        return self


Builder = Callable[[ModelSpec], Classifier]


@dataclass(frozen=True)
class ModelInfo:
    """A registered architecture: its builder and the one line ``obliviate models`` shows."""

    name: str
    build: Builder
    summary: str


MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, summary: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn`` as architecture ``name``; a second architecture of one name is refused
    (it would silently replace the first, and runs recorded under that name would rebuild the wrong model)."""
    def deco(fn: Builder) -> Builder:
        if name in MODELS and MODELS[name].build is not fn:
            raise ObliviateError(f"model name {name!r} is already registered (by {MODELS[name].build.__qualname__})")
        MODELS[name] = ModelInfo(name, fn, summary)
        return fn

    return deco


def build_model(spec: ModelSpec | str, *, input_shape=None, num_classes=None, mean=None, std=None,
                **options) -> Classifier:
    """Build a model by registry name for a data set's shape (``build_model("resnet18", ...)``)."""
    if isinstance(spec, str):
        if input_shape is None or num_classes is None:
            raise ObliviateError("build_model by name needs input_shape and num_classes")
        channels = input_shape[0]
        spec = ModelSpec(spec, tuple(input_shape), int(num_classes),
                         tuple(mean or [0.0] * channels), tuple(std or [1.0] * channels), options)
    if spec.name not in MODELS:
        raise ObliviateError(f"unknown model {spec.name!r}; choose one of: {', '.join(sorted(MODELS))}")
    tabular = len(spec.input_shape) == 1
    if tabular and spec.name != "mlp":
        raise ObliviateError(f"model {spec.name!r} needs image data; use 'mlp' for tabular data")
    if not tabular and spec.name == "mlp" and spec.options.get("flatten") is False:
        raise ObliviateError("mlp on images needs flatten")
    return MODELS[spec.name].build(spec)


def model_for(name: str, bundle, **options) -> Classifier:
    """Build ``name`` sized for a ``DataBundle`` (channels, image size, classes, normalisation)."""
    return build_model(ModelSpec(name, bundle.input_shape, bundle.num_classes, bundle.mean, bundle.std, options))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
