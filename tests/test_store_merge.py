"""`obliviate results merge`: stores made on separate machines become one, one row per run key."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.errors import ObliviateError
from obliviate.harness.store import Store, merge_stores


def said(result) -> str:
    """The CLI's output with its line wrapping undone (rich wraps at the terminal width, which varies)."""
    return " ".join(result.output.split())


def _row(key: str, status: str = "done", forget: float = 0.5, seconds: float = 1.0, seed: int = 0) -> dict:
    done = status == "done"
    return {"key": key, "study": "s", "dataset": "digits", "model": "cnn", "request": "classes 3",
            "method": f"m-{key}", "method_name": "finetune", "params": {"epochs": 1}, "seed": seed, "status": status,
            "metrics": {"forget_acc": forget, "seconds": seconds, "per_class": [forget, 1.0]} if done else None,
            "forget_acc": forget if done else None, "config": {"key": key}, "error": None if done else "boom",
            "finished": "2026-01-01T00:00:00+00:00"}


def _store(path: Path, rows: list[dict], text: str = "name: s\n") -> Path:
    with Store(path) as st:
        st.put_study("s", "s.yaml", text, [])
        for r in rows:
            st.put(r)
    return path


def _rows(path: Path) -> dict[str, dict]:
    with Store(path) as st:
        return {r["key"]: r for r in st.rows(status=None)}


def test_overlapping_stores_merge_without_duplicates(tmp_path):
    # machine A: k1, k2 done, k3 failed; machine B: k2 again (other timing), k3 done, k4
    a = _store(tmp_path / "a.sqlite", [_row("k1"), _row("k2"), _row("k3", "failed")])
    b = _store(tmp_path / "b.sqlite", [_row("k2", seconds=7.0), _row("k3", forget=0.25), _row("k4")])
    into = tmp_path / "out" / "c.sqlite"
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(b), "--into", str(into)])
    assert r.exit_code == 0, r.output
    assert "3 new runs" in said(r) and "0 conflicts" in said(r) and "holds 4 runs" in said(r), r.output
    rows = _rows(into)
    assert sorted(rows) == ["k1", "k2", "k3", "k4"]
    assert rows["k3"]["status"] == "done" and rows["k3"]["metrics"]["forget_acc"] == 0.25  # finished beats failed
    assert rows["k2"]["metrics"]["seconds"] == 1.0  # the first store's row of a duplicate is kept
    with Store(into) as st:
        assert [s["name"] for s in st.studies()] == ["s"]
    # merging again changes nothing: every row is already there
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(b), "--into", str(into)])
    assert r.exit_code == 0 and "0 new runs" in said(r), r.output
    assert _rows(into) == rows


def test_conflicting_results_are_reported_and_the_first_kept(tmp_path):
    a = _store(tmp_path / "a.sqlite", [_row("k1", forget=0.5)])
    b = _store(tmp_path / "b.sqlite", [_row("k1", forget=0.75), _row("k2")], text="name: s\nseeds: [1]\n")
    into = tmp_path / "c.sqlite"
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(b), "--into", str(into)])
    assert r.exit_code == 1, r.output
    assert "conflict" in said(r) and "forget_acc 0.5 vs 0.75" in said(r) and "per_class" in said(r), r.output
    assert "study file" in said(r)  # a different study text is a note, not a conflict
    assert _rows(into)["k1"]["metrics"]["forget_acc"] == 0.5 and len(_rows(into)) == 2


def test_merge_into_an_existing_store_and_into_itself(tmp_path):
    a = _store(tmp_path / "a.sqlite", [_row("k1")])
    b = _store(tmp_path / "b.sqlite", [_row("k2")])
    reports = merge_stores([a, b], a)  # `merge A B --into A` adds B to A
    assert list(reports) == [str(b)] and reports[str(b)].added == 1
    assert sorted(_rows(a)) == ["k1", "k2"]
    with Store(a) as st, pytest.raises(ObliviateError, match="into itself"):
        st.merge(a)


def test_bad_sources_fail_early_and_write_nothing(tmp_path):
    a = _store(tmp_path / "a.sqlite", [_row("k1")])
    into = tmp_path / "c.sqlite"
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(tmp_path / "missing.sqlite"), "--into", str(into)])
    assert r.exit_code == 2 and "missing.sqlite does not exist" in said(r), r.output
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database at all " * 100)
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(junk), "--into", str(into)])
    assert r.exit_code == 2 and "not a readable obliviate results store" in said(r), r.output
    assert not into.exists() and not list(tmp_path.glob(".c.sqlite*"))  # no half-made store left behind


def _noisy(key: str, **metrics) -> dict:
    row = _row(key)
    row["metrics"] = {**row["metrics"], **metrics}
    return row


def test_float_noise_is_a_duplicate_and_a_real_change_a_conflict_naming_the_source_stores(tmp_path):
    # issue 24: the same study on a Ray cluster (1 thread per node) and locally (2 threads)
    a = _store(tmp_path / "a.sqlite", [_noisy("k1", activation_distance=0.92474, js=0.66121, zrf=0.46093,
                                              retain_acc=0.986981)])
    b = _store(tmp_path / "b.sqlite", [_noisy("k1", activation_distance=0.92481, js=0.66124, zrf=0.46090,
                                              retain_acc=0.986168)])  # one of 1,229 predictions flipped
    into = tmp_path / "c.sqlite"
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(b), "--into", str(into)])
    assert r.exit_code == 0 and "1 already there, 0 conflicts" in said(r), r.output
    # an accuracy moved by a point: beyond the noise, a conflict; the kept row's store is named, not a temp file
    c = _store(tmp_path / "c2.sqlite", [_noisy("k1", activation_distance=0.92474, js=0.66121, zrf=0.46093,
                                               retain_acc=0.976981)])
    r = CliRunner().invoke(app, ["results", "merge", str(a), str(c), "--into", str(tmp_path / "d.sqlite")])
    assert r.exit_code == 1 and "retain_acc 0.987 vs 0.977" in said(r), r.output
    text = said(r)
    assert f"kept the row of {a}, not {tmp_path / 'c2.sqlite'}'s" in text and "merging" not in text, r.output
