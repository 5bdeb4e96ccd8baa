"""Why a worker process ended without writing a final status: its exit code or signal,
and on Linux whether the kernel's out-of-memory killer is the likely cause.

The launcher (engine.jobs) runs the worker under a small `sh` that records its
exit status in RUN_DIR/worker.exit (128 + N for signal N) and the worker's pid
in RUN_DIR/worker.pid, so any process can explain a death later, not only the
one that started the worker. launch.json keeps the cgroup's OOM-kill counter at
start, so a kill that raised it points at the OOM killer.

What it does not know: a signal sent by a person and one sent by a container
runtime look the same; only the kernel's own records (dmesg, the cgroup counter)
or a peak memory near the limit say "out of memory".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

EXIT_FILE = "worker.exit"
PID_FILE = "worker.pid"
LAUNCH_FILE = "launch.json"


def worker_pid(run_dir: Path) -> int | None:
    return _read_int(Path(run_dir) / PID_FILE)


def exit_code(run_dir: Path) -> int | None:
    return _read_int(Path(run_dir) / EXIT_FILE)


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return None


def oom_kill_count() -> int | None:
    """The cgroup's count of OOM kills (cgroup v2 memory.events, or v1 memory.oom_control)."""
    for p in (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")):
        try:
            for line in p.read_text().splitlines():
                key, _, val = line.partition(" ")
                if key == "oom_kill":
                    return int(val)
        except (OSError, ValueError):
            continue
    return None


def memory_limit_gb() -> float | None:
    """The cgroup memory limit if one is set, else the machine's RAM."""
    for p in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            v = p.read_text().strip()
            if v != "max" and int(v) < 1 << 60:
                return int(v) / 2**30
        except (OSError, ValueError):
            continue
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _dmesg_mentions(pid: int) -> bool | None:
    """True when the kernel log records an OOM kill of `pid`; None when it cannot be read."""
    try:
        p = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    return any(f"Killed process {pid} " in line or f"pid={pid}," in line and "oom" in line.lower()
               for line in p.stdout.splitlines())


def oom_evidence(run_dir: Path, peak_mem_gb: float | None = None) -> str | None:
    """A short reason to believe the OOM killer ended this worker, or None."""
    if not sys.platform.startswith("linux"):
        return None
    pid = worker_pid(run_dir)
    if pid and _dmesg_mentions(pid):
        return "the kernel log (dmesg) records an out-of-memory kill of its process"
    try:
        start = json.loads((Path(run_dir) / LAUNCH_FILE).read_text()).get("oom_kills_at_start")
    except (OSError, ValueError):
        start = None
    now = oom_kill_count()
    if start is not None and now is not None and now > start:
        return "the memory cgroup counted an out-of-memory kill since the run started"
    limit = memory_limit_gb()
    if peak_mem_gb and limit and peak_mem_gb >= 0.8 * limit:
        return f"its memory had reached {peak_mem_gb:.1f} GiB of the {limit:.1f} GiB limit"
    return None


def describe_death(run_dir: Path, returncode: int | None = None, peak_mem_gb: float | None = None) -> str:
    """One line saying how the worker ended, for a run with no final status."""
    code = returncode if returncode is not None else exit_code(run_dir)
    if code is None:
        return "The worker process exited without finishing (no exit status was recorded)."
    sig = -code if code < 0 else code - 128 if code > 128 else 0
    if not sig:
        return f"The worker process exited with code {code} without finishing."
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = "unknown signal"
    msg = f"The worker was killed (signal {sig}, {name})"
    if sig == signal.SIGKILL:
        why = oom_evidence(run_dir, peak_mem_gb)
        if why:
            return (f"{msg}, most likely by the Linux OOM killer: {why}. Lower training.batch_size or "
                    "data.cutoff_len, or free memory, then `tunesmith resume` it.")
    return msg + "; `tunesmith resume` continues it from its newest checkpoint, if it saved one."
