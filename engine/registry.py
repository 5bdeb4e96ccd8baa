"""The run registry: one SQLite table under $TUNESMITH_HOME/tunesmith.db.

Only the job manager (engine.jobs) writes here; workers write their own run
directory. Every connection is short-lived so several studio processes, the
CLI and tests can share one database file (WAL mode, busy timeout).

The table is an index, never the only copy: every run folder holds what its
row says (run.json, config.yaml, events.jsonl), so engine.recovery rebuilds
the table from the folders. A database that is not readable (garbage in the
file, a malformed image) is moved aside as tunesmith.db.corrupt-<time> and
rebuilt on the next connection, never deleted. On a full disk reads still work
(read-only, without the WAL side files) and writes raise RegistryError.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from . import paths
from .errors import RegistryError

log = logging.getLogger(__name__)

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

FINAL_STATES = ("completed", "stopped", "failed")


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


def _open(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), timeout=30)
    con.row_factory = sqlite3.Row
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(SCHEMA)
    except BaseException:
        con.close()
        raise
    return con


def _open_read_only(db: Path) -> sqlite3.Connection:
    """A connection that writes nothing, not even WAL side files (works on a full disk)."""
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True, timeout=30)
    con.row_factory = sqlite3.Row
    return con


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    # "file is not a database", "database disk image is malformed"; not "locked", "full", "readonly".
    msg = str(e).lower()
    return not isinstance(e, sqlite3.OperationalError) or "not a database" in msg or "malformed" in msg


def _is_full(e: sqlite3.Error) -> bool:
    msg = str(e).lower()
    return "full" in msg or "disk i/o" in msg or "no space" in msg


def move_aside(db: Path) -> Path:
    """Rename an unreadable database (and its WAL side files) out of the way; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = db.with_name(f"{db.name}.corrupt-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = db.with_name(f"{db.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        if side.exists():
            side.replace(dest.with_name(dest.name + suffix))
    db.replace(dest)
    return dest


class RebuiltError(RegistryError):
    """A query found the database damaged; it has been rebuilt, and the request can be repeated."""


@contextmanager
def connect(db: Path | None = None, write: bool = True) -> Iterator[sqlite3.Connection]:
    """A short-lived connection. An unreadable database is moved aside and rebuilt from the
    run folders; sqlite errors that remain come out as RegistryError (one line)."""
    db = Path(db or paths.db_path())
    try:
        con = _open(db)
    except sqlite3.DatabaseError as e:
        if _is_corrupt(e) and db.exists():
            con = _recover(db, e)
        elif not write and _is_full(e) and db.exists():
            con = _open_read_only(db)
        else:
            raise RegistryError(f"{db}: cannot open the run registry ({e}). {_hint(e)}") from None
    try:
        yield con
        con.commit()
    except sqlite3.DatabaseError as e:
        if _is_corrupt(e):
            # Damage found by a query rather than at open: repair now, so the next call works.
            con.close()
            _recover(db, e).close()
            raise RebuiltError(f"{db} was damaged ({e}); it was moved aside and rebuilt from the run "
                               "folders. Try again.") from None
        raise RegistryError(f"{db}: the run registry failed ({e}). {_hint(e)}") from None
    finally:
        con.close()


def _read(sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """Run a query; when it finds damage, the repair happens and the query runs once more."""
    try:
        with connect(write=False) as con:
            return con.execute(sql, args).fetchall()
    except RebuiltError:
        pass
    with connect(write=False) as con:
        return con.execute(sql, args).fetchall()


def _hint(e: sqlite3.Error) -> str:
    if _is_full(e):
        return "Free some disk space; `tunesmith runs` still lists runs meanwhile."
    if "locked" in str(e).lower():
        return "Another Tunesmith process holds it; try again in a moment."
    return "`tunesmith doctor` checks and repairs it."


def _recover(db: Path, err: Exception) -> sqlite3.Connection:
    """Move an unreadable database aside and rebuild it from the run folders, once across processes."""
    import fcntl

    from . import recovery

    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be repairing it right now
        try:
            return _open_checked(db)  # it did; use its result
        except sqlite3.DatabaseError as e:
            if not _is_corrupt(e):
                raise RegistryError(f"{db}: cannot open the run registry ({e}). {_hint(e)}") from None
        aside = move_aside(db)
        log.warning("%s was unreadable (%s); moved to %s and rebuilt from the run folders", db, err, aside.name)
        con = _open(db)
        try:
            recovery.rebuild_into(con)
            con.commit()
        except BaseException:
            con.close()
            raise
        return con


def _open_checked(db: Path) -> sqlite3.Connection:
    con = _open(db)
    try:
        con.execute("SELECT count(*) FROM runs").fetchone()
        if con.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed")
    except BaseException:
        con.close()
        raise
    return con


def _row(r: sqlite3.Row) -> RunInfo:
    d = dict(r)
    d["datasets"] = json.loads(d["datasets"])
    d["run_dir"] = Path(d["run_dir"])
    return RunInfo(**d)


def insert(info: RunInfo, con: sqlite3.Connection | None = None) -> None:
    """Add a row; a row that already exists (adopted from its folder meanwhile) is kept."""
    if con is None:
        with connect() as con:
            return insert(info, con)
    con.execute(
            "INSERT OR IGNORE INTO runs (id, name, status, model, datasets, method, run_dir, created_at, max_steps)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (info.id, info.name, info.status, info.model, json.dumps(info.datasets), info.method,
             str(info.run_dir), info.created_at, info.max_steps),
    )
    if info.status != "queued" or info.error or info.pid:
        _update(con, info.id, status=info.status, started_at=info.started_at, finished_at=info.finished_at,
                pid=info.pid, step=info.step, last_loss=info.last_loss, error=info.error)


def _update(con: sqlite3.Connection, run_id: str, **fields: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in fields)
    con.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))


def update(run_id: str, **fields: Any) -> None:
    if not fields:
        return
    with connect() as con:
        _update(con, run_id, **fields)


def get(run_id: str) -> RunInfo | None:
    rows = _read("SELECT * FROM runs WHERE id = ?", (run_id,))
    return _row(rows[0]) if rows else None


def all_runs() -> list[RunInfo]:
    return [_row(r) for r in _read("SELECT * FROM runs ORDER BY created_at DESC")]


def delete(run_id: str) -> None:
    with connect() as con:
        con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
