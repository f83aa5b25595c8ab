"""Tune a method where it is compared: search a study entry's ``grid:`` on the validation split.

Why: a baseline run with defaults chosen at another scale is a strawman (issue 24: SCRUB at 60k). A grid
entry runs every setting on the original model, scores each on the **validation** split only (never the
test set, which stays for the reported figures), and keeps the setting the study's ``select:`` rule picks.
Rules (``SELECT_RULES``):

* ``val_retain_acc`` (default): among settings whose forget accuracy passes the verdict's bound
  (``obliviate.verdict``, the rule a forget run is judged by; the loss attack is not run here, and a check
  that cannot tell at this size — a few samples — counts as passed: no setting is shown to fail), the best
  validation accuracy on the retained classes; when none passes, the lowest forget accuracy (and the row
  says so).
* ``low_forget_acc``: the lowest accuracy on the deleted samples among settings that keep validation
  accuracy within ``MAX_VAL_DROP`` of the original's; none does: the best validation accuracy. For sample
  requests whose samples carry wrong labels (poisoned, mislabelled): the verdict's sample band compares
  with unseen data of *correct* labels, so a model that still obeys a trigger can pass it; what the
  deleted labels taught shows as accuracy on those labels, which a retrained model gets wrong.

Every setting's scores, the chosen values and the rule are recorded in the row.
"""
from __future__ import annotations

import itertools
import time

from ..data import DataBundle, ForgetRequest
from ..metrics.accuracy import accuracy
from ..verdict import VerdictRule, answer, judge

GRID, SELECT = "grid", "select"
MAX_VAL_DROP = 0.02  # low_forget_acc: validation accuracy it may give up against the original (issue 25)
SELECT_RULES = {"val_retain_acc": "best validation retain accuracy among settings whose forget accuracy passes "
                                  "the verdict bound (none passes: lowest forget accuracy)",
                "low_forget_acc": f"lowest accuracy on the deleted samples among settings whose validation retain "
                                  f"accuracy is within {MAX_VAL_DROP:g} of the original's (none: best validation "
                                  f"retain accuracy)"}
DEFAULT_SELECT = "val_retain_acc"


def val_scores(model, bundle: DataBundle, request: ForgetRequest) -> dict:
    """Forget and retain accuracy of one setting on the validation split (and on D_f), and the verdict."""
    split = request.resolve(bundle.train, bundle.num_classes)
    val_forget, val_retain = split.test_split(bundle.val)
    scores = {"forget_acc": accuracy(model, split.forget(bundle.train)),
              "val_forget_acc": accuracy(model, val_forget) if val_forget is not None and len(val_forget) else None,
              "val_retain_acc": accuracy(model, val_retain)}
    evidence = {"per_request": [{"request": request.describe(), "size": len(split.forget_pos),
                                 "forget_acc": scores["forget_acc"],
                                 "test_forget_acc": scores["val_forget_acc"]}],
                "retained_test_acc": scores["val_retain_acc"], "mia_loss_lr": None, "loss_gap": None}
    verdict = judge(evidence, [bool(request.classes)], VerdictRule().resolve(bundle.num_classes))
    scores["passes"] = answer(verdict) != "NO"  # "not shown" (nothing could tell) is no failure
    return scores


def _ranker(select: str, floor: float | None):
    """The rule as a sort key (higher is better); ``floor``: the lowest validation accuracy low_forget_acc keeps."""
    if select == "low_forget_acc":
        return lambda c: (1, -c["forget_acc"]) if c["val_retain_acc"] >= floor else (0, c["val_retain_acc"])
    return lambda c: (1, c["val_retain_acc"]) if c["passes"] else (0, -c["forget_acc"])


def tune(params: dict, run, bundle: DataBundle, request: ForgetRequest, original=None):
    """Run every grid point with ``run(point_params) -> (model, record)``; (model, record, tuning) of the chosen.

    ``original`` is needed by ``low_forget_acc`` (its validation accuracy is the reference)."""
    grid, select = params[GRID], params.get(SELECT, DEFAULT_SELECT)
    base = {k: v for k, v in params.items() if k not in (GRID, SELECT)}
    tuning: dict = {"grid": grid, "select": select, "rule": SELECT_RULES[select], "split": "validation"}
    floor = None
    if select == "low_forget_acc":
        if original is None:
            raise ValueError("low_forget_acc needs the original model")
        tuning["original_val_retain_acc"] = val_scores(original, bundle, request)["val_retain_acc"]
        floor = tuning["original_val_retain_acc"] - MAX_VAL_DROP
    rank = _ranker(select, floor)
    best, candidates, t0 = None, [], time.perf_counter()
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        model, record = run({**base, **values})
        cand = {"values": values, **val_scores(model, bundle, request), "seconds": record.get("seconds")}
        candidates.append(cand)
        if best is None or rank(cand) > rank(best[2]):
            best = (model, record, cand)
    model, record, chosen = best
    tuning.update(candidates=candidates, chosen=chosen["values"], chosen_passes=chosen["passes"],
                  seconds=time.perf_counter() - t0)
    return model, record, tuning


def tuned_metrics(tuning: dict) -> dict:
    """The chosen values as numeric columns (``tuned_<param>``), so tables and the report show them."""
    out = {f"tuned_{k}": float(v) for k, v in tuning["chosen"].items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out["tuned_passes"] = float(tuning["chosen_passes"])
    return out
