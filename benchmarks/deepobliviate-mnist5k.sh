#!/bin/bash
# Issue 25.1, end to end through the CLI: MNIST-5k, cnn, 50 blocks x 10 epochs, delete 1 random sample;
# deepobliviate vs retrain on the same run. Usage: benchmarks/deepobliviate-mnist5k.sh SEED BLOCK_SCHEDULE OUTDIR
set -euo pipefail
SEED=$1; SCHED=$2; W=$3/$SCHED-s$SEED
OB="python -m obliviate"
mkdir -p "$W"
$OB train --dataset mnist-5k --model cnn --blocks 50 --epochs-per-block 10 --batch-size 32 --lr 0.05 \
    --schedule cosine --block-schedule "$SCHED" --seed "$SEED" --out "$W/orig" --force
python - "$SEED" "$W/orig" > "$W/ids.txt" <<'PY'
import sys, numpy as np
from obliviate.training import load_block_assignment
ids, _ = load_block_assignment(sys.argv[2])
print(int(np.random.default_rng(int(sys.argv[1]) + 1000).choice(np.sort(ids))))
PY
for m in deepobliviate retrain; do
  $OB forget --checkpoint "$W/orig" --method $m --forget-ids "$W/ids.txt" --out "$W/$m" --seed "$SEED"
done
python - "$W" <<'PY'
import json, sys
from obliviate.api import load_checkpoint
from obliviate.metrics.accuracy import accuracy
w = sys.argv[1]
out = {"dir": w}
for m in ("orig", "deepobliviate", "retrain"):
    ck = load_checkpoint(f"{w}/{m}", device="cpu")
    rec = json.load(open(f"{w}/{m}/run.json"))
    out[m] = {"test": accuracy(ck.model, ck.data.test), "seconds": rec.get("seconds"),
              "info": rec.get("info") or rec.get("unlearn", {}).get("info")}
print(json.dumps(out, default=str))
PY
