"""The results database: one SQLite file that several processes may write at once.

WAL journal (readers never block the writer), a busy timeout, and a retry loop on top for the
"database is locked" errors SQLite still raises under contention. Each run is one row, written in
one transaction: a run is either all there or not there.
"""
from __future__ import annotations

import json
import os
import random
import sqlite3
import time
import zlib
from pathlib import Path

DEFAULT_DB = "plan-results.db"
_BUSY_TIMEOUT_MS = 30_000
_RETRIES = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    tag TEXT,
    backend TEXT,
    status TEXT,
    model TEXT,
    hardware TEXT,
    plan_json TEXT,
    metrics_json TEXT NOT NULL,
    client_json TEXT,
    config_json TEXT,
    predicted_json TEXT,
    versions_json TEXT,
    gpu TEXT,
    git_rev TEXT,
    command TEXT,
    samples_z BLOB
);
CREATE INDEX IF NOT EXISTS runs_tag ON runs(tag);
"""


def db_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("PLAN_RESULTS_DB") or DEFAULT_DB)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    return conn


def _retry(fn):
    for attempt in range(_RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == _RETRIES - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))


def _init(conn: sqlite3.Connection) -> None:
    # WAL is a property of the file: setting it once per connection is cheap and idempotent.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_SCHEMA)


def save_run(run: dict, path: str | Path | None = None) -> int:
    """Insert one run (the JSON document bench.py builds); returns its id."""
    p = db_path(path)
    samples = zlib.compress(json.dumps(run.get("samples") or []).encode())
    plan = run.get("plan") or {}
    row = (run["created_at"], run.get("tag"), run.get("backend"), run.get("status"), plan.get("model"),
           plan.get("hardware"), json.dumps(plan), json.dumps(run["metrics"]), json.dumps(run.get("client")),
           json.dumps(run.get("config")), json.dumps(run.get("predicted")), json.dumps(run.get("versions")),
           run.get("gpu"), run.get("git_rev"), run.get("command"), samples)

    def write() -> int:
        conn = _connect(p)
        try:
            _init(conn)
            conn.execute("BEGIN IMMEDIATE")
            cur = conn.execute(
                "INSERT INTO runs (created_at, tag, backend, status, model, hardware, plan_json, metrics_json, "
                "client_json, config_json, predicted_json, versions_json, gpu, git_rev, command, samples_z) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            conn.execute("COMMIT")
            return cur.lastrowid
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    return _retry(write)


_COLUMNS = ("id", "created_at", "tag", "backend", "status", "model", "hardware", "plan_json", "metrics_json",
            "client_json", "config_json", "predicted_json", "versions_json", "gpu", "git_rev", "command")


def _to_run(row: tuple, samples_z: bytes | None) -> dict:
    rec = dict(zip(_COLUMNS, row))
    run = {k: v for k, v in rec.items() if not k.endswith("_json")}
    for k in _COLUMNS:
        if k.endswith("_json"):
            run[k[:-5]] = json.loads(rec[k]) if rec[k] else None
    run["samples"] = json.loads(zlib.decompress(samples_z)) if samples_z else []
    return run


def load_run(ref: str | int, path: str | Path | None = None) -> dict | None:
    """A run by id, or the latest run with that tag."""
    p = db_path(path)
    if not p.exists():
        return None
    cols = ", ".join(_COLUMNS)

    def read():
        conn = _connect(p)
        try:
            if str(ref).isdigit():
                row = conn.execute(f"SELECT {cols}, samples_z FROM runs WHERE id=?", (int(ref),)).fetchone()
            else:
                row = conn.execute(f"SELECT {cols}, samples_z FROM runs WHERE tag=? ORDER BY id DESC LIMIT 1",
                                   (str(ref),)).fetchone()
            return row
        finally:
            conn.close()

    row = _retry(read)
    return _to_run(row[:-1], row[-1]) if row else None


def list_runs(path: str | Path | None = None, *, tag: str | None = None, limit: int = 50) -> list[dict]:
    """Newest first, without per-request samples."""
    p = db_path(path)
    if not p.exists():
        return []
    cols = ", ".join(_COLUMNS)

    def read():
        conn = _connect(p)
        try:
            if tag:
                return conn.execute(f"SELECT {cols} FROM runs WHERE tag=? ORDER BY id DESC LIMIT ?",
                                    (tag, limit)).fetchall()
            return conn.execute(f"SELECT {cols} FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        finally:
            conn.close()

    return [_to_run(row, None) for row in _retry(read)]
