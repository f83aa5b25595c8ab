"""The study report: one self-contained HTML file (images as data URIs) and the same in Markdown.

Per experiment (data set × model × forget request): the comparison table with the best unlearning
method per column marked, published numbers beside ours, the forget-vs-retain trade-off, speed-up
over retraining, membership-inference gaps to retrain, and the figures ``evaluate`` wrote for each run
(prediction distribution on D_f, layer-wise weight distance, GradCAM). The HTML needs no network and
no files beside it, so it can be mailed or attached to a paper's supplement as is.
"""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..env import now_iso
from ..errors import ObliviateError
from ..io import check_writable_dir, write_bytes, write_text
from .plotting import color as _color
from .plotting import figure as _figure
from .plotting import png as _png
from .scaling import cost_slopes, plot_cost_vs_size, plot_quality_vs_subset, slope_table
from .store import Store, pick_study
from .study import REFERENCE_METHODS
from .tables import aggregate, best_rows, fmt, headline_metrics, info, split_current

#: Figures ``evaluate`` writes into each run's folder, by file-name fragment → section title.
RUN_FIGURES = (
    ("hist", "Prediction distribution on the forget set"),
    ("pred", "Prediction distribution on the forget set"),
    ("weight", "Layer-wise weight distance (log scale)"),
    ("layer", "Layer-wise weight distance (log scale)"),
    ("cam", "GradCAM: original vs unlearned"),
)


@dataclass
class Figure:
    name: str  # file name under figures/
    title: str
    png: bytes
    caption: str = ""


@dataclass
class Section:
    title: str
    table_html: str
    table_md: str
    published_html: str = ""
    published_md: str = ""
    figures: list[Figure] = field(default_factory=list)
    galleries: list[tuple[str, list[Figure]]] = field(default_factory=list)


# ------------------------------------------------------------------ plotting (no pyplot: no global state)
def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def scatter_tradeoff(group: pd.DataFrame) -> bytes | None:
    """Forget accuracy (x) vs retain accuracy (y), one point per method with ±std bars."""
    if "forget_acc_mean" not in group or "retain_acc_mean" not in group:
        return None
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot()
    for i, (_, r) in enumerate(group.iterrows()):
        x, y = _nan(r["forget_acc_mean"]) * 100, _nan(r["retain_acc_mean"]) * 100
        if math.isnan(x) or math.isnan(y):
            continue
        xe, ye = _nan(r.get("forget_acc_std")) * 100, _nan(r.get("retain_acc_std")) * 100
        marker = {"original": "s", "retrain": "*"}.get(r["method_name"], "o") if r["params"] == "" else "o"
        size = 14 if marker == "*" else 8
        color = "#444444" if r["method_name"] in REFERENCE_METHODS else _color(i)
        ax.errorbar(x, y, xerr=None if math.isnan(xe) else xe, yerr=None if math.isnan(ye) else ye, fmt=marker,
                    ms=size, color=color, capsize=3, label=r["method"])
        ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("forget accuracy (%)  — target: retrain's")
    ax.set_ylabel("retain accuracy (%)  ↑")
    ax.set_title("Forgetting vs keeping")
    ax.grid(alpha=0.3)
    return _png(fig)


def bars(group: pd.DataFrame, metrics: list[str], title: str, xlabel: str, log: bool = False,
         percent: bool = False, skip_reference: bool = True) -> bytes | None:
    """Horizontal bars (mean ± std) of one or more metrics per method."""
    metrics = [m for m in metrics if f"{m}_mean" in group and group[f"{m}_mean"].notna().any()]
    g = group[~group["method_name"].isin(REFERENCE_METHODS)] if skip_reference else group
    if not metrics or g.empty:
        return None
    n, k = len(g), len(metrics)
    fig = _figure(6.4, max(1.8, 0.45 * n * max(1, k * 0.7) + 1.0))
    ax = fig.add_subplot()
    height = 0.8 / k
    scale = 100.0 if percent else 1.0
    ypos = np.arange(n)
    for j, m in enumerate(metrics):
        vals = g[f"{m}_mean"].astype(float).to_numpy() * scale
        errs = g.get(f"{m}_std", pd.Series([np.nan] * n)).astype(float).to_numpy() * scale
        errs = np.where(np.isnan(errs), 0.0, errs)
        pos = ypos + (j - (k - 1) / 2) * height
        ax.barh(pos, np.nan_to_num(vals), height=height * 0.9, xerr=errs, color=_color(j), capsize=2,
                label=info(m).label)
        for p, v in zip(pos, vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.3g}", (v, p), textcoords="offset points", xytext=(3, -3), fontsize=7)
    ax.set_yticks(ypos, g["method"].tolist())
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if k > 1:
        ax.legend(fontsize=7, loc="best")
    return _png(fig)


# ------------------------------------------------------------------ tables
def _table(group: pd.DataFrame, metrics: list[str]) -> tuple[str, str]:
    best = {m: best_rows(group, m) for m in metrics}
    head = ["method", "seeds"] + [info(m).label + (" (%)" if info(m).percent else "") for m in metrics]
    arrows = ["", ""] + [_arrow(m) for m in metrics]
    h = ["<table class='cmp'><thead><tr>" + "".join(
        f"<th title='{html.escape(_arrow(m, long=True)) if i >= 2 else ''}'>{html.escape(c)}"
        f"<span class='dir'>{html.escape(a)}</span></th>"
        for i, (c, a, m) in enumerate(zip(head, arrows, ["", ""] + metrics))) + "</tr></thead><tbody>"]
    md = ["| " + " | ".join(f"{c} {a}".strip() for c, a in zip(head, arrows)) + " |",
          "|" + "---|" * len(head)]
    for idx, r in group.iterrows():
        ref = r["method_name"] in REFERENCE_METHODS
        cells_h, cells_m = [], []
        for m in metrics:
            text = fmt(m, r[f"{m}_mean"], r.get(f"{m}_std"))
            if idx in best[m]:
                cells_h.append(f"<td class='best'>{html.escape(text)}</td>")
                cells_m.append(f"**{text}**")
            else:
                cells_h.append(f"<td>{html.escape(text)}</td>")
                cells_m.append(text)
        name = html.escape(r["method"]) + (" <span class='ref'>reference</span>" if ref else "")
        params = ""
        h.append(f"<tr class='{'refrow' if ref else ''}'><td class='method'>{name}{params}</td>"
                 f"<td>{r['n_seeds']}</td>{''.join(cells_h)}</tr>")
        md.append(f"| {r['method']} | {r['n_seeds']} | " + " | ".join(cells_m) + " |")
    h.append("</tbody></table>")
    plist = [(r["method"], r["params"]) for _, r in group.iterrows() if r["params"]]
    if plist:
        h.append("<details><summary>parameters of each method</summary><ul class='params'>" + "".join(
            f"<li><b>{html.escape(m)}</b>: {html.escape(p)}</li>" for m, p in plist) + "</ul></details>")
        md += [""] + [f"- {m}: {p}" for m, p in plist]
    return "".join(h), "\n".join(md)


def _arrow(metric: str, long: bool = False) -> str:
    d = info(metric).direction
    if long:
        return {"higher": "higher is better", "lower": "lower is better", "closest to retrain":
                "best: closest to the retrained model", "closest to 0": "best: closest to 0 (no gap to retrain)",
                "none": "descriptive"}[d]
    return {"higher": "↑", "lower": "↓", "closest to retrain": "≈R", "closest to 0": "→0", "none": ""}[d]


def _published(pubs: list[dict], ds: str, model: str, req: str, group: pd.DataFrame) -> tuple[str, str]:
    rows = [p for p in pubs if (p.get("dataset") in (None, ds)) and (p.get("model") in (None, model))
            and (p.get("request") in (None, req))]
    if not rows:
        return "", ""
    h = ["<table class='pub'><thead><tr><th>method</th><th>metric</th><th>published</th><th>ours</th>"
         "<th>source</th></tr></thead><tbody>"]
    md = ["| method | metric | published | ours | source |", "|---|---|---|---|---|"]
    for p in rows:
        m = p["metric"]
        ours = group[group["method"] == p["method"]]
        if ours.empty:
            ours = group[group["method_name"] == p["method"]]
        ours_text = fmt(m, ours.iloc[0][f"{m}_mean"], ours.iloc[0].get(f"{m}_std")) \
            if not ours.empty and f"{m}_mean" in ours else "not run"
        pub_text = fmt(m, float(p["value"]))
        src = p["source"] + (f" — {p['note']}" if p.get("note") else "")
        unit = " (%)" if info(m).percent else ""
        h.append(f"<tr><td>{html.escape(str(p['method']))}</td><td>{html.escape(info(m).label + unit)}</td>"
                 f"<td>{html.escape(pub_text)}</td><td>{html.escape(ours_text)}</td><td>{html.escape(src)}</td></tr>")
        md.append(f"| {p['method']} | {info(m).label}{unit} | {pub_text} | {ours_text} | {src} |")
    h.append("</tbody></table>")
    return "".join(h), "\n".join(md)


# ------------------------------------------------------------------ the report
def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-").lower()


def _run_figures(rows: list[dict], group: pd.DataFrame, slug: str) -> list[tuple[str, list[Figure]]]:
    """The PNGs ``evaluate`` wrote, one gallery per kind, one image per method (first seed)."""
    first: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        first.setdefault(r["method"], r)
    kinds: dict[str, list[Figure]] = {}
    titles: dict[str, str] = {}
    for method in group["method"]:
        r = first.get(method)
        if r is None or not r.get("artifacts"):
            continue
        folder = Path(r["artifacts"])
        if not folder.is_dir():
            continue
        for png in sorted(folder.glob("*.png")):
            stem = png.stem
            title = next((t for frag, t in RUN_FIGURES if frag in stem.lower()), stem.replace("_", " "))
            titles[stem] = title
            kinds.setdefault(stem, []).append(Figure(f"{slug}-{_slug(method)}-{stem}.png", method, png.read_bytes(),
                                                     f"seed {r['seed']}"))
    return [(titles[k], v) for k, v in kinds.items()]


def build_sections(rows: list[dict], published: list[dict]) -> list[Section]:
    agg = aggregate(rows)
    metrics = headline_metrics(agg)
    sections = []
    for (ds, model, req), group in agg.groupby(["dataset", "model", "request"], sort=False):
        slug = _slug(ds, model, req)
        t_html, t_md = _table(group, metrics)
        p_html, p_md = _published(published, ds, model, req, group)
        sec = Section(f"{ds} · {model} · forget {req}", t_html, t_md, p_html, p_md)
        for name, title, png in (
                ("tradeoff", "Forget vs retain accuracy", scatter_tradeoff(group)),
                ("speedup", "Speed-up over retraining and over fast retraining (log scale)",
                 bars(group, ["speedup_vs_retrain", "speedup_vs_fast_retrain"], "Speed-up over retraining",
                      "× faster (log)", log=True)),
                ("mia", "Membership-inference gaps to retrain",
                 bars(group, [c[:-5] for c in group.columns if c.startswith("mia_") and c.endswith("_gap_mean")],
                      "MIA gap to the retrained model (0 = same as retrain)", "gap (percentage points)",
                      percent=True))):
            if png is not None:
                sec.figures.append(Figure(f"{slug}-{name}.png", title, png))
        group_rows = [r for r in rows if (r["dataset"], r["model"], r["request"]) == (ds, model, req)]
        sec.galleries = _run_figures(group_rows, group, slug)
        sections.append(sec)
    scaling = _scaling_section(rows)
    return sections + ([scaling] if scaling else [])


def _scaling_section(rows: list[dict]) -> Section | None:
    """Cost vs training-set size (log-log, fitted slopes) and quality vs retain-subset size, when the
    study varies either (see ``scaling.py``)."""
    slopes = cost_slopes(rows)
    cost_png, subset_png = plot_cost_vs_size(slopes), plot_quality_vs_subset(rows)
    if cost_png is None and subset_png is None:
        return None
    t_html, t_md = slope_table(slopes)
    sec = Section("Scaling: cost vs training-set size, quality vs retain subset", t_html, t_md)
    if cost_png is not None:
        sec.figures.append(Figure("scaling-cost-vs-size.png", "Seconds against training-set size (log-log)",
                                  cost_png))
    if subset_png is not None:
        sec.figures.append(Figure("scaling-quality-vs-subset.png", "Test accuracy on retained classes against "
                                  "retain-subset size", subset_png))
    return sec


_CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
 color:#222;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f4f6f8;position:sticky;top:0} td.method{text-align:left;white-space:nowrap}
.dir{color:#888;font-weight:normal;margin-left:3px;font-size:.85em}
td.best{background:#d9f2d9;font-weight:bold} tr.refrow td{background:#fafafa;color:#555}
.ref{font-size:.75em;color:#fff;background:#999;border-radius:3px;padding:0 4px;margin-left:4px}
.params{font-size:.8em;color:#555}
.figs{display:flex;flex-wrap:wrap;gap:1em} .figs figure{margin:0;max-width:48%}
.figs img{max-width:100%;border:1px solid #eee}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:.8em}
.gallery figure{margin:0} .gallery img{width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#555;text-align:center}
.legend{font-size:.85em;color:#555} .failed{color:#a00} code{background:#f4f4f4;padding:0 3px}
"""


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return f"<img alt='{html.escape(fig.title)}' src='data:image/png;base64,{data}'>"


def render_html(title: str, meta: str, sections: list[Section], failed: list[dict], versions: dict) -> str:
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p class='meta'>{meta}</p>",
           "<p class='legend'>Tables: mean ± std over seeds. Arrows: ↑ higher is better, ↓ lower is better, "
           "≈R closest to the retrained model is best, →0 gap closest to zero is best. The best unlearning "
           "method in each column is <span style='background:#d9f2d9;font-weight:bold'>&nbsp;marked&nbsp;</span>; "
           "the reference rows (original, retrain) are not ranked.</p>"]
    out.append("<h2>Contents</h2><ul>" + "".join(f"<li><a href='#s{i}'>{html.escape(s.title)}</a></li>"
                                                for i, s in enumerate(sections)) + "</ul>")
    for i, s in enumerate(sections):
        out.append(f"<h2 id='s{i}'>{html.escape(s.title)}</h2>{s.table_html}")
        if s.published_html:
            out.append(f"<h3>Published numbers beside ours</h3>{s.published_html}")
        if s.figures:
            out.append("<div class='figs'>" + "".join(
                f"<figure>{_img(f)}<figcaption>{html.escape(f.title)}</figcaption></figure>" for f in s.figures)
                       + "</div>")
        for gtitle, figs in s.galleries:
            out.append(f"<h3>{html.escape(gtitle)}</h3><div class='gallery'>" + "".join(
                f"<figure>{_img(f)}<figcaption>{html.escape(f.title)} ({html.escape(f.caption)})</figcaption>"
                f"</figure>" for f in figs) + "</div>")
    if failed:
        out.append("<h2 class='failed'>Failed runs</h2><ul>" + "".join(
            f"<li class='failed'>{html.escape(r['dataset'])}/{html.escape(r['model'])}/{html.escape(r['request'])}/"
            f"{html.escape(r['method'])}/seed {r['seed']}: <code>{html.escape(_first_line(r.get('error')))}</code></li>"
            for r in failed) + "</ul>")
    if versions:
        out.append("<h2>Environment</h2><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in sorted(versions.items())) + "</table>")
    out.append("</body></html>")
    return "\n".join(out)


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else "?"


def render_markdown(title: str, meta: str, sections: list[Section], failed: list[dict]) -> str:
    out = [f"# {title}", "", re.sub(r"<[^>]+>", "", meta), "",
           "Mean ± std over seeds. ↑ higher is better, ↓ lower is better, ≈R closest to retrain is best, "
           "→0 closest to zero is best; **bold** marks the best unlearning method per column.", ""]
    for s in sections:
        out += [f"## {s.title}", "", s.table_md, ""]
        if s.published_md:
            out += ["### Published numbers beside ours", "", s.published_md, ""]
        for f in s.figures:
            out += [f"![{f.title}](figures/{f.name})", ""]
        for gtitle, figs in s.galleries:
            out += [f"### {gtitle}", ""] + [f"![{f.title}](figures/{f.name}) " for f in figs] + [""]
    if failed:
        out += ["## Failed runs", ""] + [f"- {r['dataset']}/{r['model']}/{r['request']}/{r['method']}/seed "
                                         f"{r['seed']}: `{_first_line(r.get('error'))}`" for r in failed] + [""]
    return "\n".join(out)


def write_report(store_path: str | Path, out_dir: str | Path, study: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained), ``report.md`` and ``figures/*.png`` into ``out_dir``."""
    out = check_writable_dir(out_dir, "--out")
    with Store(store_path, create=False) as st:
        name = pick_study(st, study)
        rows = st.rows(name)
        failed = st.rows(name, status="failed")
        info_ = next((s for s in st.studies() if s["name"] == name), {"published": [], "file": "", "text": ""})
    if not rows:
        raise ObliviateError(f"study {name!r} has no finished run in {store_path}: nothing to report")
    rows, stale = split_current(rows, info_.get("text"), info_.get("file"))  # one row per method label
    sections = build_sections(rows, info_.get("published") or [])
    versions = (rows[0].get("record") or {}).get("versions", {})
    description = ""
    try:
        import yaml

        description = str((yaml.safe_load(info_.get("text") or "") or {}).get("description") or "")
    except Exception:  # the report must not fail on a study text it only quotes
        pass
    seeds = sorted({r["seed"] for r in rows})
    left_out = f"; {len(stale)} made with older parameters left out" if stale else ""
    meta = (f"{html.escape(description)}<br>" if description else "") + \
        f"{len(rows)} finished runs ({len(failed)} failed{left_out}), seeds {', '.join(map(str, seeds))}; " \
        f"store <code>{html.escape(str(store_path))}</code>; study file <code>{html.escape(info_.get('file') or '?')}" \
        f"</code>; written {now_iso()} by obliviate {html.escape(versions.get('obliviate', ''))}"
    title = f"obliviate study: {name}"
    html_path, md_path = out / "report.html", out / "report.md"
    for s in sections:
        for f in s.figures + [f for _, figs in s.galleries for f in figs]:
            write_bytes(out / "figures" / f.name, f.png)
    write_text(html_path, render_html(title, meta, sections, failed, versions))
    write_text(md_path, render_markdown(title, meta, sections, failed))
    return html_path, md_path
