"""Backdoor verification runs: plant a trigger at training time, delete it later, and measure.

``obliviate train --plant-backdoor N --backdoor-target C`` poisons N training samples (seeded by the
run's seed; in block mode all from one block) with ``metrics.backdoor.plant_backdoor``. The poisoned
data are not on disk: the run records what was planted (``run.json``: ``data.spec.backdoor`` and a
``backdoor`` summary) and every later reader (``load_checkpoint``, ``verify``) re-plants the same
trigger on the same ids, so the data hash matches the recorded one. The ids also go to
``backdoor_ids.txt``, the format ``forget --forget-ids`` reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataBundle
from .errors import CheckpointError, ObliviateError
from .metrics.backdoor import TriggerPatch, plant_backdoor
from .training import assign_blocks

IDS_FILE = "backdoor_ids.txt"
#: What errors call the plan's inputs: the train CLI's flags, or a study's ``backdoor:`` keys.
CLI_NAMES = {"n": "--plant-backdoor", "target": "--backdoor-target", "block": "--backdoor-block",
             "blocks": "--blocks B"}
STUDY_NAMES = {"n": "backdoor n", "target": "backdoor target", "block": "backdoor block", "blocks": "train blocks"}


@dataclass(frozen=True)
class BackdoorPlan:
    """Which samples to poison: ``ids`` (sorted), relabelled ``target``, all in ``block`` (1-based) or None."""

    target: int
    ids: tuple[int, ...]
    block: int | None
    patch: TriggerPatch

    def pinned_blocks(self) -> dict[int, int] | None:
        """id -> 0-based block for the trainer: relabelled, the samples would follow the target class."""
        return None if self.block is None else {i: self.block - 1 for i in self.ids}

    def record(self) -> dict:
        return {"n": len(self.ids), "target": self.target, "trigger": self.patch.to_dict(), "ids": list(self.ids),
                "block": self.block, "ids_file": IDS_FILE}

    def ids_text(self) -> str:
        return "".join(f"{i}\n" for i in self.ids)


def plan_backdoor(bundle: DataBundle, n: int, target: int, *, seed: int, blocks: int = 0,
                  block: int | None = None, patch: TriggerPatch | None = None,
                  names: dict[str, str] = CLI_NAMES) -> BackdoorPlan:
    """Choose ``n`` samples of classes other than ``target`` with ``seed``; in block mode (``blocks`` > 0)
    all from ``block`` (1..blocks, default the middle one) of the run's class-stratified assignment.
    ``names`` are what the errors call the inputs."""
    if bundle.kind != "image":
        raise ObliviateError(f"{names['n']} needs image data (the trigger is a corner patch); "
                             f"{bundle.name!r} is {bundle.kind}")
    if not 0 <= target < bundle.num_classes:
        raise ObliviateError(f"{names['target']} {target} out of range: {bundle.name!r} has classes "
                             f"0..{bundle.num_classes - 1}")
    if block is not None and not blocks:
        raise ObliviateError(f"{names['block']} needs block-incremental training ({names['blocks']})")
    if blocks and block is None:
        block = blocks // 2 + 1
    if block is not None and not 1 <= block <= blocks:
        raise ObliviateError(f"{names['block']} {block} out of range: the run has blocks 1..{blocks}")
    y = bundle.train.y.cpu().numpy()
    pool = y != target  # a target-class sample relabelled to its own class teaches nothing
    where = "the training set"
    if block is not None:
        pool &= assign_blocks(bundle.train, blocks, seed) == block - 1
        where = f"block {block} of {blocks}"
    if not 1 <= n <= int(pool.sum()):
        raise ObliviateError(f"{names['n']} {n}: choose 1..{int(pool.sum())} samples ({where} holds "
                             f"{int(pool.sum())} of classes other than {target})")
    chosen = np.random.default_rng(seed).choice(bundle.train.ids.cpu().numpy()[pool], n, replace=False)
    return BackdoorPlan(int(target), tuple(sorted(map(int, chosen))), block, patch or TriggerPatch())


def poisoned(bundle: DataBundle, plan: BackdoorPlan) -> DataBundle:
    return plant_backdoor(bundle, plan.ids, plan.target, plan.patch)


def replant(data: DataBundle, spec: dict, where: str | Path) -> DataBundle:
    """``data`` (loaded clean by ``spec``) with the backdoor ``spec`` records planted again; unchanged without one.

    The caller still compares the source hash: an edited record plants other samples and is refused there.
    """
    info = spec.get("backdoor") if isinstance(spec, dict) else None
    if info is None:
        return data
    try:
        ids, target, patch = list(info["ids"]), int(info["target"]), TriggerPatch.from_dict(info["patch"])
    except (KeyError, TypeError, ValueError, AttributeError, ObliviateError) as exc:
        raise CheckpointError(f"{where}: the run's backdoor record is malformed "
                              f"({type(exc).__name__}: {exc})") from None
    try:
        return plant_backdoor(data, ids, target, patch)
    except (ObliviateError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}: cannot re-plant the recorded backdoor: {exc}") from None
