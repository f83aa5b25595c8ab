"""Training throughput: device-resident pipeline vs a DataLoader-style pipeline vs the synthetic ceiling.

Three ways to feed the same training step (same model, batch, optimiser, bf16 autocast and
channels-last on CUDA):

* ``synthetic``  – one random batch already on the device: the ceiling the model itself allows;
* ``resident``   – obliviate's ``BatchStream``: the split on the device, batched crop+flip as tensor ops;
* ``dataloader`` – torch ``DataLoader`` over per-image Python transforms (random crop + flip in numpy),
  worker processes, pinned memory, host-to-device copy: the usual torchvision-style recipe.

Usage::

    python benchmarks/train_throughput.py --data-root ../shared/data/cifar10-jpeg.npz --model resnet18 \
        --batch-size 512 --steps 200 --workers 8

Prints a table and one JSON line (``--json PATH`` also writes it).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from obliviate.data import BatchStream, load_data
from obliviate.data.pipeline import autocast
from obliviate.env import pick_device, sync, versions
from obliviate.io import write_json
from obliviate.models import model_for
from obliviate.training import OptimConfig, make_optimizer


class PerImageDataset(torch.utils.data.Dataset):
    """Per-image crop+flip in numpy, as a torchvision transform pipeline would do it."""

    def __init__(self, x: np.ndarray, y: np.ndarray, pad: int = 4):
        self.x, self.y, self.pad = x, y, pad

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = np.pad(self.x[i], ((0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        dy, dx = np.random.randint(0, 2 * self.pad + 1, 2)
        h, w = self.x.shape[2:]
        img = img[:, dy:dy + h, dx:dx + w]
        if np.random.rand() < 0.5:
            img = img[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)).float().div_(255.0), int(self.y[i])


def make_step(model, device):
    opt = make_optimizer(model.parameters(), OptimConfig("sgd", 0.05, 0.9, 5e-4, "constant"))

    def step(x, y):
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def timed(run, steps: int, batch: int, device, warmup: int) -> float:
    it = run()
    for _ in range(warmup):
        next(it)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--data-root", default="../shared/data/cifar10-jpeg.npz")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    ap.add_argument("--only", default="synthetic,resident,dataloader")
    ap.add_argument("--json", default=None)
    return ap.parse_args()


def _feeds(step, bundle, device: torch.device, b: int, workers: int) -> dict:
    """The three ways to feed the model, each an endless generator that runs one step per ``next``."""
    cl = device.type == "cuda"

    def synthetic():
        x = torch.rand(b, *bundle.input_shape, device=device)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, bundle.num_classes, (b,), device=device)
        while True:
            step(x, y)
            yield

    def resident():
        stream = BatchStream(bundle.train.to(device), b, augment="crop-flip", drop_last=True, channels_last=cl)
        epoch = 0
        while True:
            for batch in stream.epoch(epoch):
                step(batch.x, batch.y)
                yield
            epoch += 1

    def dataloader():
        ds = PerImageDataset(bundle.train.x.numpy(), bundle.train.y.numpy())
        dl = torch.utils.data.DataLoader(ds, batch_size=b, shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
        while True:
            for x, y in dl:
                x = x.to(device, non_blocking=True)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                step(x, y.to(device, non_blocking=True))
                yield

    return {"synthetic": synthetic, "resident": resident, "dataloader": dataloader}


def main() -> None:
    args = _args()
    device = pick_device(args.device)
    bundle = load_data(args.dataset, root=args.data_root, val_fraction=0.0)
    model = model_for(args.model, bundle).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    net = torch.compile(model) if args.compile and device.type == "cuda" else model
    b = args.batch_size
    results = {}
    for name, fn in _feeds(make_step(net, device), bundle, device, b, args.workers).items():
        if name in args.only.split(","):
            results[name] = timed(fn, args.steps, b, device, args.warmup)
            print(f"{name:>10}: {results[name]:10.0f} images/s", flush=True)
    if "synthetic" in results:
        for name in ("resident", "dataloader"):
            if name in results:
                print(f"{name:>10}: {results[name] / results['synthetic']:.1%} of the synthetic ceiling")
    record = {"images_per_s": results, "model": args.model, "batch_size": b, "steps": args.steps,
              "device": str(device), "workers": args.workers, "compile": args.compile, "versions": versions()}
    print(json.dumps(record))
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
