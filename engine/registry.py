"""The run registry: one SQLite table under $TUNESMITH_HOME/tunesmith.db.

The job manager (engine.jobs) writes rows of queued runs, the scheduler
(engine.scheduler) those of runs it started; workers write their own run
directory. Every connection is short-lived so several studio processes, the
CLI and tests can share one database file (WAL mode, busy timeout).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    model       TEXT NOT NULL,
    datasets    TEXT NOT NULL,
    method      TEXT NOT NULL,
    run_dir     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    started_at  REAL,
    finished_at REAL,
    pid         INTEGER,
    step        INTEGER DEFAULT 0,
    max_steps   INTEGER,
    last_loss   REAL,
    error       TEXT
);
"""

FINAL_STATES = ("completed", "stopped", "failed", "cancelled")  # cancelled: left the queue before starting


@dataclass
class RunInfo:
    id: str
    name: str
    status: str
    model: str
    datasets: list[str]
    method: str
    run_dir: Path
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    step: int = 0
    max_steps: int | None = None
    last_loss: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def has_adapter(self) -> bool:
        return (self.run_dir / "adapter" / "adapter_config.json").exists()

    @property
    def has_full_model(self) -> bool:
        return (self.run_dir / "model" / "config.json").exists()


@contextmanager
def connect(db: Path | None = None) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(str(db or paths.db_path()), timeout=30)
    con.row_factory = sqlite3.Row
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(SCHEMA)
        yield con
        con.commit()
    finally:
        con.close()


def _row(r: sqlite3.Row) -> RunInfo:
    d = dict(r)
    d["datasets"] = json.loads(d["datasets"])
    d["run_dir"] = Path(d["run_dir"])
    return RunInfo(**d)


def insert(info: RunInfo) -> None:
    with connect() as con:
        con.execute(
            "INSERT INTO runs (id, name, status, model, datasets, method, run_dir, created_at, max_steps)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.id, info.name, info.status, info.model, json.dumps(info.datasets), info.method,
             str(info.run_dir), info.created_at, info.max_steps),
        )


def update(run_id: str, **fields: Any) -> None:
    if not fields:
        return
    cols = ", ".join(f"{k} = ?" for k in fields)
    with connect() as con:
        con.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))


def get(run_id: str) -> RunInfo | None:
    with connect() as con:
        r = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
    return _row(r) if r else None


def all_runs() -> list[RunInfo]:
    with connect() as con:
        rows = con.execute("SELECT * FROM runs ORDER BY created_at DESC").fetchall()
    return [_row(r) for r in rows]


def delete(run_id: str) -> None:
    with connect() as con:
        con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
