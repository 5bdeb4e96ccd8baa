"""Experiment trackers: the run's train/eval metrics also go to TensorBoard, W&B, MLflow, Trackio or SwanLab.

    sink = open_sink(cfg, run_dir)   # None when training.report_to is empty
    events.add_sink(sink)            # EventWriter hands it every train/eval event
    ...
    sink.close()

Chosen with `training.report_to` (several allowed). events.jsonl stays the
record the studio reads; trackers are copies for people's own dashboards.
Each tracker is a small object with log(metrics, step) and close():

    tensorboard  RUN_DIR/tensorboard/ (torch.utils.tensorboard, else tensorboardX);
                 view with: tensorboard --logdir RUN_DIR/tensorboard
    wandb        wandb.init(project=$WANDB_PROJECT or "tunesmith", dir=RUN_DIR); WANDB_MODE=offline works
    mlflow       $MLFLOW_TRACKING_URI, else RUN_DIR/mlflow.db (MLflow's local SQLite store; `mlflow ui
                 --backend-store-uri sqlite:///RUN_DIR/mlflow.db` shows it); mlflow-skinny plus
                 sqlalchemy and alembic is enough
    trackio      trackio.init(project=$TRACKIO_PROJECT or "tunesmith"); local by default
    swanlab      swanlab.init(project=$SWANLAB_PROJECT or "tunesmith", logdir=RUN_DIR/swanlog); SWANLAB_MODE=offline works

Packages are imported only when chosen; a missing one is a ConfigError naming
the pip package. A tracker that fails while logging (its server went away) is
logged once and dropped: a dashboard never kills a training run.

What it does not know: credentials. wandb/swanlab read their own login or
environment variables (WANDB_API_KEY, SWANLAB_API_KEY); nothing is stored here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

# report_to name -> (module to import, pip package that provides it)
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow-skinny"),  # the tracking client alone; `mlflow` (UI, server) is ~10x bigger
    "trackio": ("trackio", "trackio"),
    "swanlab": ("swanlab", "swanlab"),
}
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"  # with no MLFLOW_TRACKING_URI: RUN_DIR/mlflow.db, artifacts in RUN_DIR/mlartifacts
MLFLOW_ARTIFACTS = "mlartifacts"


class Tracker(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self, status: str = "completed") -> None: ...  # completed, stopped or failed


def tensorboard_logs(run_dir: Path | str) -> list[Path]:
    """The TensorBoard event files a run kept (training.report_to with tensorboard), oldest first."""
    logdir = Path(run_dir) / TENSORBOARD_DIR
    return sorted(logdir.rglob("events.out.tfevents.*")) if logdir.is_dir() else []


def tensorboard_command(run_dir: Path | str) -> str:
    """The line that shows a run's TensorBoard logs (run it on the machine that holds the run folder)."""
    import shlex

    return f"tensorboard --logdir {shlex.quote(str(Path(run_dir) / TENSORBOARD_DIR))}"  # it listens on localhost only


def mlflow_local_uri(run_dir: Path | str) -> str:
    """The MLflow tracking URI of a run's own store (no MLFLOW_TRACKING_URI set): a SQLite file in it."""
    return "sqlite:///" + (Path(run_dir).resolve() / MLFLOW_DB).as_posix()


def check_available(names: list[str]) -> None:
    """ConfigError naming the pip package of the first chosen tracker that is not installed."""
    for name in names:
        if name == "none":
            continue
        if name not in PACKAGES:
            raise ConfigError(f"training.report_to: unknown tracker {name!r}; use {', '.join(PACKAGES)} or none.")
        module, pip = PACKAGES[name]
        found = importlib.util.find_spec(module) is not None
        if name == "tensorboard":  # tensorboardX writes the same event files without TensorFlow's tensorboard
            found = found or importlib.util.find_spec("tensorboardX") is not None
        if not found:
            raise ConfigError(f"training.report_to: {name} is not installed. Install it with: pip install {pip}")
        if name == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
            # the run folder's SQLite store needs SQLAlchemy and Alembic, which mlflow-skinny leaves out
            missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
            if missing:
                raise ConfigError(f"training.report_to: mlflow keeps its runs in a SQLite file in the run folder, "
                                  f"which needs {' and '.join(missing)}. Install it with: pip install {' '.join(missing)} "
                                  "(or set MLFLOW_TRACKING_URI to an MLflow server)")


def _flat_config(cfg: RunConfig) -> dict[str, Any]:
    """config as {"lora.r": 16, ...}: the hyperparameter tables trackers show."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node if isinstance(node, (int, float, str, bool)) or node is None else str(node)

    walk("", cfg.model_dump(mode="json"))
    return out


def _run_name(cfg: RunConfig, run_dir: Path) -> str:
    return cfg.output.run_name or Path(run_dir).name


class TensorBoardTracker:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package; tensorboardX does not
            from tensorboardX import SummaryWriter
        self.logdir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.logdir))
        self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "\n```", 0)

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()  # the studio and `tensorboard --logdir` see points while the run goes

    def close(self, status: str = "completed") -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "tunesmith"), name=_run_name(cfg, run_dir),
                              dir=str(run_dir), config=_flat_config(cfg), resume="allow", id=Path(run_dir).name)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self, status: str = "completed") -> None:
        self.run.finish(exit_code=1 if status == "failed" else 0)


class MlflowTracker:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        import mlflow

        self.mlflow = mlflow
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "tunesmith")
        if os.environ.get("MLFLOW_TRACKING_URI"):
            mlflow.set_experiment(experiment)
        else:
            # A SQLite file in the run folder: MLflow's own local backend since 3.x (its ./mlruns file
            # store now refuses to start unless MLFLOW_ALLOW_FILE_STORE=true, and is frozen). Artifacts,
            # were any logged, stay in the run folder too instead of the worker's working directory.
            local = Path(run_dir).resolve()
            mlflow.set_tracking_uri(mlflow_local_uri(local))
            client = mlflow.MlflowClient()
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(
                experiment, artifact_location=(local / MLFLOW_ARTIFACTS).as_uri())
            mlflow.set_experiment(experiment_id=exp_id)
        self.run = mlflow.start_run(run_name=_run_name(cfg, run_dir))
        # MLflow caps a param value at 6000 characters; ours are short scalars
        mlflow.log_params({k: v for k, v in _flat_config(cfg).items() if v is not None})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step, run_id=self.run.info.run_id)

    def close(self, status: str = "completed") -> None:
        # without this MLflow's exit hook would mark a failed run FINISHED
        self.mlflow.end_run(status={"failed": "FAILED", "stopped": "KILLED"}.get(status, "FINISHED"))


class TrackioTracker:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        import trackio

        self.trackio = trackio
        trackio.init(project=os.environ.get("TRACKIO_PROJECT", "tunesmith"), name=_run_name(cfg, run_dir),
                     config=_flat_config(cfg))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.trackio.log(metrics, step=step)

    def close(self, status: str = "completed") -> None:
        self.trackio.finish()  # Trackio keeps no run status


class SwanlabTracker:
    def __init__(self, cfg: RunConfig, run_dir: Path):
        import swanlab

        self.swanlab = swanlab
        swanlab.init(project=os.environ.get("SWANLAB_PROJECT", "tunesmith"), experiment_name=_run_name(cfg, run_dir),
                     config=_flat_config(cfg), logdir=str(Path(run_dir) / "swanlog"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.swanlab.log(metrics, step=step)

    def close(self, status: str = "completed") -> None:
        self.swanlab.finish(state={"failed": "crashed", "stopped": "aborted"}.get(status, "success"))


TRACKERS: dict[str, type] = {
    "tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker,
    "trackio": TrackioTracker, "swanlab": SwanlabTracker,
}

# events.jsonl field -> tracker metric name (train/ and eval/ groups, as the HF Trainer names them)
_TRAIN_FIELDS = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm",
                 "epoch": "train/epoch", "tokens_per_s": "train/tokens_per_s", "peak_mem_gb": "train/peak_mem_gb"}


def event_metrics(event: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of one train/eval event, under tracker names; {} for other events."""
    kind = event.get("type")
    if kind == "train":
        pairs = [(name, event.get(key)) for key, name in _TRAIN_FIELDS.items()]
    elif kind == "eval":
        # objective-specific eval metrics (eval_accuracy, ...) go along under eval/
        pairs = [(f"eval/{k.removeprefix('eval_')}", v) for k, v in event.items() if k.startswith("eval_")]
    else:
        return {}
    return {k: float(v) for k, v in pairs if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TrackerSink:
    """An EventWriter subscriber: forwards train/eval events to every open tracker."""

    def __init__(self, trackers: dict[str, Tracker], failed: dict[str, str] | None = None):
        self.trackers = trackers
        self.failed = failed or {}  # name -> why it could not start

    def __call__(self, event: dict[str, Any]) -> None:
        metrics = event_metrics(event)
        if not metrics or "step" not in event:
            return
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.log(metrics, int(event["step"]))
            except Exception as e:  # noqa: BLE001 - see the module docstring
                log.warning("tracker %s failed (%s: %s); it gets no more metrics for this run", name, type(e).__name__, e)
                self.trackers.pop(name, None)

    def close(self, status: str = "completed") -> None:
        """End every tracker's run as `status` (completed, stopped or failed), where the tracker keeps one."""
        for name, tracker in self.trackers.items():
            try:
                tracker.close(status)
            except Exception as e:  # noqa: BLE001
                log.warning("tracker %s did not close cleanly: %s", name, e)
        self.trackers = {}


def open_sink(cfg: RunConfig, run_dir: Path | str) -> TrackerSink | None:
    """Open the trackers cfg.training.report_to names; None when there are none."""
    names = [n for n in dict.fromkeys(cfg.training.report_to) if n != "none"]
    if not names:
        return None
    check_available(names)
    opened: dict[str, Tracker] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            opened[name] = TRACKERS[name](cfg, Path(run_dir))
        except Exception as e:  # noqa: BLE001 - a tracker that cannot start is reported, the run goes on
            failed[name] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            log.warning("tracker %s could not start (%s); training continues without it", name, failed[name])
    log.info("trackers: %s", ", ".join(opened) or "none could start")
    return TrackerSink(opened, failed)
