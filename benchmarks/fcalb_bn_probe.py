"""Issue 25.2 probe: does fcalb-samples' forget loss reach the weights, or only BatchNorm's batch statistics?

Runs fcalb-samples (``--param``-style key=value, on top of ``preset=poisoned``; ``preset=none``: on top of the
defaults) on a poisoned original from ``backdoor-tuned-fmnist-full.yaml``'s work folder and prints the share of
deleted images classified as the backdoor target in eval mode and in train mode (one batch of 128), the ASR and
test accuracy. ``forget_bn=batch`` shows the BatchNorm loophole; fcalb-samples' default is ``running``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/fcalb_bn_probe.py RUN_DIR [key=value ...]
"""
import sys
import time

import torch

from obliviate.api import load_checkpoint
from obliviate.data import ForgetRequest
from obliviate.methods import unlearn
from obliviate.metrics import backdoor_asr
from obliviate.metrics.accuracy import accuracy

torch.set_num_threads(1)
d = sys.argv[1]
ck = load_checkpoint(d, device='cpu')
bd = ck.data.spec['backdoor']
req = ForgetRequest.for_ids(list(bd['ids']))
params = {'preset': 'poisoned', **dict(a.split('=', 1) for a in sys.argv[2:])}
if params['preset'] == 'none':  # the method's plain defaults
    del params['preset']
for k in list(params):
    if k in ('epochs', 'lr', 'distill', 'w_forget'):
        params[k] = float(params[k])
t = time.time()
model, rec = unlearn(ck.model, ck.data, req, 'fcalb-samples', params=params, seed=0, device='cpu')
split = req.resolve(ck.data.train, ck.data.num_classes)
forget = split.forget(ck.data.train)
x = forget.float_inputs()
model.eval()
with torch.no_grad():
    ev = model(x).argmax(1)
model.train()
with torch.no_grad():
    tr = model(x[:128]).argmax(1)
model.eval()
print(params, 'sec', round(time.time() - t), 'forget acc eval', accuracy(model, forget),
      'pred0 eval', (ev == 0).float().mean().item(),
      'pred0 train-mode batch', (tr == 0).float().mean().item(),
      'ASR', backdoor_asr(model, ck.data.test, bd['target'], bd['patch']), 'test', accuracy(model, ck.data.test),
      'L', rec['info']['final_losses'], flush=True)
