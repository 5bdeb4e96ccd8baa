"""Start a run's worker: one process, or one per GPU through torchrun.

    cmd, env = worker_command(run_dir, nproc=2, gpus=[0, 1])
    proc = launch(run_dir, nproc=2, gpus=[0, 1])

One process:  python -m tunesmith.engine.worker RUN_DIR
Several:      python -m torch.distributed.run --standalone --nproc-per-node N -m tunesmith.engine.worker RUN_DIR
(`torch.distributed.run` is what the `torchrun` script runs; calling it through
this interpreter keeps the run in the studio's environment.) `--standalone`
picks a free rendezvous port on this host, so several multi-GPU runs can share
a machine. torchrun watches its ranks: when one dies it stops the others and
exits non-zero, and the job manager reports the run failed with worker.log's
tail (every rank writes there, each line prefixed with its rank). The same launch
serves DDP and FSDP: the ranks choose between them (engine/training/fsdp.py).

Multi-node (documented, not driven by the queue): run the same worker on every
node with torchrun's rendezvous arguments and a run folder on shared storage:
    torchrun --nnodes 2 --node-rank K --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id RUN_ID \\
        -m tunesmith.engine.worker /shared/tunesmith/runs/RUN_ID
`rdzv_args(...)` builds those arguments.

Workers start in their own session (start_new_session) so Ctrl+C in the
terminal that started them does not kill them, and `kill_tree` can end every
rank at once with one signal to the process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from . import paths
from .rundir import LOG_FILE


def rdzv_args(nnodes: int, node_rank: int, endpoint: str, run_id: str) -> list[str]:
    """torchrun arguments that join node `node_rank` of `nnodes` to a rendezvous at HOST:PORT `endpoint`."""
    return ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint, "--rdzv-id", run_id]


def worker_command(run_dir: Path, nproc: int = 1, gpus: list[int] | None = None, resume: bool = False,
                   run_id: str = "") -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start the worker for `run_dir` on `gpus` ([] / None: the CPU)."""
    worker = ["-m", "tunesmith.engine.worker", str(run_dir), *(["--resume"] if resume else [])]
    if nproc > 1:
        # --local-ranks-filter is left at its default: every rank's output goes to worker.log,
        # where a failing rank's traceback is what the user needs to see.
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                "--max-restarts", "0", *worker]
    else:
        argv = [sys.executable, *worker]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TUNESMITH_HOME=str(paths.home()))
    if run_id:
        env["TUNESMITH_RUN_ID"] = run_id
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the numbering nvidia-smi and engine.gpus use
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    elif gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run must not grab a GPU another run was given
    # torchrun sets OMP_NUM_THREADS=1 per rank when unset; CPU ranks share the cores instead.
    if nproc > 1 and not gpus:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return argv, env


# The worker (or torchrun) runs under `sh`, which records its pid and, when it ends however it
# ends, its exit status (128 + N when killed by signal N): engine.exits reads both.
_LAUNCH_SH = (
    '"$@" & pid=$!; echo $pid > worker.pid; wait $pid; rc=$?; '
    'echo $rc > .worker.exit.tmp && mv -f .worker.exit.tmp worker.exit; exit $rc'
)


def launch(run_dir: Path, nproc: int = 1, gpus: list[int] | None = None, resume: bool = False,
           run_id: str = "") -> subprocess.Popen:
    """Start the worker(s) for `run_dir` with stdout and stderr appended to worker.log."""
    import json
    import time

    from . import atomic, exits

    run_dir = Path(run_dir)
    argv, env = worker_command(run_dir, nproc, gpus, resume, run_id)
    for stale in (exits.EXIT_FILE, exits.PID_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    atomic.write_text(run_dir / exits.LAUNCH_FILE, json.dumps(
        {"oom_kills_at_start": exits.oom_kill_count(), "time": time.time(), "gpus": gpus or [], "processes": nproc}))
    with open(run_dir / LOG_FILE, "ab") as log:
        # cwd is the run directory: the worker owns it.
        return subprocess.Popen(["/bin/sh", "-c", _LAUNCH_SH, "tunesmith-worker", *argv], cwd=str(run_dir),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)


def kill_tree(pid: int, sig: int = signal.SIGTERM) -> bool:
    """Signal a worker and every rank it started (they share its process group)."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def worker_alive(pid: int | None, run_dir: Path) -> bool:
    """Is `pid` still the live worker (or torchrun agent) of `run_dir`? pids are reused,
    and a zombie answers kill(0), so the command line and state are checked too."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return str(run_dir) in cmd
    except OSError:
        return True  # no /proc (macOS): trust kill(0)


def find_worker(run_dir: Path) -> int | None:
    """The pid of a live process started for `run_dir` (its command line names it), if any.
    Used to adopt a worker whose starter died before recording its pid."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    target = str(run_dir).encode()
    found = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"tunesmith.engine.worker" in cmd and target in cmd and worker_alive(int(d.name), run_dir):
            found.append(int(d.name))
    return min(found) if found else None  # the agent starts before its ranks
