"""Run one method with ``key=value`` parameters on a saved original for a class request, and print forget
accuracy (train and test images of the class) and test accuracy on the kept classes: a quick check of what a
parameter change does to class deletion, without a study (e.g. fcalb-samples' ``forget_bn``).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/class_probe.py RUN_DIR CLASS METHOD [key=value ...]
"""
import sys
import time

import torch

from obliviate.api import load_checkpoint
from obliviate.data import ForgetRequest
from obliviate.methods import unlearn
from obliviate.metrics.evaluate import evaluate

torch.set_num_threads(1)
run_dir, cls, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ck = load_checkpoint(run_dir, device='cpu')
params = dict(a.split('=', 1) for a in sys.argv[4:])
request = ForgetRequest.for_classes(cls)
t = time.time()
model, _ = unlearn(ck.model, ck.data, request, method, params=params, seed=0, device='cpu',
                   train_config=ck.train_config)
seconds = time.time() - t
m = evaluate(ck.model, model, ck.data, request, figures=False, relearn=False)  # its class split of train and test
print(method, params, 'sec', round(seconds), 'forget train', round(m['forget_acc'], 4),
      'forget test', round(m['test_forget_acc'], 4), 'kept test', round(m['test_retain_acc'], 4), flush=True)
