"""The queue without training: order, positions, cancel, reorder, and the scheduler lease.

Runs here are submitted for real (config written, row inserted, queued) but started with a
launcher that runs a short `sleep` instead of the worker, so each test takes a second; the
slow tests in test_queue_e2e.py train real demo runs through the same scheduler.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import events, jobs, registry, scheduler
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import RunError
from tunesmith.engine.gpus import GpuInfo


def _cfg(name: str, *extra: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + [f"output.run_name={name}", *extra])


def _sleeper(seconds: float = 30.0):
    """A launcher whose 'worker' is a sleeping process (its command line names the run folder,
    as the real one does, so liveness checks treat it as the run's worker)."""
    started: list[str] = []

    def launch(run, slot):
        started.append(run.id)
        return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})", str(run.run_dir)],
                                start_new_session=True)

    launch.started = started  # type: ignore[attr-defined]
    return launch


def _finish(run_id: str, status: str = "completed") -> None:
    """End a sleeping 'worker' the way a real one ends: a final status event, then exit."""
    run = jobs.get_run(run_id)
    events.EventWriter(run.run_dir).status(status, "done")
    proc = scheduler.children.pop(run_id)
    proc.kill()
    proc.wait()


@pytest.fixture(autouse=True)
def _clean_children():
    yield
    for proc in scheduler.children.values():
        proc.kill()
        proc.wait()
    scheduler.children.clear()
    scheduler.release()


def test_three_submissions_one_runs_two_wait_in_order(fresh_home, capsys):
    ids = [jobs.submit(_cfg(f"q{i}"), start=False) for i in range(3)]
    launch = _sleeper()
    res = scheduler.tick(launch=launch, machine_gpus=[])
    assert res.holder and res.started == [ids[0]]
    assert [jobs.get_run(i).status for i in ids] == ["running", "queued", "queued"]
    assert scheduler.positions() == {ids[1]: 1, ids[2]: 2}
    # A second tick starts nothing: one run at a time on a machine without GPUs.
    assert scheduler.tick(launch=launch, machine_gpus=[]).started == []

    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "queued #1" in out and "queued #2" in out
    assert main(["queue"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert lines[1].split()[:4] == ["-", ids[0], "q0", "running"]
    assert lines[2].split()[:4] == ["1", ids[1], "q1", "queued"]

    # The running one ends: the scheduler writes its final state and starts the next.
    _finish(ids[0])
    res = scheduler.tick(launch=launch, machine_gpus=[])
    assert res.settled == [ids[0]] and res.started == [ids[1]]
    assert registry.get(ids[0]).status == "completed"
    assert scheduler.positions() == {ids[2]: 1}


def test_reorder_and_cancel(fresh_home, capsys):
    ids = [jobs.submit(_cfg(f"r{i}"), start=False) for i in range(4)]
    launch = _sleeper()
    scheduler.tick(launch=launch, machine_gpus=[])  # ids[0] runs
    assert scheduler.move(ids[3], "top") == 1
    assert list(scheduler.positions()) == [ids[3], ids[1], ids[2]]
    assert main(["queue", "down", ids[3]]) == 0
    assert list(scheduler.positions()) == [ids[1], ids[3], ids[2]]
    assert main(["queue", "move", ids[2], "1"]) == 0
    assert list(scheduler.positions()) == [ids[2], ids[1], ids[3]]
    with pytest.raises(RunError, match="not queued"):
        scheduler.move(ids[0], "top")

    assert main(["queue", "cancel", ids[1]]) == 0
    assert jobs.get_run(ids[1]).status == "cancelled"
    assert list(scheduler.positions()) == [ids[2], ids[3]]
    assert main(["queue", "cancel", ids[0]]) == 2  # running: stop it instead
    assert "stop it instead" in capsys.readouterr().err
    # stop() on a queued run cancels it too
    assert jobs.stop(ids[3]).status == "cancelled"

    _finish(ids[0])
    assert scheduler.tick(launch=launch, machine_gpus=[]).started == [ids[2]]
    assert launch.started == [ids[0], ids[2]]  # cancelled runs never start


def _gpu(i: int) -> GpuInfo:
    return GpuInfo(i, "Test GPU", 24 * 2**30, 23 * 2**30)


def test_gpu_sets_block_each_other(fresh_home, monkeypatch):
    """On 4 GPUs: a run on 0,1 blocks both; auto takes a free one; a waiting 0,1 run is not
    overtaken on those GPUs by runs behind it. (The machine's GPUs are described to the
    scheduling policy: CI has none.)"""
    from tunesmith.engine import gpus

    g4 = [_gpu(i) for i in range(4)]
    monkeypatch.setattr(gpus, "list_gpus", lambda fresh=False: list(g4))
    launch = _sleeper()
    a = jobs.submit(_cfg("a", "resources.gpus=[0, 1]"), start=False)
    b = jobs.submit(_cfg("b", "resources.gpus=[1, 2]"), start=False)
    c = jobs.submit(_cfg("c"), start=False)             # auto: one free GPU
    d = jobs.submit(_cfg("d", "resources.gpus=2"), start=False)  # any two
    e = jobs.submit(_cfg("e", "resources.gpus=[3]"), start=False)
    res = scheduler.tick(launch=launch, machine_gpus=g4)
    # a takes 0,1; b waits for 1 and reserves 1,2; c may only take 3; d and e wait behind them.
    assert res.started == [a, c]
    assert scheduler.slot(a).assigned == [0, 1] and scheduler.slot(c).assigned == [3]
    assert scheduler.positions() == {b: 1, d: 2, e: 3}
    _finish(a)
    res = scheduler.tick(launch=launch, machine_gpus=g4)
    assert res.started == [b]  # d (any two) waits behind b: only GPU 0 is left
    assert scheduler.slot(b).assigned == [1, 2]


def test_reading_never_writes_the_database(fresh_home):
    run_id = jobs.submit(_cfg("reader"), start=False)
    scheduler.tick(launch=_sleeper(), machine_gpus=[])
    db = Path(os.environ["TUNESMITH_HOME"]) / "tunesmith.db"
    events.EventWriter(jobs.get_run(run_id).run_dir).status("completed", "done")
    before = registry.get(run_id)
    for _ in range(3):
        assert jobs.get_run(run_id).status == "completed"  # the view sees the worker's final status
        jobs.list_runs()
    assert registry.get(run_id) == before and before.status == "running"  # ... but only the scheduler writes it
    assert db.exists()


def test_resume_does_not_write_the_workers_events(fresh_home):
    run_id = jobs.submit(_cfg("resumable"), start=False)
    launch = _sleeper()
    scheduler.tick(launch=launch, machine_gpus=[])
    run = jobs.get_run(run_id)
    ckpt = run.run_dir / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    _finish(run_id, "stopped")
    scheduler.tick(launch=launch, machine_gpus=[])
    before = (run.run_dir / "events.jsonl").read_bytes()
    assert jobs.resume(run_id, start=False).status == "queued"
    assert (run.run_dir / "events.jsonl").read_bytes() == before
    scheduler.tick(launch=launch, machine_gpus=[])
    # restarted: the old "stopped" line predates this start and no longer counts
    assert jobs.get_run(run_id).status == "running"
    assert scheduler.slot(run_id).resume


RACER = """
import sys, time
from tunesmith.engine import scheduler
import subprocess
log = sys.argv[1]
def launch(run, slot):
    with open(log, "a") as f:
        f.write(run.id + "\\n")
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(run.run_dir)],
                            start_new_session=True)
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    scheduler.tick(launch=launch, machine_gpus=[])
    time.sleep(0.01)
"""


def test_competing_schedulers_never_start_a_run_twice(fresh_home, tmp_path, monkeypatch):
    """Four processes tick as fast as they can; one holds the lease. Killing the holder hands the
    role to another, which starts the next run; each run starts exactly once."""
    ids = [jobs.submit(_cfg(f"race{i}"), start=False) for i in range(2)]
    log = tmp_path / "starts.log"
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    env = dict(os.environ)
    racers = [subprocess.Popen([sys.executable, str(script), str(log), "180"], env=env, cwd=tmp_path)
              for _ in range(4)]
    try:
        t0 = time.time()
        while not (log.exists() and log.read_text().split() and registry.get(ids[0]).pid):
            assert time.time() - t0 < 90, "no racer started the first run"
            time.sleep(0.05)
        lease = scheduler.holder()
        assert lease is not None and lease.pid in [p.pid for p in racers]
        # the first run ends; the holder is killed before it can start the second
        holder_proc = next(p for p in racers if p.pid == lease.pid)
        holder_proc.kill()
        holder_proc.wait()
        run = jobs.get_run(ids[0])
        events.EventWriter(run.run_dir).status("completed", "done")
        os.kill(run.pid, 9)
        t0 = time.time()
        while len(log.read_text().split()) < 2:
            assert time.time() - t0 < 90, "no other racer took over the queue"
            time.sleep(0.05)
        new = scheduler.holder()
        assert new is not None and new.pid != lease.pid
        time.sleep(1.0)  # let every racer tick a few more times
        assert sorted(log.read_text().split()) == sorted(ids)  # each started once
        assert registry.get(ids[0]).status == "completed"
    finally:
        for p in racers:
            p.kill()
            p.wait()
        for rid in ids:
            pid = registry.get(rid).pid
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass


def test_runs_tab_shows_places_and_gpus(fresh_home):
    from tunesmith.studio import gpu_panel, runs_tab

    ids = [jobs.submit(_cfg(f"tab{i}"), start=False) for i in range(3)]
    scheduler.tick(launch=_sleeper(), machine_gpus=[])
    df = runs_tab.runs_frame().set_index("id")
    assert df.loc[ids[0], "status"] == "running" and df.loc[ids[0], "queue"] == "" and df.loc[ids[0], "gpus"] == "cpu"
    assert df.loc[ids[1], "queue"] == "#1" and df.loc[ids[2], "queue"] == "#2"
    assert df.loc[ids[1], "gpus"] == "auto"
    # the GPU picker's choices: names and free memory, values the config parses
    two = [GpuInfo(0, "NVIDIA L4", 24 * 10**9, 20 * 10**9), GpuInfo(1, "NVIDIA L4", 24 * 10**9, 3 * 10**9)]
    choices = gpu_panel.gpu_choices(two)
    assert choices[1] == ("GPU 0: NVIDIA L4, 20.0 of 24.0 GB free", "[0]")
    for _, value in choices:
        RunConfig().with_overrides([f"resources.gpus={value}"])
    assert RunConfig().with_overrides([f"resources.gpus={choices[-1][1]}"]).resources.gpus == [0, 1]
