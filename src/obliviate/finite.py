"""Non-finite weights and outputs are errors: a diverged model is never saved or scored as a result.

Training or unlearning with too high a learning rate ends in NaN weights without any exception; saved,
such a model looks like a run and fails later far from the cause (scikit-learn's "Input X contains NaN"
inside a metric). These checks stop it where it happens, with the fix in the message.
"""
from __future__ import annotations

import torch

from .errors import ObliviateError


def nonfinite_state(model: torch.nn.Module) -> tuple[int, int, str | None]:
    """(non-finite values, all values, name of the first tensor holding one) over floating parameters and buffers."""
    bad, total, first = 0, 0, None
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        n = int((~torch.isfinite(t)).sum())
        total += t.numel()
        if n:
            bad += n
            first = first or name
    return bad, total, first


def require_finite(model: torch.nn.Module, what: str, hint: str) -> None:
    """Raise ``ObliviateError`` ("the unlearned model has NaN weights (...): <hint>") if any weight is NaN/inf."""
    bad, total, first = nonfinite_state(model)
    if bad:
        raise ObliviateError(f"{what} has NaN weights ({bad:,} of {total:,} values NaN or infinite, first in "
                             f"{first}): {hint}")


def require_finite_outputs(logits: torch.Tensor, what: str, on: str, hint: str) -> None:
    """Raise if any logit is NaN/inf (a model with finite weights can still overflow)."""
    rows = int((~torch.isfinite(logits)).any(1).sum()) if logits.ndim == 2 else int((~torch.isfinite(logits)).sum())
    if rows:
        raise ObliviateError(f"{what} produces NaN or infinite outputs on {rows:,} of {len(logits):,} {on} samples: "
                             f"{hint}")
