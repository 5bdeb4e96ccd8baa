"""The job manager: runs survive their watcher, stop gracefully, and record failures."""

from __future__ import annotations

import json
import time

import pytest

from timing import slow_timeout
from tunesmith.cli.main import main
from tunesmith.engine import events, jobs
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig

pytestmark = pytest.mark.slow


def _demo_cfg(*extra: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + list(extra))


def test_stop_is_graceful_and_keeps_the_adapter(tunesmith_home):
    run_id = jobs.submit(_demo_cfg("training.max_steps=400", "training.save_steps=1000", "output.run_name=to-stop"))
    t0 = time.time()
    while jobs.get_run(run_id).step < 2:
        assert time.time() - t0 < slow_timeout(60), jobs.get_run(run_id)
        time.sleep(0.3)
    info = jobs.stop(run_id)
    assert info.status in ("stopping", "stopped")
    info = jobs.wait(run_id, timeout=slow_timeout(40))
    assert info.status == "stopped"
    assert info.has_adapter  # saved although no checkpoint step was reached
    assert 2 <= info.step < 400
    st = events.last_status(events.read_events(info.run_dir))
    assert "adapter trained so far is saved" in st["message"]


def test_failure_is_recorded_with_the_log_tail(tunesmith_home, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_id = jobs.submit(RunConfig().with_overrides(["model.name_or_path=nobody/no-such-model-xyz", "output.run_name=doomed"]))
    info = jobs.wait(run_id, timeout=slow_timeout(60))
    assert info.status == "failed"
    assert "no-such-model-xyz" in info.error
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert "doomed" in out and "failed" in out and "no-such-model-xyz" in out
    # A run without an adapter cannot be exported, in any format, and says why.
    for fmt in ("adapter", "merged", "gguf"):
        assert main(["export", "doomed", "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert "no" in err and "adapter" in err and "Traceback" not in err, err
    assert not any((tunesmith_home / "exports" / run_id).glob("*/*"))


def test_state_is_rebuilt_from_disk_not_memory(tunesmith_home):
    """A second process (a restarted studio) sees the same runs and their metrics."""
    import subprocess
    import sys

    run_id = jobs.submit(_demo_cfg("training.max_steps=3", "output.run_name=rebuild"))
    jobs.wait(run_id, timeout=slow_timeout(60))
    jobs._children.clear()  # forget everything this process knew
    code = (
        "from tunesmith.engine import jobs; r = jobs.get_run(%r); "
        "print(r.status, r.step, r.last_loss is not None)" % run_id
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(tunesmith_home))
    assert p.stdout.split() == ["completed", "3", "True"], p.stderr


def test_cli_train_runs_and_chat(tunesmith_home, tmp_path, capsys):
    cfg = _demo_cfg("training.max_steps=4", "output.run_name=cli-run")
    f = tmp_path / "run.yaml"
    f.write_text(cfg.to_yaml())  # exactly what the studio's Show YAML prints
    assert main(["train", str(f), "--set", "training.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "completed" in out
    assert main(["runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    run = next(r for r in runs if r["name"] == "cli-run")
    assert run["status"] == "completed" and run["step"] == 3 and run["last_loss"] > 0
    assert main(["chat", "cli-run", "-m", "Hello"]) == 0
    assert capsys.readouterr().out.strip()


def test_validation_split_gives_eval_loss(tunesmith_home):
    run_id = jobs.submit(_demo_cfg("training.max_steps=4", "training.eval_steps=2", "data.val_size=0.1",
                                   "output.run_name=with-eval"))
    info = jobs.wait(run_id, timeout=slow_timeout(60))
    assert info.status == "completed", info.error
    evals = [e for e in events.read_events(info.run_dir) if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4] and all(e["eval_loss"] > 0 for e in evals)


def test_stopped_run_resumes_from_its_checkpoint(tunesmith_home, capsys):
    run_id = jobs.submit(_demo_cfg("training.max_steps=12", "training.save_steps=3", "output.run_name=resumable"))
    t0 = time.time()
    while jobs.get_run(run_id).step < 5:
        assert time.time() - t0 < slow_timeout(60), jobs.get_run(run_id)
        time.sleep(0.2)
    jobs.stop(run_id)
    stopped = jobs.wait(run_id, timeout=slow_timeout(40))
    assert stopped.status == "stopped" and stopped.step < 12

    assert main(["resume", "resumable"]) == 0
    info = jobs.get_run(run_id)
    assert info.status == "completed" and info.step == 12 and info.has_adapter
    steps = [e["step"] for e in events.read_events(info.run_dir) if e["type"] == "train"]
    assert steps == list(range(1, 13)), steps  # the chart has one point a step, none twice
    assert main(["resume", "resumable"]) == 2
    assert "already completed" in capsys.readouterr().err
