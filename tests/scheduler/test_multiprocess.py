"""Two training processes through torchrun (gloo, CPU), launched by the queue's scheduler.

The demo model trains the same on 2 processes x batch 2 as on 1 process x batch 4 (the same
global batch); only rank 0 writes; Stop ends both ranks; a killed rank fails the run with
worker.log's tail and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tunesmith.engine import events, jobs, scheduler
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig

pytestmark = pytest.mark.slow


def _cfg(name: str, *extra: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + [f"output.run_name={name}", *extra])


def _processes_of(run_dir: Path) -> dict[int, str]:
    """{pid: RANK, 'agent' (torchrun) or 'sh'} of live processes started for `run_dir`."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            if str(run_dir).encode() not in cmd or b"tunesmith.engine.worker" not in cmd:
                continue
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0")
                       if "=" in kv)
        except OSError:
            continue
        if cmd.startswith(b"/bin/sh"):
            out[int(d.name)] = "sh"  # the launcher's exit-status recorder
        else:
            out[int(d.name)] = env.get("RANK", "agent" if b"torch.distributed.run" in cmd else "?")
    return out


def _wait_for_step(run_id: str, step: int, timeout: float = 300) -> None:
    t0 = time.time()
    while jobs.get_run(run_id).step < step:
        assert jobs.get_run(run_id).status == "running", jobs.get_run(run_id).error
        assert time.time() - t0 < timeout
        scheduler.tick()
        time.sleep(0.3)


def _wait_gone(run_dir: Path, timeout: float) -> None:
    t0 = time.time()
    while _processes_of(run_dir):
        assert time.time() - t0 < timeout, _processes_of(run_dir)
        time.sleep(0.2)


def _losses(run_dir: Path) -> list[float]:
    return [ev["loss"] for ev in events.read_events(run_dir) if ev["type"] == "train"]


def test_two_processes_train_like_one_with_the_same_global_batch(fresh_home):
    base = ["training.max_steps=4", "training.save_steps=2", "training.gradient_accumulation=1"]
    one = jobs.wait(jobs.submit(_cfg("one", *base, "training.batch_size=4")), timeout=600)
    assert one.status == "completed", one.error
    two = jobs.wait(jobs.submit(_cfg("two", *base, "training.batch_size=2", "resources.processes=2")), timeout=600)
    assert two.status == "completed", two.error

    assert _losses(two.run_dir) == pytest.approx(_losses(one.run_dir), rel=2e-3)
    assert len(_losses(two.run_dir)) == 4
    # Only rank 0 wrote: one of each event, one set of checkpoints, one adapter.
    evs = events.read_events(two.run_dir)
    assert [e["step"] for e in evs if e["type"] == "train"] == [1, 2, 3, 4]
    assert [e["message"] for e in evs if e["type"] == "status"].count("starting") == 1
    assert [e["status"] for e in evs if e["type"] == "status"].count("completed") == 1
    assert two.has_adapter
    assert sorted(p.name for p in (two.run_dir / "checkpoints").iterdir() if not p.name.startswith(".")) \
        == ["checkpoint-2", "checkpoint-4"]
    log = (two.run_dir / "worker.log").read_text()
    assert "[rank 0]" in log and "[rank 1]" in log and "rank 1 of 2 (gloo" in log
    _wait_gone(two.run_dir, 60)  # rank 0 writes "completed" before the ranks tear the group down


def test_stop_ends_both_ranks(fresh_home):
    run_id = jobs.submit(_cfg("stop2", "training.max_steps=400", "training.save_steps=1000", "resources.processes=2",
                              "training.batch_size=2"))
    run_dir = jobs.get_run(run_id).run_dir
    _wait_for_step(run_id, 2)
    ranks = sorted(_processes_of(run_dir).values())
    assert ranks == ["0", "1", "agent", "sh"], ranks
    jobs.stop(run_id)
    info = jobs.wait(run_id, timeout=180)
    assert info.status == "stopped" and info.has_adapter
    assert 2 <= info.step < 400
    _wait_gone(run_dir, 60)


def test_a_killed_rank_fails_the_run_cleanly(fresh_home):
    run_id = jobs.submit(_cfg("kill2", "training.max_steps=400", "training.save_steps=1000", "resources.processes=2",
                              "training.batch_size=2"))
    run_dir = jobs.get_run(run_id).run_dir
    _wait_for_step(run_id, 2)
    rank1 = next(pid for pid, rank in _processes_of(run_dir).items() if rank == "1")
    os.kill(rank1, signal.SIGKILL)
    info = jobs.wait(run_id, timeout=180)
    assert info.status == "failed"
    # torchrun stops rank 0 (no final status: "exited ... without finishing"), or rank 0 sees its peer
    # vanish first and says so itself
    assert "without finishing" in info.error or "another training process died" in info.error, info.error
    assert "rank" in info.error  # the log tail names the rank that died (torchrun's summary)
    _wait_gone(run_dir, 60)
