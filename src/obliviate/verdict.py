"""The verdict on a forget run: ``forgotten`` yes or no, by a rule stated up front and recorded with it.

Why: the evidence a forget run measures (``certificate.measure_evidence``) is a set of numbers, and a
user should not have to know which of them means that a deletion failed. The rule turns them into one
answer and is written next to it, so anyone can re-check the answer from the evidence (``verify``).

* class request: accuracy on the deleted training samples of the class and on held-out samples of the
  class at most ``max_forget_acc`` (default 1/num_classes: chance level, what a model that never saw the
  class would not exceed by much on a class it cannot name).
* sample request (ids, fraction): accuracy on the deleted samples at most ``acc_band`` above the accuracy
  on unseen test samples of the retained classes, or not significantly above it (one-sided binomial test
  at ``ALPHA``): a model retrained without 3 easy samples gets all 3 right with probability 0.9³ = 0.73 when
  unseen accuracy is 0.9, and that is no failed deletion. Where even n of n right would not be significant
  (3 samples at 0.9: 0.73 ≥ 0.01) accuracy cannot tell anything, and the check is *not measured*, not
  passed. And, for the newest request, the loss attack at most
  ``mia_band`` above 0.5 (cannot tell them from unseen samples) unless the deleted samples fit *worse* than
  unseen ones (``loss_gap`` <= 0). One-sided on purpose: a model retrained without mislabelled or poisoned
  samples gets them wrong and the attack tells them apart by their high loss; that is no failed deletion.
* sample request with the per-example attack (``forget --per-example-mia K``; rule version 3): fails when
  the deleted samples score as members *above* unseen samples (one-sided rank test, p < ``ALPHA``); passes
  when they score *below* the samples the model kept (p < ``ALPHA``) and did not already before the request
  (the original's scores; else a no-op could pass). Otherwise not measured: the attack cannot tell. Unlike
  accuracy it can show a few memorable samples gone, since each sample is calibrated by its own shadows.
* sample request, any check (rule version 4): a check passes only if the original model, which trained on the
  samples, would have failed it (``original`` in the evidence); where the original passes too, the check cannot
  tell this deletion from none and is *not measured*. Measured: on a model that does not memorise, 100 random
  samples are recognised no better than unseen ones by the original itself, and a no-op was certified.
* any request: a model trained from scratch without every deleted sample (``by_construction`` in the
  evidence: retrain, fast-retrain, DeepObliviate when it retrained to the end) is forgotten by construction,
  whatever the other checks say (they stay listed: a loss attack on 20 samples reads 0.7 on a retrained
  model now and then).

Every request of the lineage is judged ("still forgotten"), and each needs a measured check of its own; a
check the evidence could not measure (a loss attack on fewer than 20 samples a side) is listed as not
measured and does not decide. A request with nothing measured makes the answer not "yes": ``forgotten`` is
false and the line says NOT SHOWN (a few samples deleted by an approximate method: the per-example attack
or retraining can show it). Rules carry a ``version``; older certificates are judged by the rule of their
time (see ``RULE_VERSION``), so they still verify.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import binom

from .errors import ObliviateError

#: Exit code of `obliviate forget` and `obliviate verify` when the run is kept but its verdict is "not forgotten".
EXIT_NOT_FORGOTTEN = 3
ACC_BAND = 0.05  # sample requests: forget acc - unseen acc; about 2 standard errors at a few hundred samples
MIA_BAND = 0.1  # sample requests: loss attack - 0.5; the attack's spread on a retrained model at ~100 samples
ALPHA = 0.01  # sample requests: above the band fails only when P(at least k of n right | unseen accuracy) < ALPHA
#: Rules recorded without a version are judged as they were: no alpha, the band alone; alpha without a version
#: (a few hours of 2026-12-04), band or binomial test, nothing "not measured", no check by construction.
RULE_VERSION = 4  # 3: the per-example attack's check, where the evidence has it; 4: the no-op guard
NOOP_GUARD = 4  # from version 4: a sample check the original passes too is not measured
CHECKS_NEED_MEASURING = 2  # from version 2: "not measured", a measured check per request, by construction
EXACT_CHECK = "trained from scratch without every deleted sample"  # the check by construction, by its name


@dataclass(frozen=True)
class VerdictRule:
    """The bounds a forget run is judged by; ``max_forget_acc`` None means 1/num_classes."""

    max_forget_acc: float | None = None
    acc_band: float = ACC_BAND
    mia_band: float = MIA_BAND

    def __post_init__(self) -> None:
        for name in ("max_forget_acc", "acc_band", "mia_band"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ObliviateError(f"{name.replace('_', '-')} must be a number in [0, 1], got {v}")

    def resolve(self, num_classes: int) -> dict:
        """The rule as recorded in the certificate: every bound a number, and the rule in words."""
        bound = self.max_forget_acc if self.max_forget_acc is not None else 1.0 / num_classes
        source = "given" if self.max_forget_acc is not None else f"1/num_classes ({num_classes} classes)"
        text = (f"class request: forget accuracy on the deleted training samples and on held-out samples of "
                f"the class <= {bound:.4g} ({source}); sample request: forget accuracy <= accuracy on unseen "
                f"samples of the retained classes + {self.acc_band:g} or not above it by a one-sided binomial "
                f"test at p < {ALPHA:g} (too few samples for the test: not measured), and loss attack <= "
                f"{0.5 + self.mia_band:g} unless the deleted samples have a higher mean loss than unseen ones; "
                f"per-example attack (where measured): no higher scores than unseen samples (one-sided rank "
                f"test, p < {ALPHA:g}), passed when lower than the kept samples' (p < {ALPHA:g}) and not so "
                f"before the request; a sample check the original model passes too is not measured (it cannot tell a "
                f"deletion from none); a model trained from scratch without every deleted sample passes by "
                f"construction")
        return {"max_forget_acc": bound, "max_forget_acc_from": source, "acc_band": self.acc_band,
                "mia_band": self.mia_band, "alpha": ALPHA, "version": RULE_VERSION, "text": text}


def _measured(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _check(what: str, value, bound: str, passed) -> dict:
    measured = _measured(value)
    return {"check": what, "value": value if measured else None, "bound": bound,
            "passed": bool(passed(value)) if measured else None}


def _sample_accuracy_check(name: str, r: dict, unseen: float | None, band: float, alpha: float | None,
                           current: bool) -> dict:
    """Deleted samples no better recognised than unseen ones: within ``band``, or not significantly above the
    unseen accuracy (binomial, ``alpha``; a rule recorded before it has none and is judged by the band alone).
    Where not even n of n right could fail it (too few samples, or unseen accuracy + band >= 1) the check is
    not measured rather than passed: it cannot show anything there."""
    what = f"{name}: accuracy on the deleted samples"
    acc, n = r.get("forget_acc"), r.get("size")
    if not _measured(unseen):
        return _check(what, None, "unseen not measured", bool)
    near = f"<= {unseen:.4f} (unseen samples) + {band:g}"
    if alpha is None or not isinstance(n, int) or n < 1 or not _measured(acc):
        return _check(what, acc, near, lambda v: v <= unseen + band)
    q = min(max(float(unseen), 0.0), 1.0)
    if current and (unseen + band >= 1.0 or q ** n >= alpha):  # not even n of n right could fail it: it shows nothing
        why = (f"unseen accuracy {unseen:.4f} + {band:g} leaves no room above it" if unseen + band >= 1.0 else
               f"{n} samples: too few for accuracy to tell ({n} of {n} right has probability {q ** n:.2f} at "
               f"unseen accuracy)")
        return {**_check(what, None, near, bool), "value": acc, "not_measured": why}
    if acc <= unseen + band:
        return _check(what, acc, near, lambda v: True)
    k = max(round(acc * n), 1)
    p = float(binom.sf(k - 1, n, q))  # P(at least k of n right | unseen accuracy)
    return {**_check(f"{what} ({n})", acc, f"{near}, or P(>= {k}/{n} right at unseen accuracy) >= {alpha:g}",
                     lambda v: p >= alpha), "p": p}


def _per_example_check(name: str, t: dict, shadows: int | None) -> dict:
    """The per-example attack on one request's deleted samples (``lira.deletion_test``'s p-values)."""
    what = f"{name}: per-example attack ({shadows} shadows; {t['deleted']} deleted samples)"
    seen, kept, before = t.get("p_seen"), t.get("p_kept"), t.get("p_kept_original")
    bound = f"not above unseen samples, and below the kept ones (rank tests, p < {ALPHA:g})"
    check = {"check": what, "value": None, "bound": bound, "passed": None, "p_seen": seen, "p_kept": kept,
             "p_kept_original": before}
    if _measured(seen) and seen < ALPHA:
        return {**check, "value": seen, "passed": False, "bound": f"p(scores above unseen samples') >= {ALPHA:g}"}
    if _measured(kept) and kept < ALPHA and not (_measured(before) and before < ALPHA):
        return {**check, "value": kept, "passed": True}
    why = ("the samples scored below the kept ones before the request too" if _measured(before) and before < ALPHA
           else f"{t['deleted']} samples: the attack cannot tell (p = {kept if _measured(kept) else float('nan'):.2g} "
                f"against the kept samples)")
    return {**check, "not_measured": f"{what}: {why}"}


def _loss_attack_check(name: str, numbers: dict, mia_band: float) -> dict:
    """The newest sample request's loss attack, one-sided: passes where the deleted samples fit worse."""
    worse = (numbers.get("loss_gap") or 0.0) <= 0.0
    return _check(f"{name}: loss attack (0.5 = cannot tell from unseen)", numbers.get("mia_loss_lr"),
                  f"<= {0.5 + mia_band:g}, or the deleted samples fit worse than unseen ones",
                  lambda v: v <= 0.5 + mia_band or worse)


def _against_noop(check: dict, on_original: dict | None) -> dict:
    """A passed sample check counts only if the original (which saw the samples) would have failed it."""
    if check["passed"] is not True:
        return check
    if on_original is None or on_original["passed"] is None:
        why = "not measured on the original model, so it cannot show that it tells a deletion from none"
    elif on_original["passed"] is False:
        return check
    else:
        seen = on_original.get("value")
        why = (f"the original model, which trained on them, passes it too"
               f"{f' ({seen:.4g})' if _measured(seen) else ''}: it cannot tell this deletion from none")
    return {**check, "passed": None, "not_measured": f"{check['check']}: {why}"}


def _sample_checks(i: int, name: str, r: dict, evidence: dict, rule: dict, current: bool) -> list[dict]:
    """Accuracy, the per-example attack (where measured) and, for the newest request, the loss attack; from
    version 4 each of the first and last against the same check on the original (``_against_noop``)."""
    band, alpha, noop = rule["acc_band"], rule.get("alpha"), evidence.get("original")
    guard = rule.get("version", 1) >= NOOP_GUARD
    before = (_sample_accuracy_check(name, {**r, "forget_acc": r.get("original_forget_acc")},
                                     noop.get("retained_test_acc"), band, alpha, current)
              if isinstance(noop, dict) and _measured(r.get("original_forget_acc")) else None)
    check = _sample_accuracy_check(name, r, evidence.get("retained_test_acc"), band, alpha, current)
    checks = [_against_noop(check, before) if guard else check]
    if rule.get("version", 1) >= 3 and isinstance(r.get("per_example"), dict):
        checks.append(_per_example_check(name, r["per_example"], (evidence.get("per_example") or {}).get("shadows")))
    if i == len(evidence["per_request"]) - 1:
        check = _loss_attack_check(name, evidence, rule["mia_band"])
        before = _loss_attack_check(name, noop, rule["mia_band"]) if isinstance(noop, dict) else None
        checks.append(_against_noop(check, before) if guard else check)
    return checks


def _request_checks(i: int, is_class: bool, r: dict, evidence: dict, rule: dict, current: bool) -> list[dict]:
    """The checks of request ``i`` of the lineage (the loss attack only for the newest one)."""
    name, top = r["request"], rule["max_forget_acc"]
    if not is_class:
        return _sample_checks(i, name, r, evidence, rule, current)
    which = "these classes" if "," in name else "the class"
    return [_check(f"{name}: accuracy on the deleted training samples", r["forget_acc"], f"<= {top:.4g}",
                   lambda v: v <= top),
            _check(f"{name}: accuracy on held-out samples of {which}", r["test_forget_acc"], f"<= {top:.4g}",
                   lambda v: v <= top)]


def judge(evidence: dict, class_requests: list[bool], rule: dict) -> dict:
    """The verdict on ``evidence`` (one entry of ``class_requests`` per request of the lineage).

    Under the current rule every request needs a measured check of its own and none may fail — unless the
    model was trained from scratch without every deleted sample, which decides (the checks stay listed)."""
    current = rule.get("version", 1) >= CHECKS_NEED_MEASURING
    per = [_request_checks(i, c, r, evidence, rule, current)
           for i, (c, r) in enumerate(zip(class_requests, evidence["per_request"]))]
    checks = [c for group in per for c in group]
    exact = current and bool(evidence.get("by_construction"))
    if exact:
        checks.append({"check": EXACT_CHECK, "value": True,
                       "bound": "by construction (retrain, fast-retrain, DeepObliviate without a stitch)",
                       "passed": True})
    failed = any(c["passed"] is False for c in checks)
    if current:
        shown = all(any(c["passed"] is not None for c in group) for group in per)
    else:  # as judged before: anything measured will do
        shown = any(c["passed"] is not None for c in checks)
    return {"forgotten": exact or (shown and not failed), "rule": rule, "checks": checks}


def answer(verdict: dict) -> str:
    """"yes", "NO" (a check failed) or "not shown" (no check failed, but none could tell either)."""
    if verdict["forgotten"]:
        return "yes"
    return "NO" if any(c.get("passed") is False for c in verdict.get("checks", [])) else "not shown"


def _number(v: float) -> str:
    return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.2g}"  # a p-value of 3e-08 is not "0.0000"


def summary(verdict: dict) -> str:
    """One line: the answer and the checks that decided it."""
    checks = verdict["checks"]
    skipped = [c.get("not_measured") or c["check"] for c in checks if c["passed"] is None]
    failed = [f"{c['check']} {_number(c['value'])}, needs {c['bound']}" for c in checks if c["passed"] is False]
    if verdict["forgotten"]:
        exact = any(c["check"] == EXACT_CHECK for c in checks)
        head = ("forgotten: yes (by construction: trained from scratch without them" if exact else
                f"forgotten: yes ({sum(c['passed'] is True for c in checks)} checks passed")
        return (head + (f"; not measured: {'; '.join(skipped)}" if skipped else "")
                + (f"; the evidence disagrees on: {'; '.join(failed)}" if failed else "") + ")")
    if failed:
        return "forgotten: NO (" + "; ".join(failed) + ")"
    return ("forgotten: NOT SHOWN (nothing the evidence measured can tell: " + "; ".join(skipped) + "; retraining "
            "(retrain, fast-retrain, deepobliviate without a stitch) or the per-example attack (`forget "
            "--per-example-mia K`) can show it)")
