"""The benchmark harness: study files, resume after a kill, concurrent writers, results export, Ray."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import FINETUNE, tiny_study, tiny_study_yaml
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.errors import ObliviateError
from obliviate.harness.executor import bench
from obliviate.harness.runner import check_study
from obliviate.harness.store import Store
from obliviate.harness.study import load_study

REPO = Path(__file__).resolve().parents[1]

TINY = tiny_study_yaml(seeds=(0, 1))  # the error cases below vary its text


def shared_work(tmp_path_factory) -> Path:
    """One work folder for the whole session: originals and retrained models are content-addressed."""
    return tmp_path_factory.getbasetemp() / "harness-work"


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    study = tiny_study(folder / "tiny.yaml", seeds=(0, 1))
    store = folder / "results.sqlite"
    res = bench(study, store, work=shared_work(tmp_path_factory))
    assert res.outcome is not None and not res.outcome.failed, [r.get("error") for r in res.outcome.failed]
    return study, store, shared_work(tmp_path_factory)


def test_bench_stores_every_run_and_rerun_skips_them(tiny_store):
    study, store, work = tiny_store
    with Store(store) as st:
        rows = st.rows("tiny")
    assert len(rows) == 4  # 2 seeds x (retrain, finetune)
    assert {(r["method"], r["seed"]) for r in rows} == {("retrain", 0), ("retrain", 1), ("finetune", 0),
                                                         ("finetune", 1)}
    ft = next(r for r in rows if r["method"] == "finetune")
    assert 0.0 <= ft["metrics"]["forget_acc"] <= 1.0 and ft["metrics"]["retain_acc"] > 0.3
    assert ft["metrics"]["speedup_vs_retrain"] is not None and ft["config"]["train"]["epochs"] == 1
    assert ft["record"]["versions"]["torch"] and ft["params"]["epochs"] == 0.5
    again = bench(study, store, work=work)
    assert again.outcome is None and again.already_done == 4
    with Store(store) as st:
        assert [r["finished"] for r in st.rows("tiny")] == [r["finished"] for r in rows]


# ------------------------------------------------------------------ resume after a killed run
_SLOW_METHOD = """
import os, sys, time
from dataclasses import dataclass
from obliviate.methods.base import Method, register

@register
class Stall(Method):
    '''Test-only method: stalls (so the run can be killed mid-way) when OBLIVIATE_TEST_STALL is set.'''
    name = "test-stall"
    summary = "test only"
    needs = frozenset()

    @dataclass
    class Params:
        pass

    def run(self, ctx, p):
        if os.environ.get("OBLIVIATE_TEST_STALL"):
            time.sleep(600)
        return ctx.model
"""


@pytest.fixture
def stall_method():
    namespace: dict = {}
    exec(compile(_SLOW_METHOD, "stall", "exec"), namespace)
    yield
    from obliviate.methods.base import METHODS

    METHODS.pop("test-stall", None)


def test_resume_after_killed_run_finishes_only_missing_rows(tmp_path, tiny_store, stall_method):
    _, _, work = tiny_store
    # one seed: retrain, finetune, then test-stall (which hangs when the env flag is set)
    study = tiny_study(tmp_path / "crash.yaml", name="crash", methods=("retrain", FINETUNE, "test-stall"))
    store = tmp_path / "results.sqlite"
    script = (_SLOW_METHOD + "\nfrom obliviate.harness.executor import bench\n"
              f"bench({str(study)!r}, {str(store)!r}, work={str(work)!r})\n")
    env = dict(os.environ, OBLIVIATE_TEST_STALL="1")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:  # seed 0's retrain and finetune finish, then test-stall hangs: kill -9 the process there
        deadline = time.time() + 240
        done = 0
        while time.time() < deadline and proc.poll() is None:
            if store.exists():
                try:
                    with sqlite3.connect(store) as c:
                        done = c.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert done >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with Store(store) as st:
        before = {r["key"]: r for r in st.rows("crash", status=None)}
    assert len(before) == 2 and all(r["status"] == "done" for r in before.values())

    res = bench(study, store, work=work)  # OBLIVIATE_TEST_STALL unset here: the method returns at once
    assert res.already_done == 2
    assert len(res.outcome.done) == 1 and not res.outcome.failed  # only the missing row ran
    assert not set(before) & {r["key"] for r in res.outcome.done}
    with Store(store) as st:
        after = {r["key"]: r for r in st.rows("crash")}
    assert len(after) == 3 and {r["method"] for r in after.values()} == {"retrain", "finetune", "test-stall"}
    for key, row in before.items():  # finished rows untouched
        assert after[key]["finished"] == row["finished"] and after[key]["metrics"] == row["metrics"]


def test_failed_run_is_recorded_and_retried(tmp_path, tiny_store):
    """A run that raises becomes a 'failed' row with its error; the next bench retries it."""
    _, _, work = tiny_store
    study = tiny_study(tmp_path / "fail.yaml", name="fail",
                       methods=({"name": "scrub", "params": {"epochs": 1, "lr_decay_epochs": "'soon'"}},))
    res = bench(study, tmp_path / "r.sqlite", work=work)  # passes the study checks, fails when it runs
    assert len(res.outcome.failed) == 1 and "'soon' is not a comma list" in res.outcome.failed[0]["error"]
    with Store(tmp_path / "r.sqlite") as st:
        assert [r["status"] for r in st.rows("fail", status=None)] == ["failed"]
    res2 = bench(study, tmp_path / "r.sqlite", work=work)
    assert res2.already_done == 0 and len(res2.outcome.failed) == 1  # retried, not skipped


# ------------------------------------------------------------------ clear errors with line numbers
BAD = [
    ("syntax", TINY.replace("models: [cnn]", "models: [cnn"), r"bad.yaml:\d+:\d+: YAML syntax error"),
    ("unknown method", TINY.replace("  - retrain\n", "  - retrian\n"),
     "bad.yaml:10: methods[0].name: unknown method 'retrian' (did you mean 'retrain'?)"),
    ("wrong type", TINY.replace("epochs: 1,", "epochs: three,"),
     "bad.yaml:5: train.epochs: expected an integer, got a string 'three'"),
    ("unknown key", TINY.replace("seeds:", "sedes:"),
     "bad.yaml:13: sedes: unknown study key 'sedes' (did you mean 'seeds'?)"),
    ("param type", TINY.replace("params: {epochs: 0.5}", "params: {epochs: 0.5, lr: fast}"),
     "bad.yaml:12: methods[1].params.lr: finetune: parameter lr='fast': expected float"),
    ("unknown param", TINY.replace("params: {epochs: 0.5}", "params: {epocs: 2}"),
     "bad.yaml:12: methods[1].params.epocs: finetune: unknown parameter 'epocs'"),
    ("two kinds", TINY.replace("  - classes: [3]\n", "  - classes: [3]\n    fraction: 0.1\n"),
     "bad.yaml:7: requests[0]: a request takes exactly one of"),
    ("duplicate key", TINY.replace("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"),
     "bad.yaml:14: key 'seeds' appears twice (first on line 13)"),
    ("param not finite", TINY.replace("params: {epochs: 0.5}", "params: {epochs: 0.5, lr: .nan}"),
     "bad.yaml:12: methods[1].params.lr: finetune: lr=nan is not a finite number (allowed: > 0)"),
    ("param out of range in a grid", TINY.replace("params: {epochs: 0.5}", "params: {epochs: [0.5, 0]}"),
     "bad.yaml:12: methods[1].params.epochs: finetune: epochs=0 is out of range (allowed: > 0)"),
    ("param unknown choice", TINY.replace("params: {epochs: 0.5}", "params: {optimizer: rmsprop}"),
     "bad.yaml:12: methods[1].params.optimizer: finetune: unknown optimizer 'rmsprop'; choose one of: sgd, adam"),
    ("train option out of range", TINY.replace("lr: 0.05}", "lr: -0.05}"),
     "bad.yaml:5: train.lr: train: lr=-0.05 is out of range (allowed: > 0)"),
    ("train option unknown choice", TINY.replace("lr: 0.05}", "lr: 0.05, schedule: linear}"),
     "bad.yaml:5: train.schedule: train: unknown schedule 'linear'; choose one of: onecycle, cosine, constant"),
]


@pytest.mark.parametrize("case,text,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_study_names_the_line(tmp_path, case, text, expected):
    import re

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ObliviateError) as exc:
        load_study(path)
    assert re.search(re.escape(expected) if "\\d" not in expected else expected, str(exc.value)), str(exc.value)


DATA_BAD = [
    ("class out of range", TINY.replace("classes: [3]", "classes: [3, 12]"),
     "bad.yaml:7: requests[0]: on data set 'digits': class 12 out of range: this data set has classes 0..9"),
    ("model does not fit data", TINY.replace("name: digits", "name: letter"),
     "bad.yaml:4: models[0]: model 'cnn' does not fit data set 'letter'"),
    ("id not in training set", TINY.replace("classes: [3]", "ids: [1, 99999]"),
     "bad.yaml:7: requests[0]: on data set 'digits': sample id 99999 is not in the training set"),
    ("data cap out of range", TINY.replace("  - name: digits\n", "  - name: digits\n    train_per_class: -5\n"),
     "bad.yaml:3: datasets[0]: data: train_per_class=-5 is out of range (allowed: >= 1)"),
]


@pytest.mark.parametrize("case,text,expected", DATA_BAD, ids=[b[0] for b in DATA_BAD])
def test_study_mismatched_with_data_names_the_line(tmp_path, case, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ObliviateError) as exc:
        check_study(load_study(path))
    assert expected in str(exc.value), str(exc.value)


def test_cli_reports_study_error_on_one_line_and_dry_run_lists_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("  - retrain\n", "  - retrian\n"))
    r = CliRunner().invoke(app, ["bench", str(bad), "--store", str(tmp_path / "s.sqlite")])
    assert r.exit_code == 2 and "bad.yaml:10" in r.output and "Traceback" not in r.output
    good = tmp_path / "good.yaml"
    good.write_text(TINY)
    r = CliRunner().invoke(app, ["bench", str(good), "--store", str(tmp_path / "s.sqlite"), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "4 runs" in r.output and "4 to run" in r.output
    assert Store(tmp_path / "s.sqlite").count() == 0


def test_shipped_studies_parse():
    files = sorted((REPO / "studies").glob("*.yaml")) + sorted((REPO / "benchmarks").glob("*.yaml"))
    assert any(f.name == "quick.yaml" for f in files) and any(f.name == "backdoor-fmnist-full.yaml" for f in files)
    for f in files:
        s = load_study(f)
        assert s.methods and s.requests and s.datasets


# ------------------------------------------------------------------ concurrent writers
def _writer(store: str, who: int, n: int) -> None:
    with Store(store) as st:
        for i in range(n):
            st.put({"key": f"w{who}-{i}", "study": "conc", "dataset": "d", "model": "m", "request": "r",
                    "method": f"m{who}", "method_name": "x", "params": {}, "seed": i, "status": "done",
                    "metrics": {"forget_acc": i / n}, "config": {"i": i}})


def test_two_concurrent_writers_lose_no_row(tmp_path):
    store = str(tmp_path / "conc.sqlite")
    ctx = mp.get_context("fork")
    n = 150
    procs = [ctx.Process(target=_writer, args=(store, w, n)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store(store) as st:
        rows = st.rows("conc")
        assert len(rows) == 2 * n
        assert {r["key"] for r in rows} == {f"w{w}-{i}" for w in range(2) for i in range(n)}
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ------------------------------------------------------------------ results export
def test_results_csv_has_mean_and_std_over_seeds(tiny_store, tmp_path):
    _, store, _ = tiny_store
    out = tmp_path / "r.csv"
    r = CliRunner().invoke(app, ["results", "--store", str(store), "--format", "csv", "--out", str(out)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert len(df) == 2 and set(df["method"]) == {"retrain", "finetune"}
    with Store(store) as st:
        raw = [x for x in st.rows("tiny") if x["method"] == "finetune"]
    vals = pd.Series([x["metrics"]["forget_acc"] for x in raw])
    row = df[df["method"] == "finetune"].iloc[0]
    assert row["n_seeds"] == 2 and row["seeds"] == "0,1"
    assert row["forget_acc_mean"] == pytest.approx(vals.mean())
    assert row["forget_acc_std"] == pytest.approx(vals.std(ddof=1))
    pq = tmp_path / "r.parquet"
    r = CliRunner().invoke(app, ["results", "--store", str(store), "--format", "parquet", "--out", str(pq)])
    assert r.exit_code == 0 and pd.read_parquet(pq).shape == df.shape
    r = CliRunner().invoke(app, ["results", "--store", str(store)])
    assert r.exit_code == 0 and "finetune" in r.output and "±" in r.output
    r = CliRunner().invoke(app, ["results", "--store", str(tmp_path / "missing.sqlite")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_results_and_report_name_their_store_and_report_has_a_default_folder(tiny_store):
    _, store, _ = tiny_store
    r = CliRunner().invoke(app, ["results", "--store", str(store)])
    assert r.exit_code == 0 and f"study 'tiny' from {store}: 4 finished runs" in r.output.replace("\n", "")
    r = CliRunner().invoke(app, ["results", "--store", str(store), "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.startswith("study,dataset,")  # stdout stays pure CSV ...
    assert f"from {store}" in r.stderr  # ... and the store is named on stderr
    r = CliRunner().invoke(app, ["report", "--store", str(store)])
    assert r.exit_code == 0, r.output
    folder = store.parent / "reports" / "tiny"
    assert (folder / "report.html").is_file() and (folder / "report.md").is_file()
    printed = r.output.replace("\n", "")
    assert f"from {store}" in printed and str(folder / "report.html") in printed


# ------------------------------------------------------------------ Ray
def test_ray_executor_local_cluster(tiny_store, tmp_path):
    pytest.importorskip("ray")
    _, _, work = tiny_store
    # the same study (same keys), one seed and one method to keep it short
    study = tiny_study(tmp_path / "tiny.yaml", methods=(FINETUNE,))
    store = tmp_path / "ray.sqlite"
    res = bench(study, store, work=work, executor="ray", workers=2)
    assert len(res.outcome.done) == 1 and not res.outcome.failed, [r.get("error") for r in res.outcome.failed]
    with Store(store) as st, Store(tiny_store[1]) as local:
        ray_rows = {r["key"]: r for r in st.rows("tiny")}
        local_rows = {r["key"]: r for r in local.rows("tiny")}
    assert set(ray_rows) <= set(local_rows)  # same content addresses wherever a run executes
    for k, r in ray_rows.items():  # same shared models, same method seed: same forget accuracy
        assert r["metrics"]["forget_acc"] == pytest.approx(local_rows[k]["metrics"]["forget_acc"], abs=0.02)


def test_ray_missing_gives_install_hint(tiny_store, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ObliviateError, match=r"pip install obliviate\[ray\]"):
        bench(tiny_store[0], executor="ray")


def test_built_in_demo_study_is_valid_and_small(tmp_path):
    """``obliviate demo`` runs this study on a new user's laptop: it must validate (every parameter in its
    declared range) and stay the size its README timing was measured at."""
    from obliviate.cli.demo_cmd import demo_study

    res = bench(demo_study(), tmp_path / "demo.sqlite", dry_run=True)
    assert [t.method for t in res.plan.tasks] == ["original", "retrain", "unsir", "fcalb", "finetune"]
    (ds,) = res.study.datasets
    assert ds.spec["train_per_class"] == 500 and res.study.evaluate["relearn"] is False


def test_demo_command_reports_each_method_and_ends_with_the_report_path(tmp_path, monkeypatch):
    import obliviate.cli.demo_cmd as demo_cmd

    study = tiny_study(tmp_path / "tiny.yaml")
    monkeypatch.setattr(demo_cmd, "demo_study", lambda: study)
    r = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert any("[1/2] retrain: done" in x for x in lines) and any("[2/2] finetune: done" in x for x in lines)
    assert lines[-1].startswith(f"report: {tmp_path / 'demo' / 'report.html'}")
    assert (tmp_path / "demo" / "report.html").is_file()


# ------------------------------------------------------------------ rows made with older parameters
def test_results_leave_out_rows_made_with_older_parameters(tiny_store, tmp_path):
    """After an upgrade changes a default, a re-run adds rows under new keys; the old ones stay in the store.
    Tables show the study as it resolves now, one row per method label, and say what they left out."""
    import shutil

    from obliviate.harness.report import write_report

    _, store, _ = tiny_store
    copy = tmp_path / "store.sqlite"
    shutil.copy(store, copy)
    with Store(copy) as st:
        old = next(r for r in st.rows("tiny") if r["method"] == "finetune")
        st.put({**old, "key": "0ld" + old["key"][3:], "params": {**old["params"], "lr": 0.5},
                "metrics": {**old["metrics"]}})
        for row in [r for r in st.rows("tiny") if r["method"] == "retrain"]:  # stored last, as after a re-run
            st.put(row)
    r = CliRunner().invoke(app, ["results", "--store", str(copy), "--study", "tiny", "--all"])
    assert r.exit_code == 0, r.output
    assert "4 finished runs and 1 made with older parameters (not shown" in " ".join(r.output.split())
    assert "older params" not in r.output
    assert r.output.index("│ retrain") < r.output.index("│ finetune")  # the study's order, not the store's
    r = CliRunner().invoke(app, ["results", "--store", str(copy), "--study", "tiny", "--older", "--all"])
    assert r.exit_code == 0 and "finetune (older params)" in r.output, r.output
    r = CliRunner().invoke(app, ["results", "--store", str(copy), "--study", "tiny", "--format", "csv", "--raw"])
    assert r.exit_code == 0 and len(pd.read_csv(__import__("io").StringIO(r.stdout))) == 4
    html_path, _ = write_report(copy, tmp_path / "report", "tiny")
    assert "1 made with older parameters left out" in html_path.read_text()
