"""``RunIndex``: one SQLite row per finished run, safe under many concurrent writers.

The database runs in WAL mode with a busy timeout, and every statement is retried with a growing,
jittered back-off while SQLite reports the database locked or busy, so parallel grid workers never lose
a row. A row is keyed by ``run_id``: adding a run again replaces its row.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from seqzoo.errors import RunError
from seqzoo.registry_utils import closest

T = TypeVar("T")

JSON_COLUMNS = ("valid", "test", "config", "tags")
COLUMNS = (
    "run_id", "run_dir", "model", "task", "seed", "status", "steps", "best_step", "primary_metric",
    "primary_value", "valid", "test", "config", "tags", "wall_time", "created",
)
REQUIRED = ("run_id", "run_dir", "model", "task", "seed", "status")
INDEX_FILE = "index.sqlite"
STATUSES = ("finished", "stopped_nan", "early_stopped", "time_budget")  # how a run can end (RunResult.status)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    run_dir TEXT NOT NULL,
    model TEXT NOT NULL,
    task TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    steps INTEGER,
    best_step INTEGER,
    primary_metric TEXT,
    primary_value REAL,
    valid TEXT NOT NULL DEFAULT '{}',
    test TEXT NOT NULL DEFAULT '{}',
    config TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    wall_time REAL,
    created TEXT NOT NULL
)
"""


def _is_lock_error(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


class RunIndex:
    """The SQLite index of runs (``runs/index.sqlite``); the table is created when missing."""

    def __init__(self, path: str | os.PathLike, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"cannot create the folder of the run index {self.path}: {err.strerror or err}") from err
        self._retry(self._create)

    @staticmethod
    def check_readable(path: str | os.PathLike) -> None:
        """Raise a RunError naming ``path`` unless it is an SQLite database whose ``runs`` table (if any) has
        the index's columns. Opens it read-only and changes nothing."""
        path = Path(path)
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
            try:
                cols = [r[1] for r in con.execute("PRAGMA table_info(runs)").fetchall()]
            finally:
                con.close()
        except sqlite3.Error as err:
            raise RunError(f"{path} is not a usable seqzoo run index ({err}); move it away or choose another "
                           f"--out") from err
        if cols and set(COLUMNS) - set(cols):
            raise RunError(f"{path} has a 'runs' table without the index columns {sorted(set(COLUMNS) - set(cols))}; "
                           f"it is not a seqzoo run index")

    # ----- connection and retries ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        con.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return con

    def _retry(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                con = self._connect()
                try:
                    return fn(con)
                finally:
                    con.close()
            except sqlite3.OperationalError as e:
                if not _is_lock_error(e) or time.monotonic() > deadline:
                    raise RunError(f"run index {self.path}: {e}") from e
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.5)
            except sqlite3.DatabaseError as e:  # not a database, corrupt, not ours
                raise RunError(f"{self.path} is not a usable seqzoo run index ({e}); move it away or choose "
                               f"another --out") from e

    @staticmethod
    def _create(con: sqlite3.Connection) -> None:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            con.execute("PRAGMA journal_mode = WAL")
        con.execute(_SCHEMA)
        con.execute("CREATE INDEX IF NOT EXISTS runs_model_task ON runs (model, task)")

    # ----- writing --------------------------------------------------------------------------------------
    def add(self, row: dict[str, Any]) -> None:
        """Insert (or replace, by ``run_id``) one run. See ``COLUMNS`` for the keys."""
        values = self._encode(row)

        def write(con: sqlite3.Connection) -> None:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [values[c] for c in COLUMNS],
                )
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

        self._retry(write)

    @staticmethod
    def _encode(row: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise TypeError(f"an index row must be a dict, got {type(row).__name__}")
        for key in row:
            if key not in COLUMNS:
                hint = closest(str(key), COLUMNS)
                raise KeyError(f"unknown index column {key!r}" + (f"; did you mean {hint!r}?" if hint else "")
                               + f" Valid: {', '.join(COLUMNS)}")
        missing = [k for k in REQUIRED if row.get(k) is None]
        if missing:
            raise ValueError(f"index row lacks required key(s) {', '.join(missing)}")
        if row["status"] not in STATUSES:
            raise ValueError(f"index row status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
        values = {c: row.get(c) for c in COLUMNS}
        for c in JSON_COLUMNS:
            v = values[c] if values[c] is not None else {}
            if not isinstance(v, dict):
                raise TypeError(f"index column {c!r} must be a dict, got {type(v).__name__}")
            values[c] = json.dumps(v, sort_keys=True, default=str)
        values["run_dir"] = str(values["run_dir"])
        values["seed"] = int(values["seed"])
        if values["created"] is None:
            values["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return values

    # ----- reading --------------------------------------------------------------------------------------
    def query(
        self,
        *,
        model: str | None = None,
        task: str | None = None,
        tags: dict[str, Any] | None = None,
        run_ids: Iterable[str] | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter (tags: each key must equal), oldest first, JSON columns decoded."""
        where, args = [], []
        for col, val in (("model", model), ("task", task), ("status", status)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        if run_ids is not None:
            ids = list(run_ids)
            if not ids:
                return []
            where.append(f"run_id IN ({', '.join('?' * len(ids))})")
            args.extend(ids)
        sql = f"SELECT {', '.join(COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created, rowid"
        rows = self._retry(lambda con: con.execute(sql, args).fetchall())
        out = []
        for r in rows:
            d = dict(zip(COLUMNS, r))
            for c in JSON_COLUMNS:
                d[c] = json.loads(d[c]) if d[c] else {}
            if tags and any(d["tags"].get(k) != v for k, v in tags.items()):
                continue
            out.append(d)
        return out

    def __len__(self) -> int:
        return int(self._retry(lambda con: con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]))

    def remove(self, run_id: str) -> bool:
        """Delete the row of ``run_id``; True when a row was deleted."""
        def delete(con: sqlite3.Connection) -> bool:
            return con.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

        return bool(self._retry(delete))
