"""Rebuild the run registry from the run folders, and `tunesmith doctor`'s checks.

    rebuild_into(con)        # fill an empty runs table from $TUNESMITH_HOME/runs/*
    report = doctor(fix=True)

Every run folder holds what its row says: run.json (id, name, model, datasets,
method, created_at; written with config.yaml before the row exists),
config.yaml, events.jsonl (metrics and status, written by the worker) and the
launcher's worker.pid / worker.exit. Folders from before run.json existed are
read from config.yaml and the id's timestamp.

What it does not know: a run whose worker is alive on another machine sharing
the folder looks dead here (pids are per machine).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import events, exits, paths, registry
from .registry import FINAL_STATES, RunInfo

META_FILE = "run.json"
# A folder with a config but no worker yet may be a submit in progress in another process.
STARTING_GRACE_S = 60.0


def write_meta(folder: Path, info: RunInfo) -> None:
    meta = {"id": info.id, "name": info.name, "model": info.model, "datasets": info.datasets,
            "method": info.method, "created_at": info.created_at, "max_steps": info.max_steps}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")


def _created_from_id(run_id: str, folder: Path) -> float:
    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        return folder.stat().st_mtime


def _meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if isinstance(meta, dict) and meta.get("id") == folder.name:
            return meta
    except (OSError, ValueError):
        pass
    # An older folder: what the config says.
    from .config import RunConfig
    from .errors import TunesmithError
    from .jobs import CONFIG_FILE, default_run_name

    try:
        cfg = RunConfig.from_yaml(folder / CONFIG_FILE)
    except (TunesmithError, OSError):
        return None
    return {"id": folder.name, "name": cfg.output.run_name or default_run_name(cfg),
            "model": cfg.model.name_or_path, "datasets": list(cfg.data.datasets), "method": cfg.method,
            "created_at": _created_from_id(folder.name, folder), "max_steps": cfg.training.max_steps}


def is_run_folder(folder: Path) -> bool:
    return folder.is_dir() and not folder.name.startswith(".") and (folder / "config.yaml").is_file()


def info_from_folder(folder: Path) -> RunInfo | None:
    """The registry row a run folder implies, or None when it is not a run folder."""
    from .jobs import _pid_alive, log_tail

    if not is_run_folder(folder):
        return None
    meta = _meta(folder)
    if meta is None:
        return None
    info = RunInfo(id=folder.name, name=str(meta.get("name") or folder.name), status="queued",
                   model=str(meta.get("model", "")), datasets=list(meta.get("datasets") or []),
                   method=str(meta.get("method", "")), run_dir=folder.resolve(),
                   created_at=float(meta.get("created_at") or _created_from_id(folder.name, folder)),
                   max_steps=meta.get("max_steps"))
    evs = events.read_events(folder)
    tr = events.last_train(evs)
    if tr:
        info.step = int(tr.get("step") or 0)
        info.last_loss = tr.get("loss")
        info.max_steps = tr.get("max_steps") or info.max_steps
    st = events.last_status(evs)
    first = next((e for e in evs if e.get("type") == "status"), None)
    if first:
        info.started_at = first.get("time")
    pid = exits.worker_pid(folder)
    if st and st.get("status") in FINAL_STATES:
        info.status, info.finished_at = st["status"], st.get("time")
        if info.status == "failed":
            info.error = failure_text(folder, st.get("message") or "")
    elif pid and _pid_alive(pid, folder):
        info.status, info.pid = "running", pid
    elif st or exits.exit_code(folder) is not None or time.time() - info.created_at > STARTING_GRACE_S:
        info.status, info.finished_at = "failed", time.time()
        peak = tr.get("peak_mem_gb") if tr else None
        info.error = exits.describe_death(folder, peak_mem_gb=peak) + "\n" + log_tail(folder)
    return info


def failure_text(folder: Path, message: str) -> str:
    """The registry's error for a failed run: the worker's reason first, then the log's last lines."""
    from .jobs import log_tail

    msg = message.strip()
    tail = log_tail(folder, 12)
    return f"{msg}\n--- last lines of worker.log ---\n{tail}" if msg and tail else (msg or tail)


def run_folders() -> list[Path]:
    root = paths.runs_dir()
    return sorted(p for p in root.iterdir() if is_run_folder(p))


def rebuild_into(con: sqlite3.Connection) -> int:
    """Insert a row for every run folder that has none; returns how many were added."""
    have = {r[0] for r in con.execute("SELECT id FROM runs").fetchall()}
    added = 0
    for folder in run_folders():
        if folder.name in have:
            continue
        info = info_from_folder(folder)
        if info is not None:
            registry.insert(info, con)
            added += 1
    return added


def adopt_orphans() -> int:
    """Register run folders the table lacks (a crash between a folder and its row, a deleted db)."""
    try:
        names = {p.name for p in paths.runs_dir().iterdir() if not p.name.startswith(".")}
    except OSError:
        return 0
    if not names:
        return 0
    known = {r.id for r in registry.all_runs()}
    if names <= known:
        return 0
    with registry.connect() as con:
        return rebuild_into(con)


@dataclass
class DoctorReport:
    checked: int = 0
    findings: list[str] = field(default_factory=list)  # what was wrong (and, with fix, what was done)
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong

    @property
    def healthy(self) -> bool:
        return not self.findings


def doctor(fix: bool = True, rebuild: bool = False) -> DoctorReport:
    """Check the registry against the run folders; with fix, repair what is found.

    Checks: the database opens and passes sqlite's quick_check (else it is moved
    aside and rebuilt), every run folder has a row (adopted), every row has a
    folder (dropped), no "running" row whose worker is dead (marked failed, with
    why), no temporary folders left by a crash (removed).
    `rebuild` moves the database aside and rebuilds it from the folders anyway.
    """
    from . import jobs

    rep = DoctorReport()
    db = paths.db_path()
    if rebuild and db.exists():
        if fix:
            aside = registry.move_aside(db)
            rep.findings.append(f"rebuilt the registry from the run folders (old one kept as {aside.name})")
    elif db.exists():
        try:
            con = registry._open_checked(db)
            con.close()
        except sqlite3.DatabaseError as e:
            rep.findings.append(f"{db.name} is unreadable ({e})" + ("; moved aside and rebuilt" if fix else ""))
            if fix:
                registry.move_aside(db)
    rows = {r.id: r for r in registry.all_runs()}
    folders = {p.name: p for p in run_folders()}
    rep.checked = len(set(rows) | set(folders))
    missing_rows = sorted(set(folders) - set(rows))
    if missing_rows:
        rep.findings.append(f"{len(missing_rows)} run folder(s) had no registry row: {', '.join(missing_rows[:5])}"
                            + ("; registered" if fix else ""))
        if fix:
            with registry.connect() as con:
                rebuild_into(con)
    for rid in sorted(set(rows) - set(folders)):
        rep.findings.append(f"run {rid} has a row but its folder {rows[rid].run_dir} is gone"
                            + ("; row removed" if fix else ""))
        if fix:
            registry.delete(rid)
    for rid, r in rows.items():
        if rid in folders and r.status in ("running", "stopping") and not jobs._alive(r):
            rep.findings.append(f"run {rid} was marked {r.status} but its worker is gone"
                                + ("; marked failed" if fix else ""))
            if fix:
                jobs.get_run(rid)  # _sync records the failure and why the worker died
    root = paths.runs_dir()
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") and p.name.endswith((".tmp", ".old")):
            rep.findings.append(f"leftover temporary folder {p.name} from an interrupted write"
                                + ("; removed" if fix else ""))
            if fix:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        elif p.is_dir() and not p.name.startswith(".") and not is_run_folder(p):
            rep.notes.append(f"{p.name} in {root} is not a run folder (no config.yaml); left as it is")
    return rep
