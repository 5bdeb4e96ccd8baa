"""A disk that fills up during training and during export, on a real (tmpfs) filesystem:
the reason reaches the registry, events.jsonl, worker.log and the CLI; nothing half-written
stays under a final name; reading commands keep working while the disk is full."""

from __future__ import annotations

import json
import os

import pytest
from faultkit import cli, demo_cfg

from tunesmith.engine import events, jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def disk_home(small_disk):
    """TUNESMITH_HOME on the small disk, with one finished run to export."""
    home = small_disk.root / "home"
    old = os.environ.get("TUNESMITH_HOME")
    os.environ["TUNESMITH_HOME"] = str(home)
    try:
        run_id = jobs.submit(demo_cfg("training.max_steps=2", "output.run_name=on-small-disk"))
        info = jobs.wait(run_id, timeout=300)
        assert info.status == "completed", info.error
        yield home, small_disk, info
    finally:
        small_disk.unfill()
        if old is None:
            os.environ.pop("TUNESMITH_HOME", None)
        else:
            os.environ["TUNESMITH_HOME"] = old


def _final_names_complete(folder) -> None:
    """No temporary or partial file is left, and every checkpoint under its final name is whole."""
    leftovers = [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not leftovers, leftovers
    for ckpt in (folder / "checkpoints").glob("checkpoint-*"):
        assert (ckpt / "trainer_state.json").exists(), f"{ckpt} is incomplete"


def test_disk_full_during_training(disk_home):
    home, disk, _ = disk_home
    # Room to start (config, events, log) but not for the first checkpoint (about 2 MB).
    disk.fill(leave=1_500_000)
    try:
        run_id = jobs.submit(demo_cfg("training.max_steps=8", "training.save_steps=3", "output.run_name=fills-disk"))
        info = jobs.wait(run_id, timeout=300)
        assert info.status == "failed"
        first = info.error.splitlines()[0]
        assert "No space left on device" in first and str(info.run_dir) in first, info.error

        evs = events.read_events(info.run_dir)
        st = events.last_status(evs)
        assert st["status"] == "failed" and "No space left on device" in st["message"]
        assert any(e["type"] == "train" for e in evs)  # it failed while training, not before

        log = (info.run_dir / "worker.log").read_bytes()
        # the whole story reaches the log on the full disk (it used to stop at its first 4 KiB block)
        assert b"Traceback" in log and log.rstrip().endswith(b"Free some disk space, then try again.")
        _final_names_complete(info.run_dir)

        # Reading works on the full disk, in a fresh process.
        p = cli(home, "runs")
        assert p.returncode == 0, p.stderr
        assert f"{run_id} failed: No space left on device" in p.stdout
        listed = json.loads(cli(home, "runs", "--json").stdout)
        assert {r["id"]: r["status"] for r in listed}[run_id] == "failed"

        from tunesmith.studio.runs_tab import run_error

        assert "No space left on device" in run_error(run_id)["value"]
    finally:
        disk.unfill()


@pytest.mark.parametrize("fmt", ["adapter", "merged"])
def test_disk_full_during_export(disk_home, fmt):
    home, disk, run = disk_home
    out = home / f"export-{fmt}"
    disk.fill(leave=300_000)  # the adapter is about 0.9 MB, the merged model more
    try:
        p = cli(home, "export", run.id, "--format", fmt, "--out", str(out))
        assert p.returncode == 2, p.stderr
        err = p.stderr.strip().splitlines()[-1]
        assert err.startswith("error: No space left on device") and "Traceback" not in p.stderr, p.stderr
        assert not out.exists() or not any(out.iterdir())  # nothing under the final name
        assert not [q for q in home.rglob("*") if q.name.endswith(".tmp")]
    finally:
        disk.unfill()
    p = cli(home, "export", run.id, "--format", fmt, "--out", str(out))  # with room again, it works
    assert p.returncode == 0, p.stderr


def test_a_disk_with_no_byte_left(disk_home, tmp_path):
    """Listing still works (the registry is read without its WAL side files); starting a run
    says why it cannot, in one line, and leaves no folder."""
    home, disk, run = disk_home
    for side in home.glob("tunesmith.db-*"):  # as after the last connection closed
        side.unlink()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(demo_cfg("training.max_steps=2").to_yaml())
    before = sorted(p.name for p in (home / "runs").iterdir())
    disk.fill(leave=0)
    try:
        p = cli(home, "runs")
        assert p.returncode == 0 and run.id in p.stdout, p.stderr
        p = cli(home, "train", str(cfg))
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines()[-1].startswith("error: Cannot create the run: No space left on device")
        assert sorted(p.name for p in (home / "runs").iterdir()) == before
    finally:
        disk.unfill()
