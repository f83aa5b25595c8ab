"""How cost and quality scale: seconds against training-set size, quality against retain-subset size.

The promise of UNSIR and FCALB is that their cost depends on the retain subset D_sub, not on the
training set; retraining and fine-tuning read all of D_r, so their cost grows with it. A study that
runs the same request on slices of one data set of several sizes shows this directly: on log-log axes
a method whose cost grows linearly with the data has slope ~1, one whose cost is flat has slope ~0.
The fitted slope (least squares on log seconds vs log size, mean over seeds per point) is the number
to quote. The subset size is its own axis: requests that differ only in ``subset_per_class`` give
quality against subset size for each method.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .plotting import color, figure, png

#: Methods drawn in a fixed colour so the reference lines are recognisable across figures.
REFERENCE_STYLE = {"retrain": ("#222222", "-"), "fast-retrain": ("#777777", "--")}


@dataclass
class Slope:
    method: str
    model: str
    request: str
    slope: float
    points: list[tuple[int, float]]  # (training-set size, mean seconds)


def _request_spec(row: dict) -> dict:
    return dict(((row.get("config") or {}).get("request_spec") or {}))


def size_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per run: method, model, request, training-set size, seconds and quality metrics."""
    recs = []
    for r in rows:
        m = r.get("metrics") or {}
        size = (m.get("forget_size") or 0) + (m.get("retain_size") or 0)
        if not size or m.get("seconds") is None:
            continue
        spec = _request_spec(r)
        recs.append({"method": r["method"], "method_name": r["method_name"], "model": r["model"],
                     "request": r["request"], "dataset": r["dataset"], "seed": r["seed"], "train_size": int(size),
                     "subset_per_class": spec.get("subset_per_class"),
                     "forgotten": repr((spec.get("classes"), spec.get("ids"), spec.get("fraction"))),
                     "seconds": float(m["seconds"]), "test_retain_acc": m.get("test_retain_acc"),
                     "forget_acc": m.get("forget_acc"), "test_forget_acc": m.get("test_forget_acc")})
    return pd.DataFrame(recs)


def fit_slope(sizes, seconds) -> float:
    """Slope of log(seconds) on log(size): ~1 for cost linear in the data, ~0 for a flat cost."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float))
    return float(np.polyfit(x, y, 1)[0])


def cost_slopes(rows: list[dict]) -> list[Slope]:
    """Per (model, request, method) seen at >= 2 training-set sizes: the fitted log-log slope."""
    frame = size_frame(rows)
    if frame.empty:
        return []
    out = []
    for (model, request, method), g in frame.groupby(["model", "request", "method"], sort=False):
        pts = g.groupby("train_size")["seconds"].mean().sort_index()
        if len(pts) >= 2 and (pts > 0).all():
            out.append(Slope(method, model, request, fit_slope(pts.index, pts.values),
                             [(int(s), float(v)) for s, v in pts.items()]))
    return out


def _style(method: str, i: int):
    return REFERENCE_STYLE.get(method, (color(i), "-"))


def plot_cost_vs_size(slopes: list[Slope]) -> bytes | None:
    """Log-log seconds against training-set size, one line per method, slope in the legend."""
    if not slopes:
        return None
    fig = figure(7.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(slopes):
        colour, dash = _style(s.method, i)
        xs, ys = zip(*s.points)
        label = f"{s.method} ({s.request}): slope {s.slope:.2f}" if len({x.request for x in slopes}) > 1 \
            else f"{s.method}: slope {s.slope:.2f}"
        ax.plot(xs, ys, dash, marker="o", color=colour, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training-set size (samples)")
    ax.set_ylabel("wall seconds (log)")
    ax.set_title("Cost against training-set size (slope 1 = linear in the data, 0 = flat)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return png(fig)


def subset_frame(rows: list[dict]) -> pd.DataFrame:
    """Runs of requests that forget the same set with >= 2 different ``subset_per_class`` values."""
    frame = size_frame(rows)
    if frame.empty or frame["subset_per_class"].isna().all():
        return frame.iloc[0:0]
    keep = frame.groupby(["dataset", "model", "forgotten"])["subset_per_class"].transform("nunique") >= 2
    return frame[keep]


def plot_quality_vs_subset(rows: list[dict], metric: str = "test_retain_acc") -> bytes | None:
    """Mean ``metric`` (%) against the retain-subset size per class, one line per method."""
    frame = subset_frame(rows)
    frame = frame[frame[metric].notna()] if not frame.empty else frame
    if frame.empty:
        return None
    fig = figure(7.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    for i, (method, g) in enumerate(frame.groupby("method", sort=False)):
        pts = g.groupby("subset_per_class")[metric].mean().sort_index()
        colour, dash = _style(method, i)
        ax.plot(pts.index, pts.values * 100, dash, marker="o", color=colour, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("retain subset D_sub (samples per class, log)")
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_title("Quality against retain-subset size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return png(fig)


def slope_table(slopes: list[Slope]) -> tuple[str, str]:
    """(html, markdown) table: method, request, seconds at each size, fitted slope."""
    if not slopes:
        return "", ""
    sizes = sorted({x for s in slopes for x, _ in s.points})
    head = ["method", "request", *[f"{n:,} s" for n in sizes], "slope"]
    h = ["<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr></thead><tbody>"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in slopes:
        pts = dict(s.points)
        cells = [s.method, s.request, *[f"{pts[n]:.1f}" if n in pts else "–" for n in sizes],
                 f"{s.slope:.2f}" if math.isfinite(s.slope) else "–"]
        h.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        md.append("| " + " | ".join(cells) + " |")
    h.append("</tbody></table>")
    return "".join(h), "\n".join(md)
