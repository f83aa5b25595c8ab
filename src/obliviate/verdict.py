"""The verdict on a forget run: ``forgotten`` yes or no, by a rule stated up front and recorded with it.

Why: the evidence a forget run measures (``certificate.measure_evidence``) is a set of numbers, and a
user should not have to know which of them means that a deletion failed. The rule turns them into one
answer and is written next to it, so anyone can re-check the answer from the evidence (``verify``).

* class request: accuracy on the deleted training samples of the class and on held-out samples of the
  class at most ``max_forget_acc`` (default 1/num_classes: chance level, what a model that never saw the
  class would not exceed by much on a class it cannot name).
* sample request (ids, fraction): accuracy on the deleted samples at most ``acc_band`` above the accuracy
  on unseen test samples of the retained classes — or, for a request of few samples, not significantly
  above it (one-sided binomial test at ``ALPHA``): a model retrained without 3 easy samples gets all 3 right
  with probability 0.9³ = 0.73 when unseen accuracy is 0.9, and that must not read as "not forgotten".
  Accuracy on so few samples is weak evidence either way; the per-example attack
  (``evaluate --per-example-mia K``) is the test for them. And, for the newest request, the loss attack at most
  ``mia_band`` above 0.5 (cannot tell them from unseen samples) unless the deleted samples fit *worse* than
  unseen ones (``loss_gap`` <= 0). One-sided on purpose: a model retrained without mislabelled or poisoned
  samples gets them wrong and the attack tells them apart by their high loss; that is no failed deletion.

Every request of the lineage is judged ("still forgotten"); a check the evidence could not measure
(a loss attack on fewer than 20 samples a side) is listed as not measured and does not decide.
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
                f"samples of the retained classes + {self.acc_band:g} (or, for few samples, not above it by a "
                f"one-sided binomial test at p < {ALPHA:g}), and loss attack <= {0.5 + self.mia_band:g} "
                f"unless the deleted samples have a higher mean loss than unseen ones")
        return {"max_forget_acc": bound, "max_forget_acc_from": source, "acc_band": self.acc_band,
                "mia_band": self.mia_band, "alpha": ALPHA, "text": text}


def _check(what: str, value, bound: str, passed) -> dict:
    measured = value is not None and not (isinstance(value, float) and math.isnan(value))
    return {"check": what, "value": value if measured else None, "bound": bound,
            "passed": bool(passed(value)) if measured else None}


def _sample_accuracy_check(name: str, r: dict, unseen: float | None, band: float, alpha: float) -> dict:
    """Deleted samples no better recognised than unseen ones: within ``band``, or (``size`` recorded, as since
    the binomial rule) not significantly above the unseen accuracy at that many samples."""
    if unseen is None:
        return _check(f"{name}: accuracy on the deleted samples", None, "unseen not measured", bool)
    n = r.get("size")
    if not n:  # evidence written before sizes were recorded: judged as it was then
        return _check(f"{name}: accuracy on the deleted samples", r["forget_acc"],
                      f"<= {unseen:.4f} (unseen samples) + {band:g}", lambda v: v <= unseen + band)
    k = round(r["forget_acc"] * n) if r["forget_acc"] is not None else 0
    p = float(binom.sf(k - 1, n, min(max(unseen, 0.0), 1.0)))  # P(at least k right | unseen accuracy)
    check = _check(f"{name}: accuracy on the deleted samples ({n})", r["forget_acc"],
                   f"<= {unseen:.4f} (unseen samples) + {band:g}, or P(>= {k}/{n} right at unseen accuracy) "
                   f">= {alpha:g}", lambda v: v <= unseen + band or p >= alpha)
    weak = check["passed"] and check["value"] > unseen + band  # passed only because n is too small to tell
    return {**check, "p": p, **({"weak": f"{n} samples: too few for accuracy to tell"} if weak else {})}


def judge(evidence: dict, class_requests: list[bool], rule: dict) -> dict:
    """The verdict on ``evidence`` (one entry of ``class_requests`` per request of the lineage)."""
    top, band, mia_band = rule["max_forget_acc"], rule["acc_band"], rule["mia_band"]
    unseen = evidence.get("retained_test_acc")
    checks = []
    per = evidence["per_request"]
    for i, (is_class, r) in enumerate(zip(class_requests, per)):
        name = r["request"]
        if is_class:
            checks.append(_check(f"{name}: accuracy on the deleted training samples", r["forget_acc"],
                                 f"<= {top:.4g}", lambda v: v <= top))
            which = "these classes" if "," in name else "the class"
            checks.append(_check(f"{name}: accuracy on held-out samples of {which}", r["test_forget_acc"],
                                 f"<= {top:.4g}", lambda v: v <= top))
            continue
        checks.append(_sample_accuracy_check(name, r, unseen, band, rule.get("alpha", ALPHA)))
        if i == len(per) - 1:
            worse = (evidence.get("loss_gap") or 0.0) <= 0.0
            checks.append(_check(f"{name}: loss attack (0.5 = cannot tell from unseen)", evidence.get("mia_loss_lr"),
                                 f"<= {0.5 + mia_band:g}, or the deleted samples fit worse than unseen ones",
                                 lambda v, worse=worse: v <= 0.5 + mia_band or worse))
    failed = [c for c in checks if c["passed"] is False]
    measured = [c for c in checks if c["passed"] is not None]
    return {"forgotten": bool(measured) and not failed, "rule": rule, "checks": checks}


def summary(verdict: dict) -> str:
    """One line: the answer and the checks that decided it."""
    if verdict["forgotten"]:
        n = sum(c["passed"] is True for c in verdict["checks"])
        skipped = [c["check"] for c in verdict["checks"] if c["passed"] is None]
        weak = [c["weak"] for c in verdict["checks"] if c.get("weak")]
        hint = f"; weak evidence: {'; '.join(weak)} (evaluate --per-example-mia K tests them)" if weak else ""
        return (f"forgotten: yes ({n} checks passed" + (f"; not measured: {'; '.join(skipped)}" if skipped else "")
                + hint + ")")
    failed = [f"{c['check']} {c['value']:.4f}, needs {c['bound']}" for c in verdict["checks"] if c["passed"] is False]
    return "forgotten: NO (" + ("; ".join(failed) or "nothing could be measured") + ")"
