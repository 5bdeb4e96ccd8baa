"""The queue with real demo runs and a real `tunesmith scheduler` that gets killed mid-queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import events, jobs, registry, scheduler
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig

pytestmark = pytest.mark.slow


def _cfg(name: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + [f"output.run_name={name}", "training.max_steps=2",
                                                               "training.batch_size=2"])


def _scheduler(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tunesmith.cli.main", "scheduler", *args],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def test_queue_survives_its_scheduler_being_killed(fresh_home, tmp_path, capsys):
    ids = [jobs.submit(_cfg(f"e2e{i}"), start=False) for i in range(3)]
    first = _scheduler(tmp_path)
    try:
        t0 = time.time()
        while not registry.get(ids[0]).pid:
            assert time.time() - t0 < 120, "the scheduler did not start the first run"
            time.sleep(0.2)
        assert [jobs.get_run(i).status for i in ids] == ["running", "queued", "queued"]
        assert scheduler.positions() == {ids[1]: 1, ids[2]: 2}
        assert main(["runs"]) == 0
        out = capsys.readouterr().out
        assert "queued #1" in out and "queued #2" in out

        assert main(["queue", "top", ids[2]]) == 0
        assert main(["queue", "cancel", ids[1]]) == 0
        assert scheduler.positions() == {ids[2]: 1}

        first.send_signal(signal.SIGKILL)  # mid-queue: run 0 trains on, run 2 waits
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert jobs.get_run(ids[0]).status == "running"  # the worker outlives its scheduler

    second = _scheduler(tmp_path, "--exit-when-idle")
    try:
        assert second.wait(timeout=600) == 0
    finally:
        if second.poll() is None:
            second.kill()
    runs = [registry.get(i) for i in ids]  # what the scheduler wrote, not a view
    assert [r.status for r in runs] == ["completed", "cancelled", "completed"], [r.error for r in runs]
    assert runs[2].started_at >= runs[0].finished_at  # one run at a time on the CPU
    for r in (runs[0], runs[2]):
        starts = [e for e in events.read_events(r.run_dir) if e["type"] == "status" and e["message"] == "starting"]
        assert len(starts) == 1  # started exactly once
        assert r.has_adapter
    assert not (runs[1].run_dir / "events.jsonl").exists()  # the cancelled run never started
    assert scheduler.holder() is None  # the headless scheduler handed the role back
