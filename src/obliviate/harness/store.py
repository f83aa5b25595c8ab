"""The results store: one SQLite file (WAL mode), one row per run, safe for concurrent writers.

Why SQLite: one file a user can copy, query with any tool, and that several processes (local runs,
Ray workers on one machine) can append to at once. WAL lets readers work while a writer commits;
``BEGIN IMMEDIATE`` plus a busy timeout and a retry loop make two writers queue, never lose a row.
A row is committed the moment its run finishes, so a crash loses only the run in flight.
(SQLite's locking needs a local file system: on a Ray cluster only the driver writes the store; stores
made on separate machines are combined with ``Store.merge``, ``obliviate results merge``.)
"""
from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..env import now_iso
from ..errors import ObliviateError
from ..io import to_json

SCHEMA_VERSION = 1
#: Metrics copied into their own columns for plain-SQL queries; all metrics live in ``metrics``.
KEY_METRICS = ("forget_acc", "retain_acc", "test_acc", "seconds", "speedup_vs_retrain")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    method TEXT NOT NULL,
    method_name TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    {", ".join(f"{m} REAL" for m in KEY_METRICS)},
    metrics TEXT,
    config TEXT NOT NULL,
    record TEXT,
    artifacts TEXT,
    error TEXT,
    started TEXT,
    finished TEXT
);
CREATE INDEX IF NOT EXISTS runs_study ON runs(study, status);
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    file TEXT,
    text TEXT,
    published TEXT,
    updated TEXT
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""

ROW_FIELDS = ("key", "study", "dataset", "model", "request", "method", "method_name", "params", "seed", "status",
              *KEY_METRICS, "metrics", "config", "record", "artifacts", "error", "started", "finished")
_JSON_FIELDS = ("params", "metrics", "config", "record")


def _retrying(fn, *, attempts: int = 200):
    """Run ``fn`` again while SQLite says the file is locked or busy (another writer holds it)."""
    delay = 0.01
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if ("locked" not in msg and "busy" not in msg) or i == attempts - 1:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 1.0)


def _clean(v: Any) -> Any:
    """NaN/inf are not JSON; store them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Store:
    """Open (and create) a results file. Use as a context manager or call ``close``.

    ``readonly`` opens an existing file without creating, migrating or writing it (``bench --dry-run``).
    """

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        if (readonly or not create) and not self.path.exists():
            raise ObliviateError(f"results store {self.path} does not exist (run `obliviate bench` first, "
                                 "or pass --store)")
        if readonly:
            self._open_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            _retrying(lambda: self.conn.execute("PRAGMA journal_mode = WAL"))
            self.conn.execute("PRAGMA synchronous = NORMAL")
            _retrying(lambda: self._write(self._schema))
        except sqlite3.DatabaseError as exc:
            raise ObliviateError(f"{self.path} is not a readable obliviate results store: {exc}") from None

    # -- plumbing
    def _open_readonly(self) -> None:
        try:
            self.conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=60.0,
                                        isolation_level=None)
            self.conn.execute("SELECT key FROM runs LIMIT 1")
        except sqlite3.DatabaseError as exc:
            raise ObliviateError(f"{self.path} is not a readable obliviate results store: {exc}") from None

    def _schema(self, c: sqlite3.Connection) -> None:
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                c.execute(stmt)
        c.execute("INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def _write(self, fn) -> Any:
        """One write transaction, taken with BEGIN IMMEDIATE so the lock is held from the start."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            out = fn(c)
            c.execute("COMMIT")
            return out
        except BaseException:
            try:
                c.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing
    def put(self, row: dict) -> None:
        """Insert or replace one run's row (keyed by its content address), committed at once."""
        values = _row_values(row)
        _retrying(lambda: self._write(lambda c: c.execute(_PUT_SQL, values)))

    def put_study(self, name: str, file: str, text: str, published: list[dict]) -> None:
        sql = "INSERT OR REPLACE INTO studies(name, file, text, published, updated) VALUES (?, ?, ?, ?, ?)"
        args = (name, file, text, json.dumps(published), now_iso())
        _retrying(lambda: self._write(lambda c: c.execute(sql, args)))

    def merge(self, other: str | Path, origin: dict[str, str] | None = None) -> "MergeReport":
        """Copy another store's rows into this one, in one transaction; rows are matched by run key.

        A new key is added; a finished row replaces a failed one; when both stores finished a run and
        its metrics differ by more than float noise (``MERGE_REL_TOL``/``MERGE_ABS_TOL``, costs aside), this
        store's row is kept and the difference reported. ``origin`` (key -> the store a row came from) names
        the kept row's store in that report, and is updated with the rows taken from ``other``.
        """
        origin = {} if origin is None else origin
        if Path(other).resolve() == self.path.resolve():
            raise ObliviateError(f"cannot merge {other} into itself")
        with Store(other, create=False) as src:
            rows, studies = src.rows(status=None), src.studies()
        report, writes = MergeReport(), []
        for row in rows:
            mine = self.get(row["key"])
            if mine is None or (mine["status"] != "done" and row["status"] == "done"):
                writes.append(_row_values(row))
                origin[row["key"]] = str(other)
                report.added += mine is None
                report.upgraded += mine is not None
            elif mine["status"] == row["status"] == "done" and (diff := _metric_diff(mine, row)):
                what = f"{row['dataset']}/{row['model']}/{row['request']}/{row['method']}/seed {row['seed']}"
                report.conflicts.append(f"{row['study']}: {what} (key {row['key'][:10]}): {diff}; "
                                        f"kept the row of {origin.get(row['key'], str(self.path))}, not {other}'s")
            else:
                report.duplicates += 1
        mine_studies = {s["name"]: s for s in self.studies()}
        new_studies = []
        for s in studies:
            if s["name"] not in mine_studies:
                new_studies.append((s["name"], s["file"], s["text"], json.dumps(s["published"]), s["updated"]))
            elif (s["text"] or "").strip() != (mine_studies[s["name"]]["text"] or "").strip():
                report.notes.append(f"study {s['name']!r}: the study file in {other} differs from this store's; "
                                    "kept this store's (rows are matched by run key either way)")

        def write(c: sqlite3.Connection) -> None:
            c.executemany(_PUT_SQL, writes)
            c.executemany("INSERT OR IGNORE INTO studies(name, file, text, published, updated) VALUES (?, ?, ?, ?, ?)",
                          new_studies)

        _retrying(lambda: self._write(write))
        return report

    # -- reading
    def _decode(self, cur: sqlite3.Cursor) -> list[dict]:
        names = [d[0] for d in cur.description]
        out = []
        for r in cur.fetchall():
            row = dict(zip(names, r))
            for f in _JSON_FIELDS:
                if row.get(f) is not None:
                    row[f] = json.loads(row[f])
            out.append(row)
        return out

    def get(self, key: str) -> dict | None:
        rows = self._decode(self.conn.execute("SELECT * FROM runs WHERE key = ?", (key,)))
        return rows[0] if rows else None

    def done_keys(self, study: str | None = None) -> set[str]:
        q, args = "SELECT key FROM runs WHERE status = 'done'", ()
        if study is not None:
            q, args = q + " AND study = ?", (study,)
        return {r[0] for r in self.conn.execute(q, args)}

    def rows(self, study: str | None = None, status: str | None = "done") -> list[dict]:
        q, args = "SELECT * FROM runs WHERE 1=1", []
        if study is not None:
            q += " AND study = ?"
            args.append(study)
        if status is not None:
            q += " AND status = ?"
            args.append(status)
        return self._decode(self.conn.execute(q + " ORDER BY rowid", args))

    def count(self, study: str | None = None) -> int:
        if study is None:
            return self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM runs WHERE study = ?", (study,)).fetchone()[0]

    def studies(self) -> list[dict]:
        cur = self.conn.execute("SELECT name, file, text, published, updated FROM studies ORDER BY updated")
        return [{"name": n, "file": f, "text": t, "published": json.loads(p or "[]"), "updated": u}
                for n, f, t, p, u in cur.fetchall()]

    def study_names(self) -> list[str]:
        names = [r[0] for r in self.conn.execute("SELECT DISTINCT study FROM runs ORDER BY study")]
        return names or [s["name"] for s in self.studies()]


_PUT_SQL = f"INSERT OR REPLACE INTO runs({', '.join(ROW_FIELDS)}) VALUES ({', '.join('?' * len(ROW_FIELDS))})"
#: Metrics that measure cost (time, memory): they differ between machines, so never a merge conflict.
_COST_WORDS = ("seconds", "speedup", "memory")
#: Two finished rows of one run key are duplicates when every result metric agrees within
#: ``math.isclose(rel_tol=MERGE_REL_TOL, abs_tol=MERGE_ABS_TOL)``. Chosen from measured noise: the tiny digits
#: study (retrain, finetune, UNSIR) run with 1 and with 2 torch threads differs by at most 1.4e-3 relative
#: (UNSIR's js_to_retrained; activation_distance 1.1e-3) and 8.1e-4 absolute on an accuracy (one of 1,229
#: retain predictions flipped); retrain and finetune by 3e-8. The tolerance is about 3.5x the relative noise;
#: a metric that moves by more (e.g. an accuracy by more than half a point) is a conflict.
MERGE_REL_TOL = 5e-3
MERGE_ABS_TOL = 1e-3


def _row_values(row: dict) -> list:
    values = []
    for f in ROW_FIELDS:
        v = row.get(f)
        if f in _JSON_FIELDS and v is not None and not isinstance(v, str):
            v = to_json(_json_safe(v))
        values.append(_clean(v))
    return values


@dataclass
class MergeReport:
    added: int = 0  # runs new to the store
    upgraded: int = 0  # failed here, finished in the other store
    duplicates: int = 0  # already here
    conflicts: list[str] = field(default_factory=list)  # finished in both, with different results
    notes: list[str] = field(default_factory=list)


def _metric_diff(a: dict, b: dict) -> str:
    """The result metrics two finished rows disagree on ("" when none), cost metrics aside."""
    ma, mb = a.get("metrics") or {}, b.get("metrics") or {}
    diffs = []
    for k in sorted(set(ma) | set(mb)):
        if any(w in k for w in _COST_WORDS):
            continue
        x, y = ma.get(k), mb.get(k)
        if not _close(x, y):
            diffs.append(f"{k} {x:.4g} vs {y:.4g}" if isinstance(x, float) and isinstance(y, float) else k)
    if not diffs:
        return ""
    return f"{len(diffs)} metrics differ ({', '.join(diffs[:3])}{', ...' if len(diffs) > 3 else ''})"


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return math.isclose(x, y, rel_tol=MERGE_REL_TOL, abs_tol=MERGE_ABS_TOL)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y))
    return x == y


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return _clean(obj)


def merge_stores(sources: list[str | Path], into: str | Path) -> dict[str, MergeReport]:
    """Merge results stores made separately into ``into`` (created when missing), one report per source.

    A new ``into`` appears only once every source is in it; an existing one takes each source in one
    transaction. A source that is ``into`` itself is skipped, so ``merge A B --into A`` adds B to A.
    """
    into = Path(into)
    todo: list[Path] = []
    for src in map(Path, sources):
        if not src.exists():
            raise ObliviateError(f"results store {src} does not exist")
        Store(src, create=False).close()  # fail on a file that is no store before writing anything
        if src.resolve() != into.resolve() and src.resolve() not in {t.resolve() for t in todo}:
            todo.append(src)
    if into.exists() and not into.is_file():
        raise ObliviateError(f"--into {into} exists and is not a file")
    target = into if into.exists() else into.parent / f".{into.name}.merging-{os.getpid()}"
    try:
        with Store(target) as store:
            origin: dict[str, str] = {}  # key -> the source store its row came from (never the temporary file)
            reports = {str(src): store.merge(src, origin) for src in todo}
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the main file before it is renamed
        if target != into:
            os.replace(target, into)
    finally:
        if target != into:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
    return reports


def pick_study(store: Store, study: str | None) -> str:
    """The study to show: the one named, or the only one in the store (else a clear error)."""
    names = store.study_names()
    if study is not None:
        if study not in names:
            raise ObliviateError(f"no study {study!r} in {store.path}; it holds: {', '.join(names) or 'nothing yet'}")
        return study
    if not names:
        raise ObliviateError(f"{store.path} holds no results yet: run `obliviate bench STUDY.yaml` first")
    if len(names) > 1:
        raise ObliviateError(f"{store.path} holds several studies ({', '.join(names)}): choose one with --study")
    return names[0]


def iter_metric_names(rows: Iterable[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in (r.get("metrics") or {}).items():
            if isinstance(v, (int, float)) or v is None:
                seen.setdefault(k, None)
    return list(seen)
