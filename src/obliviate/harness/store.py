"""The results store: one SQLite file (WAL mode), one row per run, safe for concurrent writers.

Why SQLite: one file a user can copy, query with any tool, and that several processes (local runs,
Ray workers on one machine) can append to at once. WAL lets readers work while a writer commits;
``BEGIN IMMEDIATE`` plus a busy timeout and a retry loop make two writers queue, never lose a row.
A row is committed the moment its run finishes, so a crash loses only the run in flight.
(SQLite's locking needs a local file system: on a cluster, point ``--store`` at a local disk of the
driver, or let each worker write to its own file and merge them with ``Store.merge``.)
"""
from __future__ import annotations

import json
import math
import random
import sqlite3
import time
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
        values = []
        for f in ROW_FIELDS:
            v = row.get(f)
            if f in _JSON_FIELDS and v is not None and not isinstance(v, str):
                v = to_json(_json_safe(v))
            values.append(_clean(v))
        sql = f"INSERT OR REPLACE INTO runs({', '.join(ROW_FIELDS)}) VALUES ({', '.join('?' * len(ROW_FIELDS))})"
        _retrying(lambda: self._write(lambda c: c.execute(sql, values)))

    def put_study(self, name: str, file: str, text: str, published: list[dict]) -> None:
        sql = "INSERT OR REPLACE INTO studies(name, file, text, published, updated) VALUES (?, ?, ?, ?, ?)"
        args = (name, file, text, json.dumps(published), now_iso())
        _retrying(lambda: self._write(lambda c: c.execute(sql, args)))

    def merge(self, other: str | Path) -> int:
        """Copy every row of another store into this one (finished rows win over failed ones)."""
        src = Store(other, create=False)
        try:
            n = 0
            for row in src.rows(status=None):
                mine = self.get(row["key"])
                if mine is None or (mine["status"] != "done" and row["status"] == "done"):
                    self.put(row)
                    n += 1
            for s in src.studies():
                self.put_study(s["name"], s["file"], s["text"], s["published"])
            return n
        finally:
            src.close()

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


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return _clean(obj)


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
