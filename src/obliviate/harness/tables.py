"""Result tables: mean ± std over seeds, and which value is best in each column.

"Best" depends on the metric. Accuracy on what stays and speed-up: higher is better. Time, memory,
divergence from the retrained model: lower is better. For what the retrained model defines (forget
accuracy, membership-inference values, ZRF, relearn time) the best value is the one *closest to
retrain*: exact unlearning is the target, and forgetting "more" than retraining is itself a signal
an attacker can read (the Streisand effect). The reference rows (original, retrain) are never marked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .study import REFERENCE_METHODS, parse_study

HIGHER, LOWER, CLOSEST, ABS_LOWER, NONE = "higher", "lower", "closest to retrain", "closest to 0", "none"


@dataclass(frozen=True)
class MetricInfo:
    label: str
    direction: str
    percent: bool = False


METRICS: dict[str, MetricInfo] = {
    "forget_acc": MetricInfo("forget acc", CLOSEST, True),
    "retain_acc": MetricInfo("retain acc", HIGHER, True),
    "test_acc": MetricInfo("test acc", HIGHER, True),
    "test_forget_acc": MetricInfo("test-forget acc", CLOSEST, True),
    "test_retain_acc": MetricInfo("test-retain acc", HIGHER, True),
    "js_to_retrained": MetricInfo("JS to retrain", LOWER),
    "activation_distance": MetricInfo("activation dist.", LOWER),
    "zrf": MetricInfo("ZRF", CLOSEST),
    "relearn_steps": MetricInfo("relearn steps", CLOSEST),
    "relearn_ain": MetricInfo("AIN", CLOSEST),
    "weight_distance": MetricInfo("weight dist. to θ₀", NONE),
    "weight_distance_to_retrained": MetricInfo("weight dist. to retrain", LOWER),
    "seconds": MetricInfo("seconds", LOWER),
    "speedup_vs_retrain": MetricInfo("speed-up × retrain", HIGHER),
    "speedup_vs_fast_retrain": MetricInfo("speed-up × fast-retrain", HIGHER),
    "peak_gpu_memory_mb": MetricInfo("peak GPU MB", LOWER),
    "test_acc_ratio_to_retrain": MetricInfo("test acc / retrain's", CLOSEST, True),
    "backdoor_asr": MetricInfo("backdoor ASR", CLOSEST, True),
    "lira_auc": MetricInfo("LiRA AUC", CLOSEST),
    "lira_tpr_at_1fpr": MetricInfo("LiRA TPR@1%FPR", CLOSEST, True),
    "verdict_yes": MetricInfo("verdict yes", HIGHER, True),
    "verdict_no": MetricInfo("verdict NO", LOWER, True),
}

#: Columns of the headline comparison table (those present are shown, in this order).
HEADLINE = ("forget_acc", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc", "backdoor_asr", "lira_auc",
            "lira_tpr_at_1fpr", "verdict_yes", "verdict_no", "mia_*_gap",
            "js_to_retrained", "activation_distance", "zrf", "relearn_ain", "weight_distance_to_retrained",
            "seconds", "speedup_vs_retrain", "speedup_vs_fast_retrain", "tuned_*")
GROUP = ["study", "dataset", "model", "request"]
ROW_ID = GROUP + ["method", "method_name", "params"]


def info(metric: str) -> MetricInfo:
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("mia_") and metric.endswith("_gap"):
        return MetricInfo(metric[4:-4].replace("_", " ") + " MIA gap", ABS_LOWER, True)
    if metric.startswith("mia_"):
        return MetricInfo(metric[4:].replace("_", " ") + " MIA", CLOSEST, True)
    return MetricInfo(metric.replace("_", " "), NONE)


OLDER = " (older params)"


def split_current(rows: list[dict], study_text: str | None, study_file: str = "<study>") -> tuple[list[dict],
                                                                                                 list[dict]]:
    """(rows made with the parameters the study's methods resolve to now, in the study's method order;
    rows made with others).

    Defaults change with obliviate (an upgrade) and entries with the study file; the store keeps the
    earlier rows (their run keys differ), so a table would show two rows under one method label. Rows of
    a label the study no longer has, and all rows when its text cannot be read, count as current.
    """
    import json

    from .runner import entry_params, registered_methods

    def canon(params) -> str:
        return json.dumps(params or {}, sort_keys=True)

    try:
        registered = registered_methods()
        current = {me.label: canon(entry_params(me, registered))
                   for me in parse_study(study_text or "", study_file or "<study>").methods}
    except Exception:  # a study text this version cannot plan (a method gone, a file moved): show everything
        return rows, []
    older = [r for r in rows if r["method"] in current and canon(r.get("params")) != current[r["method"]]]
    old_ids, order = {id(r) for r in older}, {label: i for i, label in enumerate(current)}
    kept = sorted((r for r in rows if id(r) not in old_ids), key=lambda r: order.get(r["method"], len(order)))
    return kept, older


def mark_older(rows: list[dict]) -> list[dict]:
    """Rows made with other parameters than the study's current ones, labelled so in tables."""
    return [{**r, "method": r["method"] + OLDER} for r in rows]


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per run: identity columns plus every numeric metric."""
    recs = []
    for r in rows:
        rec = {k: r[k] for k in ("study", "dataset", "model", "request", "method", "method_name", "seed")}
        rec["params"] = _params_text(r.get("params") or {})
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, bool) or k in rec:  # evaluate echoes seed etc.; the row's own value wins
                continue
            if isinstance(v, (int, float)) or v is None:
                rec[k] = np.nan if v is None else float(v)
        recs.append(rec)
    return _with_fast_retrain_speedup(pd.DataFrame(recs))


FAST_RETRAIN = "fast-retrain"


def _with_fast_retrain_speedup(frame: pd.DataFrame) -> pd.DataFrame:
    """``speedup_vs_fast_retrain`` = the same experiment's fast-retrain seconds / this run's seconds.

    The fast-retrain run is a method row of the same study, data set, model, request and seed, so both
    times come from one study run on one machine (ratios across runs mean little). Where a run already
    carries the column (``evaluate`` given a fast-retrain record) that value is kept.
    """
    if frame.empty or "seconds" not in frame:
        return frame
    keys = GROUP + ["seed"]
    fast = frame[(frame["method_name"] == FAST_RETRAIN) & frame["seconds"].notna()]
    fast = fast.drop_duplicates(keys)[keys + ["seconds"]].rename(columns={"seconds": "_fast_seconds"})
    merged = frame.merge(fast, on=keys, how="left")
    ratio = merged["_fast_seconds"] / merged["seconds"].where(merged["seconds"] > 0)
    if "speedup_vs_fast_retrain" in merged:
        ratio = merged["speedup_vs_fast_retrain"].fillna(ratio)
    merged["speedup_vs_fast_retrain"] = ratio
    return merged.drop(columns="_fast_seconds")


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def metric_columns(frame: pd.DataFrame) -> list[str]:
    skip = set(ROW_ID) | {"seed"}
    return [c for c in frame.columns if c not in skip]


def aggregate(rows: list[dict]) -> pd.DataFrame:
    """Mean and std (sample std, ddof=1; NaN with one seed) of every metric over seeds."""
    frame = rows_frame(rows)
    if frame.empty:
        return frame
    metrics = metric_columns(frame)
    grouped = frame.groupby(ROW_ID, sort=False, dropna=False)
    cols = {"n_seeds": grouped.size()}
    means, stds = grouped[metrics].mean(), grouped[metrics].std(ddof=1)
    for m in metrics:
        cols[f"{m}_mean"], cols[f"{m}_std"] = means[m], stds[m]
    cols["seeds"] = grouped["seed"].apply(lambda s: ",".join(map(str, sorted(s))))
    return pd.concat(cols, axis=1).copy().reset_index()  # copy: one block, not one per column


def headline_metrics(agg: pd.DataFrame) -> list[str]:
    present = [c[:-5] for c in agg.columns if c.endswith("_mean")]
    out = []
    for h in HEADLINE:
        if "*" in h:
            pre, post = h.split("*")
            out += [m for m in present if m.startswith(pre) and m.endswith(post)]
        elif h in present:
            out.append(h)
    return [m for m in out if agg[f"{m}_mean"].notna().any()]


def best_rows(group: pd.DataFrame, metric: str) -> set[int]:
    """Index labels of the best non-reference rows of one experiment for ``metric``."""
    d = info(metric).direction
    col = f"{metric}_mean"
    if d == NONE or col not in group:
        return set()
    cand = group[~group["method_name"].isin(REFERENCE_METHODS)]
    vals = cand[col].dropna()
    if vals.empty:
        return set()
    if d == HIGHER:
        score = -vals
    elif d == LOWER:
        score = vals
    elif d == ABS_LOWER:
        score = vals.abs()
    else:
        ref = reference_value(group, metric)
        if ref is None:
            return set()
        score = (vals - ref).abs()
    best = score.min()
    return {i for i, s in score.items() if math.isclose(s, best, rel_tol=1e-9, abs_tol=1e-12)}


def reference_value(group: pd.DataFrame, metric: str) -> float | None:
    """The retrained model's mean in this experiment (the harness's own retrain row first)."""
    col = f"{metric}_mean"
    ref = group[(group["method_name"] == "retrain") & (group["params"] == "")]
    ref = ref if not ref.empty else group[group["method_name"] == "retrain"]
    vals = ref[col].dropna() if col in ref else ref.iloc[0:0]
    return None if len(vals) == 0 else float(vals.iloc[0])


def fmt(metric: str, mean: float, std: float | None = None) -> str:
    """``97.3 ± 0.4`` for percentages, three significant digits otherwise; ``–`` for missing."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    pct = info(metric).percent
    scale = 100.0 if pct else 1.0

    def one(v: float) -> str:
        v = v * scale
        if pct:
            return f"{v:.1f}"
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 0.001:
            return f"{v:.3g}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.4g}" if abs(v) < 100 else f"{v:.0f}"

    s = one(mean)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {one(std)}"
    return s
