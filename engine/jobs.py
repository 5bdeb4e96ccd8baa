"""The job manager: submit runs, start one worker process per run, track them.

    run_id = submit(cfg)          # validates, writes runs/<id>/config.yaml, starts the worker
    get_run(run_id).status        # queued | running | stopping | completed | stopped | failed
    stop(run_id)                  # graceful: the worker saves the adapter so far, then exits

State lives in SQLite (engine.registry) and in each run directory, never in
this process: a studio or CLI that restarts rebuilds everything from the
database, the worker's pid and events.jsonl, so closing a browser or
restarting the studio never stops or loses a run. Workers are started in their
own session, so Ctrl+C in the studio's terminal does not kill them either.

Crash order: a run's folder (config.yaml, run.json) is complete before its row
exists, and a folder without a row is adopted on the next listing
(engine.recovery), so no crash leaves a run that nobody lists. The worker runs
under a small `sh` that records its exit status (engine.exits), so a killed
worker is reported as killed, by signal, whoever asks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from . import atomic, events, exits, paths, registry
from .config import DEMO_MODEL, RunConfig
from .diskspace import disk_full_reason
from .diskspace import release as release_ballast
from .errors import DiskFullError, RegistryError, RunError
from .registry import FINAL_STATES, RunInfo

log = logging.getLogger(__name__)

STOP_FILE = "STOP"
LOG_FILE = "worker.log"
CONFIG_FILE = "config.yaml"

# Popen handles of workers this process started, so finished children are reaped
# (a zombie would look alive to os.kill(pid, 0)).
_children: dict[str, subprocess.Popen] = {}


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
    """Validate `cfg`, create its run directory and start its worker. Returns the run id.

    Raises ConfigError / ModelError / DataError before anything is written.
    With `dedupe` (the studio's Start button) the same config submitted again
    within DUPLICATE_WINDOW_S raises DuplicateSubmit naming the first run.
    """
    validate(cfg)
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
    if start:
        _start_worker(info)
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


def resume(run_id: str) -> RunInfo:
    """Continue a stopped or failed run from its newest checkpoint, in the same run directory."""
    from .trainer import latest_checkpoint

    run = get_run(run_id)
    if not run.finished:
        raise RunError(f"Run {run.id} is {run.status}; only a stopped or failed run can be resumed.")
    if run.status == "completed":
        raise RunError(f"Run {run.id} already completed; start a new run to train more.")
    ckpt = latest_checkpoint(run.run_dir)
    if ckpt is None:
        raise RunError(f"Run {run.id} saved no checkpoint to resume from (checkpoints are written every "
                       "training.save_steps steps); start it again instead.")
    (run.run_dir / STOP_FILE).unlink(missing_ok=True)
    # No worker owns the directory now; this line supersedes the old final status so that
    # nobody reading in between sees the run as still stopped.
    events.EventWriter(run.run_dir).status("running", "resuming")
    registry.update(run.id, status="queued", finished_at=None, error=None)
    _start_worker(get_run(run.id), resume=True)
    return get_run(run.id)


# The worker runs under `sh`, which records the worker's pid and, when it ends however it
# ends, its exit status (128 + N when killed by signal N): engine.exits reads both.
_LAUNCH_SH = (
    '"$@" & pid=$!; echo $pid > worker.pid; wait $pid; rc=$?; '
    'echo $rc > .worker.exit.tmp && mv -f .worker.exit.tmp worker.exit; exit $rc'
)


def _start_worker(info: RunInfo, resume: bool = False) -> None:
    for stale in (exits.EXIT_FILE, exits.PID_FILE):
        (info.run_dir / stale).unlink(missing_ok=True)
    atomic.write_text(info.run_dir / exits.LAUNCH_FILE,
                      json.dumps({"oom_kills_at_start": exits.oom_kill_count(), "time": time.time()}))
    logf = open(info.run_dir / LOG_FILE, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TUNESMITH_RUN_ID=info.id, TUNESMITH_HOME=str(paths.home()))
    # cwd is the run directory: a repo checkout's top-level kernels/ folder must not shadow
    # Hugging Face's `kernels` package in the worker.
    worker = [sys.executable, "-m", "tunesmith.engine.worker", str(info.run_dir), *(["--resume"] if resume else [])]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", _LAUNCH_SH, "tunesmith-worker", *worker],
        cwd=str(info.run_dir), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )
    logf.close()
    _children[info.id] = proc
    registry.update(info.id, pid=proc.pid, status="running", started_at=time.time())


def _alive(run: RunInfo) -> bool:
    proc = _children.get(run.id)
    if proc is not None:
        return proc.poll() is None
    if not run.pid:
        return False
    return _pid_alive(run.pid, run.run_dir)


def _pid_alive(pid: int, run_dir: Path) -> bool:
    """Is `pid` alive and still the launcher or worker of `run_dir` (pids are reused)?"""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Same pid, but is it still our worker and not a zombie?
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return str(run_dir) in cmd
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


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


def _sync(run: RunInfo) -> RunInfo:
    """Bring a registry row up to date from the run directory and the process table.

    Reading must work on a full disk: when the row cannot be written, the
    caller still gets the up-to-date values.
    """
    if run.finished:
        return run
    evs = events.read_events(run.run_dir)
    upd: dict = {}
    tr = events.last_train(evs)
    if tr:
        upd.update(step=int(tr.get("step") or 0), last_loss=tr.get("loss"), max_steps=tr.get("max_steps"))
    st = events.last_status(evs)
    if st and st.get("status") in FINAL_STATES:
        from .recovery import failure_text

        upd.update(status=st["status"], finished_at=st.get("time"))
        if st["status"] == "failed":
            upd["error"] = failure_text(run.run_dir, st.get("message") or "")
    elif run.status in ("running", "stopping") and not _alive(run):
        proc = _children.pop(run.id, None)
        why = exits.describe_death(run.run_dir, proc.returncode if proc else None,
                                   peak_mem_gb=tr.get("peak_mem_gb") if tr else None)
        upd.update(status="failed", finished_at=time.time(), error=why + "\n" + log_tail(run.run_dir))
        release_ballast(run.run_dir)  # the dead worker's reserve file
    elif run.status == "running" and (run.run_dir / STOP_FILE).exists():
        upd["status"] = "stopping"
    if upd:
        try:
            registry.update(run.id, **upd)
        except RegistryError as e:
            log.warning("could not record run %s's state: %s", run.id, e)
        for k, v in upd.items():
            setattr(run, k, v)
    return run


def get_run(run_id: str) -> RunInfo:
    run = registry.get(run_id)
    if run is None:
        raise RunError(f"No run with id {run_id!r}. `tunesmith runs` lists them.")
    return _sync(run)


def list_runs() -> list[RunInfo]:
    from .recovery import adopt_orphans

    try:
        adopt_orphans()
    except RegistryError as e:  # a full disk: list what the table has
        log.warning("%s", e)
    return [_sync(r) for r in registry.all_runs()]


def load_config(run: RunInfo | str) -> RunConfig:
    run = get_run(run) if isinstance(run, str) else run
    return RunConfig.from_yaml(run.run_dir / CONFIG_FILE)


def stop(run_id: str) -> RunInfo:
    """Ask a run to stop after its current step; the worker saves what it has."""
    run = get_run(run_id)
    if run.finished:
        return run
    # A file, not a signal: the worker polls it between steps and between loading phases,
    # and a signal arriving before the worker installed its handler would kill it.
    (run.run_dir / STOP_FILE).touch()
    registry.update(run_id, status="stopping")
    return get_run(run_id)


def delete(run_id: str) -> None:
    run = get_run(run_id)
    if not run.finished:
        raise RunError(f"Run {run_id} is {run.status}; stop it before deleting it.")
    registry.delete(run_id)
    shutil.rmtree(run.run_dir, ignore_errors=True)


def wait(run_id: str, timeout: float | None = None, poll: float = 0.5) -> RunInfo:
    """Block until the run reaches a final state (for the CLI and tests)."""
    t0 = time.time()
    while True:
        run = get_run(run_id)
        if run.finished:
            proc = _children.pop(run_id, None)
            if proc is not None:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
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
            return _sync(r)
    named = [r for r in runs if r.name == ref]
    if named:
        newest = max(named, key=lambda r: r.created_at)
        if len(named) > 1 and note is not None:
            note(ref, newest, len(named))
        return _sync(newest)
    matches = [r for r in runs if r.id.startswith(ref)]
    if len(matches) == 1:
        return _sync(matches[0])
    if len(matches) > 1:
        raise RunError(f"{ref!r} matches {len(matches)} run ids ({', '.join(r.id for r in matches[:5])}); use the full id.")
    return None
