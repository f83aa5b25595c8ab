"""What forgetting cost: wall seconds, speed-up over retraining, peak GPU memory.

The numbers come from the records ``unlearn`` and ``train`` write: ``seconds`` is wall time around the
method (or the retraining) with the GPU synchronised before the clock stops, and
``peak_gpu_memory_mb`` is ``torch.cuda.max_memory_allocated`` after a reset at the start (None on CPU).
"""
from __future__ import annotations


def _seconds(record: dict | None) -> float | None:
    if not record or record.get("seconds") is None:
        return None
    return float(record["seconds"])


def _ratio(reference: float | None, s: float | None) -> float | None:
    return (reference / s) if (s is not None and reference is not None and s > 0) else None


def cost_metrics(unlearn_record: dict | None, retrain_record: dict | None = None,
                 fast_retrain_record: dict | None = None) -> dict:
    """``seconds``, ``retrain_seconds``, ``speedup_vs_retrain`` = retrain seconds / method seconds,
    ``speedup_vs_fast_retrain`` = fast-retrain seconds / method seconds (the cheaper retraining a user
    could pick instead, see ``methods/fast_retrain.py``), ``peak_gpu_memory_mb``; None where a record (or
    the GPU) is missing."""
    s, r, f = _seconds(unlearn_record), _seconds(retrain_record), _seconds(fast_retrain_record)
    peak = (unlearn_record or {}).get("peak_gpu_memory_mb")
    return {
        "seconds": s,
        "retrain_seconds": r,
        "fast_retrain_seconds": f,
        "speedup_vs_retrain": _ratio(r, s),
        "speedup_vs_fast_retrain": _ratio(f, s),
        "peak_gpu_memory_mb": float(peak) if peak is not None else None,
    }
