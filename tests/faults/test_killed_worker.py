"""kill -9 of a worker: every reader says the worker was killed, by which signal, and when the
kernel's out-of-memory killer is the likely cause."""

from __future__ import annotations

import json
import os
import signal

import pytest
from faultkit import cli, demo_cfg, wait_until

from tunesmith.engine import exits, jobs


@pytest.mark.slow
def test_kill_9_is_reported_as_killed(fresh_home):
    run_id = jobs.submit(demo_cfg("training.max_steps=400", "training.save_steps=1000", "output.run_name=killed"))
    wait_until(lambda: jobs.get_run(run_id).step >= 1, 180, "the first training step")
    pid = exits.worker_pid(jobs.get_run(run_id).run_dir)
    assert pid and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    jobs._children.clear()  # another process must be able to tell, not only the worker's parent
    wait_until(lambda: (jobs.get_run(run_id).run_dir / exits.EXIT_FILE).exists(), 30, "the exit status")

    p = cli(fresh_home, "runs")
    assert p.returncode == 0, p.stderr
    reason = next(line for line in p.stdout.splitlines() if line.startswith(f"{run_id} failed:"))
    assert "The worker was killed (signal 9, SIGKILL)" in reason
    assert "'loss'" not in p.stdout and "{" not in p.stdout  # a reason, not metric dicts from the log
    info = json.loads(cli(fresh_home, "runs", "--json").stdout)[0]
    assert info["status"] == "failed" and info["error"].startswith("The worker was killed (signal 9")

    # The studio's Runs tab shows the same reason.
    from tunesmith.studio.runs_tab import run_error

    shown = run_error(run_id)
    assert shown["visible"] and shown["value"].startswith("The worker was killed (signal 9")


def test_oom_kill_is_named_when_the_kernel_counted_one(tmp_path, monkeypatch):
    (tmp_path / exits.EXIT_FILE).write_text("137\n")
    (tmp_path / exits.LAUNCH_FILE).write_text(json.dumps({"oom_kills_at_start": 3}))
    monkeypatch.setattr(exits, "_dmesg_mentions", lambda pid: None)  # dmesg not readable
    monkeypatch.setattr(exits, "oom_kill_count", lambda: 3)
    monkeypatch.setattr(exits, "memory_limit_gb", lambda: 16.0)
    plain = exits.describe_death(tmp_path, peak_mem_gb=2.0)
    assert plain.startswith("The worker was killed (signal 9, SIGKILL)") and "OOM" not in plain
    if not exits.sys.platform.startswith("linux"):
        return
    monkeypatch.setattr(exits, "oom_kill_count", lambda: 4)
    oom = exits.describe_death(tmp_path, peak_mem_gb=2.0)
    assert "most likely by the Linux OOM killer" in oom and "memory cgroup" in oom
    monkeypatch.setattr(exits, "oom_kill_count", lambda: 3)
    near = exits.describe_death(tmp_path, peak_mem_gb=15.5)
    assert "OOM killer" in near and "15.5 GiB of the 16.0 GiB" in near
    (tmp_path / exits.EXIT_FILE).write_text("143\n")
    assert exits.describe_death(tmp_path).startswith("The worker was killed (signal 15, SIGTERM)")
    (tmp_path / exits.EXIT_FILE).write_text("1\n")
    assert exits.describe_death(tmp_path) == "The worker process exited with code 1 without finishing."
