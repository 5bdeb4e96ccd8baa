"""training.report_to: trackers get the run's train/eval events (engine.trackers via EventWriter sinks)."""

from __future__ import annotations

import importlib.util

import pytest

from tunesmith.engine import trackers
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.engine.events import EventWriter, read_events


def test_tensorboard_event_files_are_written_and_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = RunConfig().with_overrides(["training.report_to=[tensorboard]"])
    sink = trackers.open_sink(cfg, tmp_path)
    events = EventWriter(tmp_path)
    events.add_sink(sink)
    events.status("running", "training")
    for step, loss in ((1, 2.5), (2, 2.0), (3, 1.5)):
        events.write("train", step=step, loss=loss, lr=1e-4, grad_norm=0.5, tokens_per_s=None)
    events.write("eval", step=3, eval_loss=1.75)
    sink.close()
    assert len(read_events(tmp_path)) == 5  # events.jsonl is unchanged by the sink
    acc = EventAccumulator(str(tmp_path / trackers.TENSORBOARD_DIR))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert [(s.step, s.value) for s in acc.Scalars("eval/loss")] == [(3, 1.75)]
    assert "train/tokens_per_s" not in acc.Tags()["scalars"]  # None values are not invented as 0


def test_report_to_parses_lists_and_none():
    assert RunConfig().training.report_to == []
    assert RunConfig().with_overrides(["training.report_to=none"]).training.report_to == []
    assert RunConfig().with_overrides(["training.report_to=tensorboard,wandb"]).training.report_to == ["tensorboard", "wandb"]
    with pytest.raises(ConfigError, match="training.report_to"):
        RunConfig().with_overrides(["training.report_to=[neptune]"])
    assert trackers.open_sink(RunConfig(), "/nonexistent") is None


@pytest.mark.parametrize("name", ["wandb", "mlflow", "trackio", "swanlab"])
def test_missing_tracker_package_is_named(name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ConfigError, match=f"pip install {trackers.PACKAGES[name][1]}$"):
        trackers.check_available([name])


def test_mlflow_without_its_local_store_packages_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "mlflow" else
                        (None if n == "alembic" else real(n, *a)))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="needs alembic. Install it with: pip install alembic"):
        trackers.check_available(["mlflow"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")  # a server keeps the runs instead
    trackers.check_available(["mlflow"])


def test_a_failed_training_run_ends_failed_in_mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = RunConfig().with_overrides(["training.report_to=[mlflow]", "output.run_name=broken"])
    sink = trackers.open_sink(cfg, tmp_path)
    run_id = sink.trackers["mlflow"].run.info.run_id
    sink({"type": "train", "step": 1, "loss": 3.0})
    sink.close("failed")  # what the worker does when training raises
    sink.close("failed")  # a second close (a failure after the normal close) changes nothing
    got = mlflow.MlflowClient(tracking_uri=trackers.mlflow_local_uri(tmp_path)).get_run(run_id)
    assert got.info.status == "FAILED" and got.data.metrics["train/loss"] == 3.0
    assert (tmp_path / trackers.MLFLOW_DB).is_file()


def test_a_failing_tracker_is_dropped_not_fatal(tmp_path, caplog):
    class Broken:
        def log(self, metrics, step):
            raise ConnectionError("server went away")

        def close(self, status="completed"):
            pass

    seen = []

    class Good:
        def log(self, metrics, step):
            seen.append((step, metrics))

        def close(self, status="completed"):
            pass

    sink = trackers.TrackerSink({"broken": Broken(), "good": Good()})
    events = EventWriter(tmp_path)
    events.add_sink(sink)
    events.write("train", step=1, loss=1.0)
    events.write("train", step=2, loss=0.5)
    assert [s for s, _ in seen] == [1, 2] and "broken" not in sink.trackers
    assert "tracker broken failed" in caplog.text


def test_the_runs_tab_offers_the_tensorboard_logs(fresh_home):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunesmith.engine import jobs
    from tunesmith.studio import runs_tab

    plain = jobs.submit(RunConfig().with_overrides(["output.run_name=no-tb"]), start=False)
    assert not runs_tab.tensorboard_hint(plain)["visible"]
    assert not any("tfevents" in p.name for p in runs_tab.run_files(plain))

    cfg = RunConfig().with_overrides(["training.report_to=[tensorboard]", "output.run_name=with-tb"])
    run = jobs.get_run(jobs.submit(cfg, start=False))
    sink = trackers.open_sink(cfg, run.run_dir)  # what the worker does
    events = EventWriter(run.run_dir)
    events.add_sink(sink)
    events.write("train", step=1, loss=2.5)
    sink.close()
    logs = [p for p in runs_tab.run_files(run.id) if p.name.startswith("events.out.tfevents.")]
    assert len(logs) == 1
    acc = EventAccumulator(str(logs[0]))  # the downloaded file is readable on its own
    acc.Reload()
    assert [s.value for s in acc.Scalars("train/loss")] == [2.5]
    hint = runs_tab.tensorboard_hint(run.id)
    assert hint["visible"] and f"tensorboard --logdir {run.run_dir / 'tensorboard'}" in hint["value"]


_OFFLINE_RUN = """
import json, sys
from pathlib import Path
from tunesmith.engine import trackers
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter

run_dir = Path(sys.argv[1])
cfg = RunConfig().with_overrides(["training.report_to=[wandb,trackio]", "output.run_name=offline"])
sink = trackers.open_sink(cfg, run_dir)
events = EventWriter(run_dir)
events.add_sink(sink)
for step, loss in ((1, 2.5), (2, 2.0)):
    events.write("train", step=step, loss=loss, lr=1e-4)
events.write("eval", step=2, eval_loss=1.75)
events.write("train", step=3, loss=1.5, lr=1e-4)  # W&B commits a step's row when the next step begins
summary = dict(sink.trackers["wandb"].run.summary)
sink.close()
from trackio import SQLiteStorage

logs = SQLiteStorage.get_logs("tunesmith", "offline")
print(json.dumps({"wandb": {k: summary[k] for k in ("train/loss", "eval/loss")},
                  "trackio": [{k: v for k, v in r.items() if "/" in k or k == "step"} for r in logs]}))
"""


@pytest.mark.slow
def test_wandb_and_trackio_log_offline(tmp_path):
    """Both trackers' real calls, with no network: W&B in its offline mode (a run folder to `wandb sync`
    later), Trackio in its local database."""
    import json
    import os
    import subprocess
    import sys

    for name in ("wandb", "trackio"):
        pytest.importorskip(name)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", TRACKIO_DIR=str(tmp_path / "trackio"),
               HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", _OFFLINE_RUN, str(run_dir)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    seen = json.loads(res.stdout.strip().splitlines()[-1])
    assert seen["wandb"] == {"train/loss": 2.0, "eval/loss": 1.75}  # step 2: train and eval in one row
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # what `wandb sync` uploads later
    assert seen["trackio"] == [{"train/loss": 2.5, "train/learning_rate": 1e-4, "step": 1},
                               {"train/loss": 2.0, "train/learning_rate": 1e-4, "step": 2},
                               {"eval/loss": 1.75, "step": 2},
                               {"train/loss": 1.5, "train/learning_rate": 1e-4, "step": 3}]
    assert (tmp_path / "trackio" / "tunesmith.db").exists()


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)


@pytest.mark.slow
def test_mlflow_and_swanlab_get_a_training_runs_metrics(tunesmith_home, monkeypatch):
    """A real (tiny) training run with report_to [mlflow, swanlab], no network: MLflow in the run folder's
    SQLite store, SwanLab in its offline mode (a run file `swanlab sync` uploads later). Each one's own
    reader gives back the losses events.jsonl holds."""
    pytest.importorskip("mlflow")
    pytest.importorskip("swanlab")
    from tunesmith.engine import jobs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SWANLAB_MODE", "offline")  # the worker inherits it
    cfg = RunConfig().with_overrides([
        "data.datasets=[identity]", "data.max_samples=8", "data.cutoff_len=96", "training.max_steps=3",
        "training.batch_size=2", "training.gradient_accumulation=1", "training.gradient_checkpointing=false",
        "data.val_size=0.25", "training.eval_steps=3", "training.report_to=[mlflow,swanlab]",
        "output.run_name=trackers"])
    run = jobs.wait(jobs.submit(cfg), timeout=900)
    assert run.status == "completed", run.error
    events = read_events(run.run_dir)
    assert not [e for e in events if "could not start" in str(e.get("message", ""))]
    losses = [(e["step"], e["loss"]) for e in events if e.get("type") == "train" and "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("type") == "eval"]
    assert len(losses) == 3 and evals

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=trackers.mlflow_local_uri(run.run_dir))
    (exp,) = [e for e in client.search_experiments() if e.name == "tunesmith"]
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.run_name == "trackers" and mrun.info.status == "FINISHED"
    assert mrun.data.params["training.max_steps"] == "3"
    _same([(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, "train/loss")], losses)
    _same([(m.step, m.value) for m in client.get_metric_history(mrun.info.run_id, "eval/loss")], evals)
    assert not (run.run_dir / "mlruns").exists() and not list(run.run_dir.parent.glob("mlruns"))

    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader  # what `swanlab sync` reads

    (log_file,) = (run.run_dir / "swanlog").glob("run-*/run-*.swanlab")
    reader = DataStoreReader()
    reader.open(log_file)
    records = [Record.FromString(b) for b in reader]
    reader.close()
    scalars = [r.scalar for r in records if r.WhichOneof("record_type") == "scalar"]
    _same([(s.step, s.value.number) for s in scalars if s.key == "train/loss"], losses)
    _same([(s.step, s.value.number) for s in scalars if s.key == "eval/loss"], evals)
    assert records[0].start.project == "tunesmith" and records[0].start.name == "trackers"
    assert records[-1].WhichOneof("record_type") == "finish"
