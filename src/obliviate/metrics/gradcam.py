"""GradCAM (Selvaraju et al. 2017): which image regions drive the score of a class, before and after.

For the activation A (K channels) of ``model.cam_layer`` and a class c, the weights are the spatially
averaged gradients α_k = mean_ij ∂y_c/∂A_kij and the map is ReLU(Σ_k α_k A_k), upsampled (bilinear)
to the input size and divided by its maximum (an all-zero map stays zero). Shown side by side for the
original and the unlearned model on a few forget and retain samples: after forgetting, the evidence
for a forgotten sample's true class should fade while retain samples keep their maps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dataset import ArrayData, to_float
from ..data.pipeline import predict
from ..errors import ObliviateError
from .plots import save_figure


def gradcam(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None, *,
            layer: str | None = None, batch_size: int = 64) -> torch.Tensor:
    """GradCAM maps (N, H, W) in [0, 1] on the CPU for images ``x`` (uint8 or [0, 1] floats).

    ``labels`` picks the class explained per sample (default: the predicted class); ``layer`` a module
    name (default: ``model.cam_layer``). The model's parameters and their gradients are left untouched.
    """
    name = layer or getattr(model, "cam_layer", None)
    if not name:
        spec = getattr(model, "spec", None)
        raise ObliviateError(f"model {getattr(spec, 'name', type(model).__name__)!r} has no convolutional layer "
                             "for GradCAM (cam_layer is unset)")
    if x.dim() != 4:
        raise ObliviateError("GradCAM needs image inputs (N, C, H, W)")
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise ObliviateError(f"GradCAM layer {name!r} is not a submodule of the model") from exc
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps = []
    try:
        for i in range(0, len(x), batch_size):
            maps.append(_gradcam_batch(model, module, to_float(x[i:i + batch_size].to(device)),
                                       None if labels is None else labels[i:i + batch_size].to(device)))
    finally:
        model.train(was_training)
    return torch.cat(maps) if maps else torch.empty(0, *x.shape[-2:])


def _gradcam_batch(model, module, xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda mod, inp, out: captured.append(out))
    try:
        with torch.enable_grad():
            xin = xb.detach().requires_grad_(True)  # keeps the graph even if every parameter is frozen
            logits = model(xin).float()
            cls = logits.argmax(1) if yb is None else yb.long()
            act = captured[-1]
            if act.dim() != 4:
                raise ObliviateError(f"GradCAM layer output has shape {tuple(act.shape)}; expected (N, K, h, w)")
            grad, = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), act)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam.float(), size=xb.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return cam.detach().cpu()


def _pick(data: ArrayData, n: int, rng: np.random.Generator) -> ArrayData:
    if len(data) <= n:
        return data
    return data.subset(np.sort(rng.choice(len(data), n, replace=False)))


def plot_gradcam_grid(original: torch.nn.Module, unlearned: torch.nn.Module, forget: ArrayData,
                      retain: ArrayData, path: str | Path, *, n: int = 4, seed: int = 0,
                      class_names: list[str] | None = None) -> Path:
    """One PNG: rows = ``n`` forget then ``n`` retain samples; columns = image, original's map, unlearned's
    map, each map explaining the sample's true class (overlaid on the image, with the predicted label)."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(seed)
    rows = [("forget", s) for s in [_pick(forget, n, rng)] if len(s)] + \
           [("retain", s) for s in [_pick(retain, n, rng)] if len(s)]
    images, labels, kinds = [], [], []
    for kind, s in rows:
        images.append(s.x.cpu())
        labels.append(s.y.cpu())
        kinds += [kind] * len(s)
    x, y = torch.cat(images), torch.cat(labels)
    maps = {"original": gradcam(original, x, y), "unlearned": gradcam(unlearned, x, y)}
    preds = {k: _predict(m, x) for k, m in (("original", original), ("unlearned", unlearned))}
    names = class_names or [str(i) for i in range(int(y.max()) + 1)]
    fig = Figure(figsize=(6.0, 2.0 * len(x)), layout="constrained")
    axes = fig.subplots(len(x), 3, squeeze=False)
    img = to_float(x).numpy()
    for r in range(len(x)):
        pic = img[r].transpose(1, 2, 0)
        pic = pic[:, :, 0] if pic.shape[2] == 1 else pic
        cmap = "gray" if pic.ndim == 2 else None
        axes[r][0].imshow(pic, cmap=cmap)
        axes[r][0].set_title(f"{kinds[r]}: {names[int(y[r])][:12]}", fontsize=7)
        for c, key in enumerate(("original", "unlearned"), start=1):
            axes[r][c].imshow(pic, cmap=cmap)
            axes[r][c].imshow(maps[key][r].numpy(), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
            axes[r][c].set_title(f"{key} → {names[int(preds[key][r])][:12]}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    return save_figure(fig, path)


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return predict(model, x).argmax(1).cpu()
