"""Summarise benchmarks/deepobliviate_recipe.py's JSON lines: per run, Δ decay and stitch accuracy per block.

    python benchmarks/deepobliviate_summary.py benchmarks/results/deepobliviate-recipe-2026-12-04.jsonl
"""
from __future__ import annotations

import json
import sys


def summary(rec: dict) -> str:
    r = rec["recipe"]
    rows = rec["per_block"]
    exact = rec["exact_test"]
    held = [x for x in rows if "stitch_test" in x and x["stitch_test"] >= exact - 0.01]
    first_ok = held[0] if held else None
    stitched = " ".join(f"{x['block']}:{100 * (x['stitch_test'] - exact):+.1f}" for x in rows if "stitch_test" in x)
    d = [x["delta"] for x in rows]
    peak = max(d)
    head = (f"B{r['blocks']} E{r['epochs_per_block']} {r['schedule']}/{r.get('block_schedule', 'restart')} "
            f"lr{r['lr']} seed{r['seed']}: d={rec['first_block']} orig {100 * rec['original_test']:.1f} "
            f"exact {100 * exact:.1f} ; Δ last/peak {d[-1] / peak:.3f} ; first stitch within 1 pt: "
            + (f"block {first_ok['block']} ({first_ok['speedup']:.1f}x)" if first_ok else "none"))
    return head + "\n   stitch − exact (points) by block: " + stitched + \
        "\n   Δ/peak: " + " ".join(f"{x / peak:.2f}" for x in d[:12]) + (" ..." if len(d) > 12 else "")


if __name__ == "__main__":
    for line in open(sys.argv[1]):
        print(summary(json.loads(line)))
