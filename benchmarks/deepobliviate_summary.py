"""Summarise benchmarks/deepobliviate_recipe.py's JSON lines: per run, Δ decay, stitch accuracy per block, and
where each stop rule would fire on the measured series (with the stitch's accuracy and backdoor ASR there).

    PYTHONPATH=src python benchmarks/deepobliviate_summary.py benchmarks/results/deepobliviate-recipe-2026-12-04.jsonl
"""
from __future__ import annotations

import json
import sys

from obliviate.methods.deepobliviate import DeepObliviate, plateau_decision, stop_decision

P = DeepObliviate.Params()


def _fires(rows: list[dict]) -> dict:
    """Block where each rule (defaults) first fires; None: never (exact retraining)."""
    out = {"plateau": None, "power_law": None}
    deltas = [x["delta"] for x in rows]
    ratios = [x["delta"] / x["new_update"] if x.get("new_update") else None for x in rows]
    for k in range(len(rows) - 1):  # the last block is exact retraining anyway
        if out["power_law"] is None and stop_decision(deltas[:k + 1], P.epsilon, P.min_deltas, P.min_r2, P.h0,
                                                       P.min_drop)["stop"]:
            out["power_law"] = rows[k]["block"]
        if out["plateau"] is None and None not in ratios[:k + 1] and \
                plateau_decision(ratios[:k + 1], P.max_ratio, P.plateau)["stop"]:
            out["plateau"] = rows[k]["block"]
    return out


def summary(rec: dict) -> str:
    r = rec["recipe"]
    rows = rec["per_block"]
    exact = rec["exact_test"]
    by_block = {x["block"]: x for x in rows}
    stitched = " ".join(f"{x['block']}:{100 * (x['stitch_test'] - exact):+.1f}" for x in rows if "stitch_test" in x)
    d = [x["delta"] for x in rows]
    peak = max(d)
    asr = (f" ; ASR original {100 * rec['original_asr']:.1f} exact {100 * rec['exact_asr']:.1f}"
           if "original_asr" in rec else "")
    head = (f"B{r['blocks']} E{r['epochs_per_block']} {r['schedule']}/{r.get('block_schedule', 'restart')} "
            f"lr{r['lr']} seed{r['seed']}: d={rec['first_block']} orig {100 * rec['original_test']:.1f} "
            f"exact {100 * exact:.1f} ; Δ last/peak {d[-1] / peak:.3f}" + asr)
    lines = [head, "   stitch − exact (points) by block: " + stitched]
    if "new_update" in rows[0]:
        lines.append("   Δ / own update: " + " ".join(f"{x['delta'] / x['new_update']:.2f}" for x in rows[:12])
                     + (" ..." if len(rows) > 12 else ""))
        for rule, t in _fires(rows).items():
            if t is None:
                lines.append(f"   {rule}: never fires (exact retraining, {r['blocks'] / len(rows):.1f}x)")
                continue
            x = by_block[t]
            extra = f", ASR {100 * x['stitch_asr']:.1f}" if "stitch_asr" in x else ""
            lines.append(f"   {rule}: fires at block {t} ({t - rec['first_block'] + 1} blocks retrained, "
                         f"{x['speedup']:.1f}x), stitch − exact {100 * (x['stitch_test'] - exact):+.1f}{extra}")
    else:
        lines.append("   Δ/peak: " + " ".join(f"{x / peak:.2f}" for x in d[:12]) + (" ..." if len(d) > 12 else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    for line in open(sys.argv[1]):
        print(summary(json.loads(line)))
