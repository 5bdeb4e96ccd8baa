"""The run queue and its scheduler: which queued run starts next, and on which GPUs.

    scheduler.enqueue(run_id, cfg.resources)   # jobs.submit does this
    scheduler.tick()                           # one pass: take/renew the lease, settle finished runs, start what fits
    scheduler.positions()                      # {run_id: 1, ...} for queued runs
    scheduler.cancel(run_id) / move(run_id, "up")

State lives in tunesmith.db next to the `runs` table, so the queue survives
restarts and reboots:
  queue            one row per run: position, the GPUs it asked for, processes,
                   resume flag, the GPUs it was given
  scheduler_lease  one row: which process holds the scheduler role, and when it
                   last said so (heartbeat)

Any tunesmith process can hold the role: the studio (a background thread,
`start_background`), `tunesmith train` and `jobs.wait` while they follow a run,
or `tunesmith scheduler` on a headless server. The lease is taken inside
BEGIN IMMEDIATE (SQLite's single-writer lock), renewed by every tick, and taken
over when its heartbeat is older than LEASE_SECONDS or, on this host, its
process is gone. A run is claimed with `UPDATE runs ... WHERE status = 'queued'`
in the same transaction that checks the lease, so no run starts twice even if
two processes both thought they held the role.

One writer per store: the worker owns its run folder; the scheduler writes the
`runs` rows of runs once they start (pid, start time, final status); the job
manager writes rows only while they are queued (submit, cancel, reorder). Reads
never write.

Resources: every run uses a GPU set, and a GPU runs one run at a time (a run on
GPUs 0,1 blocks both); on a machine without GPUs the CPU counts as one GPU.
Runs start in queue order; a run that must wait reserves the GPUs it may use
(those it names, or all for auto / a count) so smaller runs behind it cannot
starve it.

What it does not know: GPU memory used by programs other than Tunesmith (the
fit check looks at free memory when the run is queued, not at every tick).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

from . import gpus as gpus_mod, launcher, paths, registry
from .config import ResourcesConfig
from .errors import RunError, TunesmithError

log = logging.getLogger("tunesmith.scheduler")

LEASE_SECONDS = 15.0   # a holder silent this long has lost the role (its host may be another machine)
TICK_SECONDS = 2.0     # how often a holder looks at the queue
ADOPT_SECONDS = 60.0   # a claimed run with no pid after this long: its starter died mid-launch
LIVE = ("running", "stopping")

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    run_id     TEXT PRIMARY KEY,
    position   REAL NOT NULL,
    gpus       TEXT NOT NULL,
    processes  INTEGER,
    resume     INTEGER NOT NULL DEFAULT 0,
    assigned   TEXT
);
CREATE TABLE IF NOT EXISTS scheduler_lease (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    owner      TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    heartbeat  REAL NOT NULL
);
"""

HOST = socket.gethostname()
# One token per process (a forked child gets its own: see _owner()).
_token: tuple[int, str] | None = None


def _owner() -> str:
    global _token
    if _token is None or _token[0] != os.getpid():
        _token = (os.getpid(), f"{HOST}:{os.getpid()}:{os.urandom(4).hex()}")
    return _token[1]


def _connect() -> sqlite3.Connection:
    """A connection in autocommit mode, so BEGIN IMMEDIATE is ours to issue."""
    con = sqlite3.connect(str(paths.db_path()), timeout=30, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA busy_timeout=30000")
    con.execute(registry.SCHEMA)
    con.executescript(SCHEMA)
    return con


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the database's write lock for the block."""

    def __enter__(self) -> sqlite3.Connection:
        self.con = _connect()
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, exc_type, *_):
        try:
            self.con.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.con.close()


def _read() -> sqlite3.Connection:
    return _connect()


def _rows(sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    """A read for displays (positions, slots, the lease holder): a database that cannot be
    opened right now (a full disk, a repair in progress) reads as empty, never as an error."""
    try:
        con = _connect()
    except sqlite3.Error as e:
        log.warning("queue not readable: %s", e)
        return []
    try:
        return con.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        log.warning("queue not readable: %s", e)
        return []
    finally:
        con.close()


# ---------------------------------------------------------------------------
# The queue (written by the job manager while runs are queued)
# ---------------------------------------------------------------------------


def enqueue(run_id: str, resources: ResourcesConfig, resume: bool = False) -> None:
    """Put a run (its `runs` row already says queued) at the end of the queue."""
    with _Tx() as con:
        top = con.execute("SELECT MAX(position) FROM queue").fetchone()[0] or 0.0
        con.execute(
            "INSERT OR REPLACE INTO queue (run_id, position, gpus, processes, resume, assigned) VALUES (?, ?, ?, ?, ?, NULL)",
            (run_id, top + 1.0, json.dumps(resources.gpus), resources.processes, int(resume)),
        )


def positions() -> dict[str, int]:
    """{run_id: 1-based place} for every queued run, in the order they will start."""
    rows = _rows(
        "SELECT q.run_id FROM queue q JOIN runs r ON r.id = q.run_id WHERE r.status = 'queued' ORDER BY q.position")
    return {r[0]: i + 1 for i, r in enumerate(rows)}


@dataclass
class Slot:
    """A run's place in the queue and what it asked for / was given."""
    run_id: str
    position: float
    gpus: object
    processes: int | None
    resume: bool
    assigned: list[int] | None


def slot(run_id: str) -> Slot | None:
    rows = _rows("SELECT * FROM queue WHERE run_id = ?", (run_id,))
    return _slot(rows[0]) if rows else None


def gpus_label(run_id: str, count: str = "{n}") -> str | None:
    """The GPUs a run was given ('0,1', 'cpu') or, while it waits, asked for ('auto', '0,1', or `count`
    filled with the number asked for); None when the run has no queue slot."""
    s = slot(run_id)
    if s is None:
        return None
    if s.assigned is not None:
        return ",".join(map(str, s.assigned)) or "cpu"
    if isinstance(s.gpus, list):
        return ",".join(map(str, s.gpus))
    return "auto" if s.gpus == "auto" else count.format(n=s.gpus)


def _slot(r: sqlite3.Row) -> Slot:
    return Slot(r["run_id"], r["position"], json.loads(r["gpus"]), r["processes"], bool(r["resume"]),
                json.loads(r["assigned"]) if r["assigned"] else None)


def cancel(run_id: str) -> bool:
    """Take a queued run out of the queue (status cancelled). False when it is no longer queued
    (it started meanwhile: stop it instead)."""
    with _Tx() as con:
        cur = con.execute("UPDATE runs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                          (time.time(), run_id))
        return cur.rowcount == 1


Move = Literal["top", "up", "down", "bottom"]


def move(run_id: str, where: Move | int) -> int:
    """Move a queued run to the top / bottom, one place up / down, or to 1-based place N.
    Returns its new place."""
    with _Tx() as con:
        order = [r[0] for r in con.execute(
            "SELECT q.run_id FROM queue q JOIN runs r ON r.id = q.run_id WHERE r.status = 'queued' ORDER BY q.position")]
        if run_id not in order:
            raise RunError(f"Run {run_id} is not queued; only queued runs can be moved.")
        i = order.index(run_id)
        n = len(order)
        if isinstance(where, int):
            if not 1 <= where <= n:
                raise RunError(f"Place {where} is outside the queue (1..{n}).")
            j = where - 1
        else:
            j = {"top": 0, "up": max(0, i - 1), "down": min(n - 1, i + 1), "bottom": n - 1}[where]
        order.insert(j, order.pop(i))
        # Renumber the queued runs into the positions they already held, so runs that started
        # meanwhile keep theirs.
        slots = sorted(r[0] for r in con.execute(
            f"SELECT position FROM queue WHERE run_id IN ({','.join('?' * n)})", order))
        for rid, pos in zip(order, slots):
            con.execute("UPDATE queue SET position = ? WHERE run_id = ?", (pos, rid))
        return j + 1


def forget(run_id: str) -> None:
    """Drop a run's queue row (the run was deleted)."""
    with _Tx() as con:
        con.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))


# ---------------------------------------------------------------------------
# The lease
# ---------------------------------------------------------------------------


@dataclass
class Lease:
    owner: str
    pid: int
    host: str
    heartbeat: float

    def live(self, now: float) -> bool:
        if now - self.heartbeat > LEASE_SECONDS:
            return False
        if self.host == HOST:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return True


def holder() -> Lease | None:
    """Who holds the scheduler role now (None when nobody live does)."""
    rows = _rows("SELECT owner, pid, host, heartbeat FROM scheduler_lease WHERE id = 1")
    lease = Lease(*rows[0]) if rows else None
    return lease if lease and lease.live(time.time()) else None


def _take_lease(con: sqlite3.Connection, now: float) -> bool:
    """Inside BEGIN IMMEDIATE: hold (or renew) the lease if it is free, stale or ours."""
    r = con.execute("SELECT owner, pid, host, heartbeat FROM scheduler_lease WHERE id = 1").fetchone()
    me = _owner()
    if r is not None and r[0] != me and Lease(*r).live(now):
        return False
    con.execute("INSERT OR REPLACE INTO scheduler_lease (id, owner, pid, host, heartbeat) VALUES (1, ?, ?, ?, ?)",
                (me, os.getpid(), HOST, now))
    return True


def release() -> None:
    """Give the role up (a holder that exits cleanly; a killed one is replaced after its pid is gone)."""
    try:
        with _Tx() as con:
            con.execute("DELETE FROM scheduler_lease WHERE id = 1 AND owner = ?", (_owner(),))
    except sqlite3.Error:
        pass


# ---------------------------------------------------------------------------
# One scheduling pass
# ---------------------------------------------------------------------------

# Popen handles of workers this process started, so finished children are reaped
# (a zombie would look alive to kill(0)).
children: dict[str, subprocess.Popen] = {}


@dataclass
class TickResult:
    holder: bool                       # this process held the role for this pass
    started: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # runs whose final state was written
    requeued: list[str] = field(default_factory=list)


# What launches a claimed run; tests swap in a recorder to count starts without training.
Launch = Callable[[registry.RunInfo, Slot], subprocess.Popen]


def _launch(run: registry.RunInfo, s: Slot) -> subprocess.Popen:
    nproc = max(1, len(s.assigned or []) or (s.processes or 1))
    return launcher.launch(run.run_dir, nproc=nproc, gpus=s.assigned or [], resume=s.resume, run_id=run.id)


def tick(launch: Launch | None = None, machine_gpus: list[gpus_mod.GpuInfo] | None = None) -> TickResult:
    """Take or renew the scheduler lease; if held, settle finished runs and start queued ones that fit.
    Cheap when there is nothing to do; safe to call from any process at any time."""
    from . import jobs  # jobs imports this module

    now = time.time()
    with _Tx() as con:
        if not _take_lease(con, now):
            return TickResult(holder=False)
    res = TickResult(holder=True)
    _settle(res, jobs)
    _enqueue_unslotted()
    gpus = gpus_mod.list_gpus() if machine_gpus is None else machine_gpus
    while True:
        claimed = _claim_next(gpus)
        if claimed is None:
            break
        run, s = claimed
        try:
            proc = (launch or _launch)(run, s)
        except Exception as e:  # noqa: BLE001 - a launch failure fails that run, never the scheduler
            registry.update(run.id, status="failed", finished_at=time.time(), error=f"could not start the worker: {e}")
            continue
        children[run.id] = proc
        registry.update(run.id, pid=proc.pid)
        res.started.append(run.id)
        log.info("started run %s on %s", run.id, f"GPUs {s.assigned}" if s.assigned else "the CPU")
    return res


def _enqueue_unslotted() -> None:
    """Queued rows without a queue slot (rebuilt from their folders by engine.recovery, or
    written by an older Tunesmith) join the queue in submission order, asking for what their
    config asks for."""
    from .config import RunConfig
    from .rundir import CONFIG_FILE

    con = _read()
    try:
        rows = con.execute("SELECT id, run_dir FROM runs r WHERE status = 'queued' AND NOT EXISTS "
                           "(SELECT 1 FROM queue q WHERE q.run_id = r.id) ORDER BY created_at").fetchall()
    finally:
        con.close()
    for rid, run_dir in rows:
        try:
            resources = RunConfig.from_yaml(f"{run_dir}/{CONFIG_FILE}").resources
        except Exception:  # noqa: BLE001 - an unreadable config: the worker reports it when it starts
            resources = ResourcesConfig()
        enqueue(rid, resources)


def _claim_next(gpus: list[gpus_mod.GpuInfo]) -> tuple[registry.RunInfo, Slot] | None:
    """Inside one transaction: check the lease is still ours, pick the first queued run whose
    GPUs are free, and mark it running with its GPUs. None when nothing can start."""
    with _Tx() as con:
        if not _take_lease(con, time.time()):
            return None
        rows = con.execute(
            "SELECT q.*, r.status AS status FROM queue q JOIN runs r ON r.id = q.run_id "
            "WHERE r.status IN ('queued', 'running', 'stopping') ORDER BY q.position").fetchall()
        live_without_slot = con.execute(
            "SELECT COUNT(*) FROM runs r WHERE r.status IN ('running', 'stopping') "
            "AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.run_id = r.id)").fetchone()[0]
        all_gpus = {g.index for g in gpus} or {-1}  # -1: the CPU, when there is no GPU
        busy: set[int] = set(all_gpus) if live_without_slot else set()  # runs from before the queue: assume all
        for r in rows:
            if r["status"] in LIVE:
                busy |= set(json.loads(r["assigned"]) if r["assigned"] else all_gpus) or {-1}
        blocked = set(busy)
        for r in rows:
            if r["status"] != "queued":
                continue
            s = _slot(r)
            if not gpus:
                pick: list[int] | None = [] if -1 not in blocked else None
            else:
                pick = gpus_mod.pick_gpus(s.gpus, gpus, blocked)
            if pick is None:
                blocked |= gpus_mod.wanted(s.gpus, gpus) if gpus else {-1}
                if blocked >= all_gpus:
                    return None
                continue
            cur = con.execute("UPDATE runs SET status = 'running', started_at = ?, pid = NULL, finished_at = NULL, "
                              "error = NULL WHERE id = ? AND status = 'queued'", (time.time(), s.run_id))
            if cur.rowcount != 1:
                continue
            con.execute("UPDATE queue SET assigned = ? WHERE run_id = ?", (json.dumps(pick), s.run_id))
            s.assigned = pick
            run = registry._row(con.execute("SELECT * FROM runs WHERE id = ?", (s.run_id,)).fetchone())
            return run, s
    return None


def _settle(res: TickResult, jobs) -> None:
    """Write the final state of live runs that ended (from their events or their dead process),
    and requeue or adopt claimed runs whose starter died before recording a pid."""
    con = _read()
    try:
        rows = [registry._row(r) for r in con.execute("SELECT * FROM runs WHERE status IN ('running', 'stopping')")]
    finally:
        con.close()
    for run in rows:
        proc = children.get(run.id)
        if proc is not None:
            proc.poll()  # reap it if it exited
        if run.pid is None:
            if time.time() - (run.started_at or 0) < ADOPT_SECONDS:
                continue  # being launched right now
            pid = launcher.find_worker(run.run_dir)
            if pid is not None:
                registry.update(run.id, pid=pid)
                continue
            with _Tx() as tx:
                tx.execute("UPDATE runs SET status = 'queued', started_at = NULL WHERE id = ? AND pid IS NULL "
                           "AND status = 'running'", (run.id,))
                tx.execute("UPDATE queue SET assigned = NULL WHERE run_id = ?", (run.id,))
            res.requeued.append(run.id)
            continue
        seen = jobs.view(run)
        if seen.finished:
            if seen.status == "failed" and not alive_or_reaped(run):
                from .diskspace import release

                release(run.run_dir)  # a dead worker's disk ballast
            registry.update(run.id, status=seen.status, finished_at=seen.finished_at, error=seen.error,
                            step=seen.step, last_loss=seen.last_loss, max_steps=seen.max_steps)
            done = children.pop(run.id, None)
            if done is not None:
                try:
                    done.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            res.settled.append(run.id)


def settle_now() -> TickResult:
    """Write the final state of every live run that ended, whoever holds the lease (engine.recovery's
    doctor). Writing a final state twice writes the same values."""
    from . import jobs

    res = TickResult(holder=False)
    _settle(res, jobs)
    return res


def alive_or_reaped(run: registry.RunInfo) -> bool:
    """Is the run's worker process alive? Uses this process's Popen handle when it started it."""
    proc = children.get(run.id)
    if proc is not None:
        return proc.poll() is None
    return launcher.worker_alive(run.pid, run.run_dir)


# ---------------------------------------------------------------------------
# Who keeps ticking
# ---------------------------------------------------------------------------


def pending() -> bool:
    """Is there anything a scheduler must watch: queued or live runs?"""
    rows = _rows("SELECT COUNT(*) FROM runs WHERE status IN ('queued', 'running', 'stopping')")
    return bool(rows) and rows[0][0] > 0


def serve(stop: threading.Event | None = None, exit_when_idle: bool = False, interval: float = TICK_SECONDS) -> None:
    """Tick until `stop` is set (or, with exit_when_idle, until no run is queued or live)."""
    stop = stop or threading.Event()
    try:
        while not stop.is_set():
            try:
                tick()
            except (sqlite3.Error, TunesmithError) as e:  # a busy, full or damaged database: try again next tick
                log.warning("scheduler tick skipped: %s", e)
            if exit_when_idle and not pending():
                break
            stop.wait(interval)
    finally:
        release()


_background: threading.Thread | None = None
_background_stop = threading.Event()


def start_background() -> threading.Thread:
    """Tick in a daemon thread of this process (the studio) until hand_off() or the process ends."""
    global _background
    if _background is None or not _background.is_alive():
        _background_stop.clear()
        _background = threading.Thread(target=serve, kwargs={"stop": _background_stop}, name="tunesmith-scheduler",
                                       daemon=True)
        _background.start()
    return _background


def ensure_scheduler() -> int | None:
    """If runs are waiting and no live process holds the role, start a detached
    `tunesmith scheduler --exit-when-idle` to see them through. Returns its pid, or None.
    Called by CLI commands that return while runs are still queued."""
    if holder() is not None or not pending():
        return None
    log_path = paths.home() / "scheduler.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunesmith.cli.main", "scheduler", "--exit-when-idle"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env=dict(os.environ, TUNESMITH_HOME=str(paths.home())), cwd=str(paths.home()),
        )
    return proc.pid


def hand_off() -> None:
    """A process that held the role and is leaving: release it, and start a headless
    scheduler when runs still wait."""
    _background_stop.set()
    if _background is not None and _background is not threading.current_thread():
        _background.join(timeout=5)
    lease = holder()
    if lease is not None and lease.owner == _owner():
        release()
    ensure_scheduler()

