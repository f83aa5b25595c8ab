"""Issue 27: does UNSIR forget because of its noise? The same runs with the noise zeroed (digits, class 3).

    PYTHONPATH=src python benchmarks/unsir_zero_noise.py > benchmarks/results/unsir-zero-noise-2026-12-04.txt
"""
from __future__ import annotations

import torch

import obliviate.methods.unsir as unsir
from obliviate import ForgetRequest, unlearn
from obliviate.data import load_data
from obliviate.metrics.accuracy import accuracy
from obliviate.training import TrainConfig, train

SETTINGS = [("defaults", {}), ("no-distill", {"repair_distill": 0.0}),
            ("impair-only", {"repair_epochs": 0.0, "repair_min_steps": 0}),
            ("impair-only lr1e-2", {"repair_epochs": 0.0, "repair_min_steps": 0, "impair_lr": 1e-2})]


def main() -> None:
    torch.set_num_threads(1)
    data = load_data("digits")
    model = train(data, TrainConfig(model="cnn", epochs=8, batch_size=64, lr=0.05, seed=0)).model
    real = unsir.noise_for

    def zeros(ctx, p, salt=0x5EED):
        noise = real(ctx, p, salt)
        noise.x.zero_()
        return noise

    request = ForgetRequest.for_classes(3)
    test_forget, test_retain = request.resolve(data.train, 10).test_split(data.test)
    for name, params in SETTINGS:
        for kind, fn in (("real", real), ("zeros", zeros)):
            unsir.noise_for = fn
            for seed in (0, 1):
                out, _ = unlearn(model, data, request, method="unsir", params=params, seed=seed)
                print(name, kind, seed, "forget", round(accuracy(out, test_forget), 3),
                      "retain", round(accuracy(out, test_retain), 3), flush=True)


if __name__ == "__main__":
    main()
