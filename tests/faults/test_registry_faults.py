"""The run registry survives damage: a garbage or deleted tunesmith.db is rebuilt from the run
folders, a crash between a run's folder and its row loses nothing, `tunesmith doctor` repairs."""

from __future__ import annotations

import json
import time

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import events, jobs, paths, registry
from tunesmith.engine.config import RunConfig

from faultkit import cli, demo_cfg


def _finished_run(name: str, status: str = "completed", steps: int = 3) -> str:
    """A run as a worker leaves it: folder, config, metrics and a final status (no training needed)."""
    run_id = jobs.submit(demo_cfg(f"output.run_name={name}", f"training.max_steps={steps}"), start=False)
    run_dir = jobs.get_run(run_id).run_dir
    registry.update(run_id, status="running", started_at=time.time())  # as the scheduler marks a run it starts
    w = events.EventWriter(run_dir)
    w.status("running", "starting")
    for step in range(1, steps + 1):
        w.write("train", step=step, max_steps=steps, loss=2.0 / step)
    w.status(status, "finished" if status == "completed" else "ValueError: boom")
    registry.update(run_id, status=status, finished_at=time.time(), step=steps,  # as the scheduler settles it
                    last_loss=2.0 / steps)
    return run_id


def _listing(home) -> dict:
    p = cli(home, "runs", "--json")
    assert p.returncode == 0, p.stderr
    return {r["id"]: (r["name"], r["status"], r["step"], r["last_loss"]) for r in json.loads(p.stdout)}


def test_garbage_in_the_db_is_moved_aside_and_rebuilt(fresh_home):
    ids = [_finished_run("alpha"), _finished_run("beta", status="failed")]
    before = _listing(fresh_home)
    assert set(before) == set(ids) and before[ids[0]] == ("alpha", "completed", 3, pytest.approx(2 / 3))
    db = paths.db_path()
    with open(db, "r+b") as f:  # the first 4 KB: header and schema page
        f.write(b"\xde\xad\xbe\xef garbage " * 300)

    assert _listing(fresh_home) == before  # `tunesmith runs` rebuilt it, runs intact
    aside = list(fresh_home.glob("tunesmith.db.corrupt-*"))
    assert len(aside) == 1 and b"garbage" in aside[0].read_bytes()[:4096]  # kept, not deleted
    # And the rebuilt registry takes new runs.
    new = jobs.submit(demo_cfg("output.run_name=gamma"), start=False)
    assert {r.id for r in jobs.list_runs()} == {*ids, new}


def test_deleted_db_is_rebuilt_from_the_folders(fresh_home):
    ids = [_finished_run("one"), _finished_run("two")]
    before = _listing(fresh_home)
    for f in fresh_home.glob("tunesmith.db*"):
        f.unlink()
    after = cli(fresh_home, "runs")
    assert after.returncode == 0 and "no runs yet" not in after.stdout
    assert _listing(fresh_home) == before and set(before) == set(ids)


def test_a_crash_between_folder_and_row_orphans_nothing(fresh_home, monkeypatch):
    def crash(*a, **k):
        raise KeyboardInterrupt  # the process dies right after the folder is complete

    insert = registry.insert
    monkeypatch.setattr(registry, "insert", crash)
    with pytest.raises(KeyboardInterrupt):
        jobs.submit(demo_cfg("output.run_name=interrupted"), start=False)
    monkeypatch.setattr(registry, "insert", insert)
    folders = [p for p in (fresh_home / "runs").iterdir()]
    assert len(folders) == 1 and (folders[0] / "config.yaml").exists() and (folders[0] / "run.json").exists()
    runs = jobs.list_runs()
    assert [(r.id, r.name) for r in runs] == [(folders[0].name, "interrupted")]


def test_doctor_checks_and_repairs(fresh_home, capsys):
    good = _finished_run("fine")
    stale = jobs.submit(demo_cfg("output.run_name=stale"), start=False)
    registry.update(stale, status="running", pid=2**22 + 12345)  # a worker that no longer exists
    (fresh_home / "runs" / ".20260101-000000-dead.abc.tmp").mkdir()  # a folder write cut short
    gone = jobs.submit(demo_cfg("output.run_name=gone"), start=False)
    import shutil

    shutil.rmtree(fresh_home / "runs" / gone)

    assert main(["doctor", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"run {stale} was marked running but its worker is gone" in out
    assert f"run {gone} has a row but its folder" in out and "leftover temporary folder" in out
    assert registry.get(stale).status == "running"  # --check changed nothing

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "repaired" in out
    st = registry.get(stale)
    assert st.status == "failed" and "worker" in st.error
    assert registry.get(gone) is None and not list((fresh_home / "runs").glob(".*.tmp"))
    assert jobs.get_run(good).status == "completed"
    assert main(["doctor"]) == 0 and "registry and folders agree" in capsys.readouterr().out

    # An unreadable db: doctor moves it aside and rebuilds it.
    paths.db_path().write_bytes(b"not a database at all" * 400)
    for side in fresh_home.glob("tunesmith.db-*"):
        side.unlink()
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "unreadable" in out
    assert {r.id for r in registry.all_runs()} == {good, stale}
    assert len(list(fresh_home.glob("tunesmith.db.corrupt-*"))) == 1


def test_sqlite_errors_are_one_line(fresh_home, capsys):
    _finished_run("locked-out")
    db = paths.db_path()
    for side in fresh_home.glob("tunesmith.db-*"):
        side.unlink()
    db.unlink()
    db.mkdir()  # sqlite cannot open a folder: an error that is not damage to repair
    try:
        assert main(["train", str(fresh_home / "nope.yaml")]) == 2  # config errors come first
        capsys.readouterr()
        assert main(["stop", "whatever"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert "tunesmith.db" in err
    finally:
        db.rmdir()


def test_run_names_with_escape_codes_print_as_text(fresh_home, capsys):
    run_id = jobs.submit(demo_cfg("output.run_name=plain"), start=False)
    # A name written before names were checked (or by hand into run.json).
    registry.update(run_id, name="evil\x1b[2J\x1b]0;pwned\x07name")
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07name" in out
    # New names with control characters are refused at the edge.
    with pytest.raises(Exception, match="output.run_name"):
        RunConfig().with_overrides(["output.run_name=bad\x1b[31m"])


def test_a_double_start_creates_one_run(fresh_home):
    cfg = demo_cfg("output.run_name=clicked-twice")
    first = jobs.submit(cfg, start=False, dedupe=True)
    with pytest.raises(jobs.DuplicateSubmit) as e:
        jobs.submit(cfg, start=False, dedupe=True)
    assert e.value.run_id == first and "ignored" in str(e.value)
    assert [r.id for r in jobs.list_runs()] == [first]
    # A different config, or the same one later, is a new run.
    other = jobs.submit(demo_cfg("output.run_name=another"), start=False, dedupe=True)
    assert other != first
    registry.update(first, created_at=time.time() - jobs.DUPLICATE_WINDOW_S - 1)
    assert jobs.submit(cfg, start=False, dedupe=True) not in (first, other)
