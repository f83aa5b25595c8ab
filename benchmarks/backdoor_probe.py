"""Issue 25.2 probe: does a sample method's forget loss reach the weights, or only BatchNorm's batch statistics?

Runs METHOD with ``key=value`` parameters (strings, parsed as the CLI's ``--param``) on a poisoned original
from ``backdoor-tuned-fmnist-full.yaml``'s work folder, and prints the share of deleted images classified as
the backdoor target in eval mode and in train mode (one batch of 128: how a forget-only batch is normalised),
the backdoor ASR and the test accuracy. ``forget_bn=batch`` / ``running`` (fcalb-samples, scrub, neggrad+)
switch the statistics the forget batch sees.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/backdoor_probe.py RUN_DIR METHOD [key=value ...]
"""
import copy
import sys
import time

import torch

from obliviate.api import load_checkpoint
from obliviate.data import ForgetRequest
from obliviate.methods import unlearn
from obliviate.metrics import backdoor_asr
from obliviate.metrics.accuracy import accuracy

torch.set_num_threads(1)
run_dir, method = sys.argv[1], sys.argv[2]
ck = load_checkpoint(run_dir, device='cpu')
bd = ck.data.spec['backdoor']
req = ForgetRequest.for_ids(list(bd['ids']))
params = dict(a.split('=', 1) for a in sys.argv[3:])
t = time.time()
# the original's recipe, as the study passes it: its augmentation (flip) is what the methods' batches get
model, rec = unlearn(ck.model, ck.data, req, method, params=params, seed=0, device='cpu', train_config=ck.train_config)
seconds = time.time() - t
forget = req.resolve(ck.data.train, ck.data.num_classes).forget(ck.data.train)
x = forget.float_inputs()
model.eval()
with torch.no_grad():
    ev = model(x).argmax(1)
    # a train-mode forward updates BatchNorm's running statistics even under no_grad: on a copy, so that the
    # figures below are of the unlearned model itself
    tr = copy.deepcopy(model).train()(x[:128]).argmax(1)
print(method, params, 'sec', round(seconds), 'forget acc eval', round(accuracy(model, forget), 4),
      'pred0 eval', round((ev == 0).float().mean().item(), 4),
      'pred0 train-mode batch', round((tr == 0).float().mean().item(), 4),
      'ASR', round(backdoor_asr(model, ck.data.test, bd['target'], bd['patch']), 4),
      'test', round(accuracy(model, ck.data.test), 4), flush=True)
