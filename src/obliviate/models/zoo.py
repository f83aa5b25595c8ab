"""The registered architectures, each sized from the data set (channels, image size, classes)."""
from __future__ import annotations

import torch
from torch import nn

from .base import Classifier, ModelSpec, register_model


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- small CNN (tests) and MLP (tabular)
@register_model("cnn", "small 2-block CNN, for tests and tiny images (fast on CPU)")
def small_cnn(spec: ModelSpec) -> Classifier:
    c, width = spec.input_shape[0], int(spec.options.get("width", 32))
    body = nn.Sequential(
        _conv_bn(c, width), nn.MaxPool2d(2) if spec.input_shape[1] >= 16 else nn.Identity(),
        _conv_bn(width, 2 * width), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * width, 128), nn.ReLU(inplace=True),
    )
    return Classifier(body, 128, spec, cam_layer="body.2")


@register_model("mlp", "multi-layer perceptron for tabular data (or flattened images)")
def mlp(spec: ModelSpec) -> Classifier:
    n_in = 1
    for d in spec.input_shape:
        n_in *= d
    hidden = int(spec.options.get("hidden", 256))
    body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
    return Classifier(body, hidden, spec)


# ---------------------------------------------------------------- ResNet-18, CIFAR variant
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.conv2 = _conv_bn(cout, cout, 3, 1, act=False)
        self.short = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.short(x))


@register_model("resnet18", "ResNet-18, CIFAR variant (3x3 stem, no max-pool), 11M parameters")
def resnet18(spec: ModelSpec) -> Classifier:
    c, width = spec.input_shape[0], int(spec.options.get("width", 64))
    layers: list[nn.Module] = [_conv_bn(c, width)]
    cin = width
    for i, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
        stride = 1 if i == 0 else 2
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(body, cin, spec, cam_layer="body.8")


@register_model("resnet8", "ResNet-8, CIFAR style (3x3 stem, 3 stages of one basic block, widths 24/48/96), "
                           "174k parameters: 93.1 % on full Fashion-MNIST in 10 epochs with --augment flip, "
                           "7.7 min on 2 CPU cores (width 16: 92.4 %, 3.3 min)")
def resnet8(spec: ModelSpec) -> Classifier:
    """The smallest CIFAR ResNet (He et al. 2016, n=1): stem, one basic block per stage, global pooling.

    Chosen by measurement on 2 CPU cores for full-data benchmarks, where retraining has to be affordable
    yet the model good enough to serve (see benchmarks/README.md). ``width`` scales all stages.
    """
    c, w = spec.input_shape[0], int(spec.options.get("width", 24))
    body = nn.Sequential(_conv_bn(c, w), BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = Classifier(body, 4 * w, spec, cam_layer="body.3")
    model.channels_last_cpu = True  # measured on 2 CPU cores: width 16 3,100 vs 2,200, width 24 1,550 vs 860 images/s
    return model


# ---------------------------------------------------------------- All-CNN (Springenberg et al.)
@register_model("allcnn", "All-CNN-C (all-convolutional, as used by Bad Teacher / SCRUB), 1.4M parameters")
def allcnn(spec: ModelSpec) -> Classifier:
    c, w = spec.input_shape[0], int(spec.options.get("width", 96))
    w2 = 2 * w
    body = nn.Sequential(
        _conv_bn(c, w), _conv_bn(w, w), _conv_bn(w, w, 3, 2), nn.Dropout(0.0),
        _conv_bn(w, w2), _conv_bn(w2, w2), _conv_bn(w2, w2, 3, 2),
        _conv_bn(w2, w2), _conv_bn(w2, w2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(body, w2, spec, cam_layer="body.8")


# ---------------------------------------------------------------- MobileNetV2, CIFAR strides
class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


@register_model("mobilenetv2", "MobileNetV2 with CIFAR strides (stride-1 stem), 2.2M parameters")
def mobilenetv2(spec: ModelSpec) -> Classifier:
    c = spec.input_shape[0]
    cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[nn.Module] = [_conv_bn(c, 32)]
    cin = 32
    for t, cout, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
            cin = cout
    layers.append(_conv_bn(cin, 1280, 1))
    cam = f"body.{len(layers) - 1}"
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(body, 1280, spec, cam_layer=cam)


# ---------------------------------------------------------------- small ViT for 32x32
class ViTBody(nn.Module):
    def __init__(self, channels: int, size: int, patch: int, dim: int, depth: int, heads: int):
        super().__init__()
        if size % patch:
            patch = next(p for p in (4, 2, 1) if size % p == 0)
        self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        n = (size // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        return self.norm(self.encoder(tokens)[:, 0])


@register_model("vit", "small patch ViT for 32x32 (patch 4, dim 192, depth 6, 6 heads), 1.8M parameters")
def vit(spec: ModelSpec) -> Classifier:
    c, h = spec.input_shape[0], spec.input_shape[1]
    o = spec.options
    dim = int(o.get("dim", 192))
    body = ViTBody(c, h, int(o.get("patch", 4)), dim, int(o.get("depth", 6)), int(o.get("heads", 6)))
    return Classifier(body, dim, spec, cam_layer="body.patch_embed")
