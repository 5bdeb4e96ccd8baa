"""The job manager: submit runs to the queue, read their state, stop, cancel, resume them.

    run_id = submit(cfg)          # validates, writes runs/<id>/config.yaml, queues the run
    get_run(run_id).status        # queued | running | stopping | completed | stopped | failed | cancelled
    stop(run_id)                  # graceful: the worker saves the adapter so far, then exits

Runs wait in a queue until the GPUs they asked for are free; engine.scheduler
starts them (in whichever live tunesmith process holds its lease) through
engine.launcher. `submit` and `wait` take a scheduler turn themselves, so a
run submitted to a free machine starts at once.

State lives in SQLite (engine.registry, engine.scheduler) and in each run
directory, never in this process: a studio or CLI that restarts rebuilds
everything from the database, the worker's pid and events.jsonl, so closing a
browser or restarting the studio never stops or loses a run. Workers are
started in their own session, so Ctrl+C in the studio's terminal does not kill
them either.

Crash order: a run's folder (config.yaml, run.json) is complete before its row
exists, and a folder without a row is adopted on the next listing
(engine.recovery), so no crash leaves a run that nobody lists. The worker runs
under a small `sh` that records its exit status (engine.exits, through
engine.launcher), so a killed worker is reported as killed, by signal, whoever
asks.

Reading never writes run rows: `get_run` and `list_runs` overlay what the worker wrote
(events.jsonl) and whether its process lives on the database row (`view`);
the scheduler writes final states into the row. The job manager writes a row
only while its run is queued; the worker's folder is the worker's, except for
the STOP file that asks it to stop.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from . import atomic, events, exits, launcher, paths, registry, scheduler
from .config import DEMO_MODEL, RunConfig
from .diskspace import disk_full_reason
from .errors import DiskFullError, RegistryError, RunError
from .registry import FINAL_STATES, RunInfo
from .rundir import CONFIG_FILE, LOG_FILE, STOP_FILE  # noqa: F401 - re-exported for callers

log = logging.getLogger(__name__)

# The Popen handles of workers this process started (shared with the scheduler).
_children: dict[str, subprocess.Popen] = scheduler.children
_pid_alive = launcher.worker_alive  # engine.recovery's name for it


def _new_run_id() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def default_run_name(cfg: RunConfig) -> str:
    model = cfg.model.name_or_path.rstrip("/").split("/")[-1]
    if cfg.model.name_or_path == DEMO_MODEL:
        model = "demo"
    data = "+".join(Path(d).stem for d in cfg.data.datasets)
    name = f"{model}-{data}-{cfg.method}"
    return re.sub(r"[^\w.+-]+", "-", name)[:80]


def validate(cfg: RunConfig) -> None:
    """Fail fast on what can be checked before a run exists (model, LoRA layers, data sources)."""
    from . import models
    from .targets import check_target_modules

    models.check_model_source(cfg.model)
    check_target_modules(cfg)
    check_data_sources(cfg)
    from .trackers import check_available  # [issue 15] a chosen tracker that is not installed

    check_available(cfg.training.report_to)


def check_data_sources(cfg: RunConfig) -> None:
    """Read and check every local dataset now, so a bad one is refused before a run exists.

    Hub datasets are checked by the worker (reading them may need the network).
    """
    from .data import load_examples
    from .data.examples import resolve_ref
    from .data.readers import is_hub_id

    fmt = None if cfg.data.format == "auto" else cfg.data.format
    refs = list(cfg.data.datasets) + ([cfg.data.val_file] if cfg.data.val_file else [])
    for ref in refs:
        _, source, _ = resolve_ref(ref)
        if source and is_hub_id(source) and not Path(source).exists():
            continue
        load_examples(ref, format=fmt).usable(drop_invalid=cfg.data.drop_invalid)
        # [issue 15] registered KTO or image/video/audio data is refused before a run exists
        from .data.registry import get_dataset, rows_for_training

        rows_for_training(get_dataset(ref), [], cfg.training.seed, getattr(cfg, "objective", "sft"))


# A second identical submit within this many seconds is a double click, not a new run.
DUPLICATE_WINDOW_S = 10.0


class DuplicateSubmit(RunError):
    """The same config was submitted moments ago; `run_id` is the run it started."""

    def __init__(self, message: str, run_id: str):
        super().__init__(message)
        self.run_id = run_id


def submit(cfg: RunConfig, start: bool = True, dedupe: bool = False) -> str:
    """Validate `cfg`, create its run directory and queue it. Returns the run id.

    With `start`, take a scheduler turn at once (the run starts now if its GPUs are free
    and no other process holds the scheduler role).
    Raises ConfigError / ModelError / DataError before anything is written; a run that
    cannot fit on its GPUs is refused (engine.fit) naming the setting to change.
    With `dedupe` (the studio's Start button) the same config submitted again
    within DUPLICATE_WINDOW_S raises DuplicateSubmit naming the first run.
    """
    validate(cfg)
    from . import fit, gpus

    machine = gpus.list_gpus()
    gpus.check_request(cfg.resources.gpus, machine, cfg.resources.processes)
    fit.refuse_if_too_big(cfg, machine)
    text = cfg.to_yaml()
    with _submit_lock():
        if dedupe:
            _refuse_duplicate(text)
        run_id = _new_run_id()
        while (paths.runs_dir() / run_id).exists():
            run_id = _new_run_id()
        name = cfg.output.run_name or default_run_name(cfg)
        final_dir = paths.runs_dir() / run_id
        info = RunInfo(
            id=run_id, name=name, status="queued", model=cfg.model.name_or_path, datasets=list(cfg.data.datasets),
            method=cfg.method, run_dir=final_dir, created_at=time.time(), max_steps=cfg.training.max_steps,
        )
        # Folder first, complete, then its row: a crash in between leaves a folder that
        # engine.recovery adopts; the reverse would leave a row pointing at nothing.
        from .recovery import write_meta

        try:
            with atomic.atomic_dir(final_dir) as tmp:
                (tmp / CONFIG_FILE).write_text(text, encoding="utf-8")
                write_meta(tmp, info)
        except OSError as e:
            full = disk_full_reason(e, final_dir.parent)
            if full:
                raise DiskFullError(f"Cannot create the run: {full}") from None
            raise
        registry.insert(info)
        scheduler.enqueue(run_id, cfg.resources)
    if start:
        scheduler.tick()
    return run_id


@contextmanager
def _submit_lock() -> Iterator[None]:
    """Serialize submits across processes (two studio tabs, a studio and the CLI)."""
    import fcntl

    with open(paths.home() / ".submit.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _refuse_duplicate(text: str) -> None:
    digest = hashlib.sha256(text.encode()).hexdigest()
    now = time.time()
    for r in registry.all_runs():
        if now - r.created_at > DUPLICATE_WINDOW_S:
            break  # newest first
        try:
            same = hashlib.sha256((r.run_dir / CONFIG_FILE).read_bytes()).hexdigest() == digest
        except OSError:
            continue
        if same:
            raise DuplicateSubmit(f"Run {r.id} ({r.name}) was started with this exact config "
                                  f"{now - r.created_at:.0f} s ago; this second Start was ignored.", r.id)


def resume(run_id: str, start: bool = True) -> RunInfo:
    """Queue a stopped or failed run again; it continues from its newest checkpoint, in the
    same run directory, when the scheduler starts it (`start`: take a scheduler turn now)."""
    from .trainer import latest_checkpoint

    run = get_run(run_id)
    if not run.finished:
        raise RunError(f"Run {run.id} is {run.status}; only a stopped or failed run can be resumed.")
    if run.status in ("completed", "cancelled"):
        raise RunError(f"Run {run.id} {'already completed' if run.status == 'completed' else 'was cancelled'}; "
                       "start a new run instead.")
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        raise RunError(f"Run {run.id} saved no checkpoint to resume from (checkpoints are written every "
                       "training.save_steps steps); start it again instead.")
    (run.run_dir / STOP_FILE).unlink(missing_ok=True)
    # The worker's old final status stays in events.jsonl; `view` ignores final statuses
    # written before the run's new start, so nothing here writes into the worker's folder.
    registry.update(run.id, status="queued", started_at=None, finished_at=None, error=None, pid=None)
    scheduler.enqueue(run.id, load_config(run).resources, resume=True)
    if start:
        scheduler.tick()
    return get_run(run.id)


def log_tail(run_dir: Path, lines: int = 20) -> str:
    p = Path(run_dir) / LOG_FILE
    if not p.exists():
        return ""
    with open(p, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def view(run: RunInfo) -> RunInfo:
    """The run as it stands now: its row, overlaid with what its worker wrote (steps, loss,
    final status) and whether its process lives. Pure: writes nothing (the scheduler
    writes final states into the row; see scheduler._settle)."""
    if run.finished:
        return run
    evs = events.read_events(run.run_dir)
    upd: dict = {}
    tr = events.last_train(evs)
    if tr:
        upd.update(step=int(tr.get("step") or 0), last_loss=tr.get("loss"), max_steps=tr.get("max_steps"))
    if run.status == "queued":
        return replace(run, **upd)
    st = events.last_status(evs)
    # A final status from before this start belongs to an earlier attempt (a resumed run).
    if st and st.get("status") in FINAL_STATES and st.get("time", 0) >= (run.started_at or 0):
        upd.update(status=st["status"], finished_at=st.get("time"))
        if st["status"] == "failed":
            from .recovery import failure_text

            upd["error"] = failure_text(run.run_dir, st.get("message") or "")
    elif run.pid and not scheduler.alive_or_reaped(run):
        proc = _children.get(run.id)
        why = exits.describe_death(run.run_dir, proc.returncode if proc else None,
                                   peak_mem_gb=tr.get("peak_mem_gb") if tr else None)
        upd.update(status="failed", finished_at=time.time(), error=why + "\n" + log_tail(run.run_dir))
    elif run.status == "running" and (run.run_dir / STOP_FILE).exists():
        upd["status"] = "stopping"
    return replace(run, **upd)


def get_run(run_id: str) -> RunInfo:
    run = registry.get(run_id)
    if run is None:
        raise RunError(f"No run with id {run_id!r}. `tunesmith runs` lists them.")
    return view(run)


def list_runs() -> list[RunInfo]:
    from .recovery import adopt_orphans

    try:
        adopt_orphans()  # folders without a row (a crash mid-submit, a lost db) get one
    except RegistryError as e:  # a full disk: list what the table has
        log.warning("%s", e)
    return [view(r) for r in registry.all_runs()]


def _alive(run: RunInfo) -> bool:
    """Is the run's worker process alive (engine.recovery's name for it)?"""
    return scheduler.alive_or_reaped(run)


def load_config(run: RunInfo | str) -> RunConfig:
    run = get_run(run) if isinstance(run, str) else run
    return RunConfig.from_yaml(run.run_dir / CONFIG_FILE)


def stop(run_id: str) -> RunInfo:
    """Ask a run to stop after its current step (the worker saves what it has); a queued run
    is cancelled instead. Every rank of a multi-GPU run stops at the same step."""
    run = get_run(run_id)
    if run.finished:
        return run
    if run.status == "queued" and scheduler.cancel(run_id):
        return get_run(run_id)
    # A file, not a signal: the worker polls it between steps and between loading phases,
    # and a signal arriving before the worker installed its handler would kill it.
    (run.run_dir / STOP_FILE).touch()
    return get_run(run_id)


def cancel(run_id: str) -> RunInfo:
    """Take a queued run out of the queue; RunError when it is not queued."""
    run = get_run(run_id)
    if run.status != "queued" or not scheduler.cancel(run_id):
        raise RunError(f"Run {run_id} is {get_run(run_id).status}, not queued; stop it instead.")
    return get_run(run_id)


def delete(run_id: str) -> None:
    run = get_run(run_id)
    if not run.finished:
        raise RunError(f"Run {run_id} is {run.status}; stop it before deleting it.")
    registry.delete(run_id)
    scheduler.forget(run_id)
    shutil.rmtree(run.run_dir, ignore_errors=True)


def wait(run_id: str, timeout: float | None = None, poll: float = 0.5) -> RunInfo:
    """Block until the run reaches a final state (for the CLI and tests). Takes scheduler
    turns while it waits, so queued runs start even when no studio is running."""
    t0 = time.time()
    while True:
        scheduler.tick()
        run = get_run(run_id)
        if run.finished:
            proc = _children.pop(run_id, None)
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
            scheduler.tick()  # write its final state and start the next run
            return run
        if timeout is not None and time.time() - t0 > timeout:
            raise TimeoutError(f"run {run_id} still {run.status} after {timeout:.0f}s")
        time.sleep(poll)


def find_run(ref: str) -> RunInfo:
    """A run by id, unique id prefix, or name; RunError when none matches (for the CLI)."""
    return resolve_run(ref) or get_run(ref)


def _say_newest(ref: str, chosen: RunInfo, count: int) -> None:
    print(f"note: {count} runs are named {ref!r}; using the newest, {chosen.id} (a full id picks another).",
          file=sys.stderr)


def resolve_run(ref: str, note: Callable[[str, RunInfo, int], None] | None = _say_newest) -> RunInfo | None:
    """A run by id, name, or unique id prefix; None when `ref` names no run.

    A name several runs share (the README's commands, run twice) means the newest of them; `note`
    says so in one line (stderr by default). An id prefix that fits several runs stays an error.
    """
    runs = registry.all_runs()  # newest first
    for r in runs:
        if r.id == ref:
            return view(r)
    named = [r for r in runs if r.name == ref]
    if named:
        newest = max(named, key=lambda r: r.created_at)
        if len(named) > 1 and note is not None:
            note(ref, newest, len(named))
        return view(newest)
    matches = [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return view(matches[0])
    if len(matches) > 1:
        raise RunError(f"{ref!r} matches {len(matches)} run ids ({', '.join(r.id for r in matches[:5])}); use the full id.")
    return None
