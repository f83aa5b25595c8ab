"""The HTML report opens in a real headless browser (Chromium) and shows every image it embeds."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile

import pytest
from conftest import tiny_study
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.harness.executor import bench

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PUBLISHED = """\
description: report rendering check
published:
  - {method: finetune, metric: forget_acc, value: 0.0, source: "a published number (test)"}
"""

# After load, mark the body with how many images decoded (complete with a natural width).
MARKER_JS = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script></body>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               "--no-first-run", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    tiny_study(folder / "study.yaml", name="browser", figures=True, extra=PUBLISHED)
    store = folder / "results.sqlite"
    res = bench(folder / "study.yaml", store, work=tmp_path_factory.getbasetemp() / "harness-work")
    assert not res.outcome.failed, [r.get("error") for r in res.outcome.failed]
    out = folder / "report"
    r = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_report_is_self_contained(report):
    html = (report / "report.html").read_text()
    srcs = re.findall(r"<img[^>]+src='([^']+)'", html)
    # tradeoff + MIA-gap plots, and per method (retrain, finetune) 3 evaluate figures
    assert len(srcs) >= 2 + 2 * 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere
    assert "class='best'" in html and "a published number (test)" in html
    assert "GradCAM" in html and "Layer-wise weight distance" in html and "Prediction distribution" in html
    md = (report / "report.md").read_text()
    for name in re.findall(r"\]\(figures/([^)]+)\)", md):
        assert (report / "figures" / name).exists()
    assert "| finetune |" in md


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_with_its_images_in_headless_chromium(report):
    html = (report / "report.html").read_text()
    n_img = html.count("<img")
    probe = report / "probe.html"
    probe.write_text(html.replace("</body>", MARKER_JS))
    r = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = re.search(r'data-images="(\d+)/(\d+)"', r.stdout)
    assert m, r.stderr[-2000:]
    assert int(m.group(2)) == n_img and int(m.group(1)) == n_img  # every image decoded and has a size
    shot = report / "screenshot.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", (report / "report.html").as_uri())
    assert shot.exists() and shot.stat().st_size > 20_000, r.stderr[-2000:]
