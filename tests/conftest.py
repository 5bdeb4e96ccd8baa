"""Shared fixtures: an isolated TUNESMITH_HOME for the whole session, seeds, the demo run, slow-machine
timeouts, and a sweep that stops every worker the tests started before pytest exits."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

import tunesmith  # noqa: F401  first: its guard keeps this checkout's kernels/ from shadowing HF's `kernels`
from timing import wait_for_run  # noqa: E402  (tests/ is on sys.path, as for tests/gguf/tinymodels)


@pytest.fixture(autouse=True)
def _seed():
    import torch

    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tunesmith_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("tunesmith-home")
    os.environ["TUNESMITH_HOME"] = str(home)
    return home


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """A TUNESMITH_HOME of its own, for tests that check what gets written there."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def demo_run(tunesmith_home):
    """One finished run of the README's demo (assets/demo_identity.yaml: QLoRA of the demo model on the
    identity dataset mixed with general instructions), shared by several tests."""
    from tunesmith.engine import jobs
    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.paths import assets_dir

    cfg = RunConfig.from_yaml(assets_dir() / "demo_identity.yaml").with_overrides(["output.run_name=e2e-identity"])
    run_id = jobs.submit(cfg)
    info = wait_for_run(run_id, 150)  # ~2 min on 2 idle cores with loading
    assert info.status == "completed", info.error
    return info


# ---- no worker outlives the session ---------------------------------------------------------------


def _processes_under(root: str) -> list[int]:
    """Pids (not ours) whose command line or TUNESMITH_HOME points under `root`: workers, torchrun, studios."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        home = next((e[len(b"TUNESMITH_HOME="):].decode(errors="replace") for e in env if e.startswith(b"TUNESMITH_HOME=")), "")
        if "tunesmith" in cmd and (root in cmd or (home + os.sep).startswith(root)):
            found.append(int(entry.name))
    return found


def _stop(pids: list[int], grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:  # workers lead their own session: signal the whole group (torchrun's ranks too)
                os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() and not _zombie(p) for p in pids):
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="session", autouse=True)
def _no_worker_outlives_the_session(tmp_path_factory):
    yield
    from tunesmith.engine import jobs

    for proc in list(getattr(jobs, "_children", {}).values()):
        if proc.poll() is None:
            _stop([proc.pid])
    left = _processes_under(str(tmp_path_factory.getbasetemp()) + os.sep)
    if left:
        print(f"\nstopping {len(left)} process(es) the tests left running: {left}", file=sys.stderr)
        _stop(left)
