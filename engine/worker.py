"""The worker: one OS process per run.

    python -m tunesmith.engine.worker RUN_DIR

Reads RUN_DIR/config.yaml, trains, and writes RUN_DIR/events.jsonl (metrics and
status), RUN_DIR/adapter/ (or model/ for full fine-tuning) and checkpoints/.
Its stdout and stderr go to RUN_DIR/worker.log (the job manager redirects them).
It never touches the database: the job manager reads what it writes.
--resume continues from the newest checkpoint in RUN_DIR/checkpoints (trainable
weights, optimizer, scheduler, RNG and data position), exactly where it stopped.
Stop: the job manager creates RUN_DIR/STOP; the worker finishes its current
optimizer step, writes a checkpoint, saves the adapter trained so far and exits
with status "stopped".

Several processes: engine.launcher starts it under torchrun
(`torchrun --nproc-per-node N -m tunesmith.engine.worker RUN_DIR`); each rank
joins the process group (engine.distributed), trains its share of every step,
and rank 0 alone writes events, checkpoints and the adapter. Rank 0 reads the
STOP file and every rank stops at the same step.
"""

from __future__ import annotations

import logging
import shutil
import sys
import traceback
from pathlib import Path

from . import distributed, diskspace
from .config import RunConfig
from .errors import TunesmithError
from .events import EventWriter, drop_after
from .rundir import CONFIG_FILE, STOP_FILE


def run(run_dir: Path, resume: bool = False) -> int:
    run_dir = Path(run_dir).resolve()
    rank = distributed.from_env()
    # Under torchrun every rank runs this function; rank 0 alone writes the run folder.
    events = EventWriter(run_dir) if rank.is_main else distributed.NullEvents()
    who = f"[rank {rank.rank}] " if rank.world > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {who}%(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    log = logging.getLogger("tunesmith.worker")
    stop_requested = (run_dir / STOP_FILE).exists
    # Room for the failure reason, the traceback and the `failed` event on a disk
    # that training fills to the last byte (freed before they are written).
    if rank.is_main:
        diskspace.reserve(run_dir)
    trackers = None
    try:
        distributed.init()
        cfg = RunConfig.from_yaml(run_dir / CONFIG_FILE)
        from .trainer import Recipe, StopRequested, checkpoint_step, latest_checkpoint

        if resume and rank.is_main:
            ckpt = latest_checkpoint(run_dir)
            if ckpt is not None:
                drop_after(run_dir, checkpoint_step(ckpt))
        events.status("running", "resuming" if resume else "starting")
        from .trackers import open_sink  # [issue 15] training.report_to

        # Rank 0 alone reports (as it alone writes events): one tracker run per training run.
        trackers = open_sink(cfg, run_dir) if rank.is_main else None
        events.add_sink(trackers)
        for name, why in (trackers.failed.items() if trackers else ()):
            events.write("info", message=f"tracker {name} could not start ({why}); training continues without it")

        recipe = Recipe(cfg, run_dir, events, stop_requested)
        try:
            recipe.setup()
            status = recipe.train(resume=resume)
            recipe.save()
        except StopRequested:
            status = "stopped"
        recipe.cleanup()
        if trackers is not None:
            trackers.close(status)
        msg = "finished" if status == "completed" else ("stopped by the user; the adapter trained so far is saved "
                                                         "(resume continues from the checkpoint written at Stop)")
        if status == "stopped" and not ((run_dir / "adapter").exists() or (run_dir / "model").exists()):
            msg = "stopped by the user before training began"
        events.status(status, msg)
        log.info("run %s", status)
        return 0
    except TunesmithError as e:
        _close_failed(trackers)
        _release(run_dir, rank)
        if rank.is_main:
            _drop_incomplete_checkpoints(run_dir)
        log.error("%s", e)
        _record_failure(events, str(e))
        return 1
    except BaseException as e:  # noqa: BLE001 - the worker must always record why it died
        _close_failed(trackers)
        _release(run_dir, rank)
        if rank.is_main:
            _drop_incomplete_checkpoints(run_dir)  # also gives their space back to the failure report
        traceback.print_exc()
        reason = diskspace.disk_full_reason(e, run_dir, needed_bytes=_newest_checkpoint_bytes(run_dir))
        if reason:
            log.error("%s", reason)
        msg = f"{type(e).__name__}: {e}"
        if rank.world > 1 and distributed.peer_lost(e):
            msg = f"another training process died or stopped answering (worker.log says which rank): {msg}"
        _record_failure(events, reason or msg)
        return 1
    finally:
        _release(run_dir, rank)
        distributed.shutdown()


def _close_failed(trackers) -> None:
    """Trackers show a failed run as failed (MLflow would mark it finished at exit)."""
    if trackers is not None:
        trackers.close("failed")


def _release(run_dir: Path, rank: distributed.RankContext) -> None:
    if rank.is_main:
        diskspace.release(run_dir)


def _record_failure(events: EventWriter, message: str) -> None:
    try:
        events.status("failed", message)
    except OSError as e:  # still no room: worker.log (stderr) keeps the reason; the job manager reads its tail
        print(f"could not write the failed event ({e}): {message}", file=sys.stderr, flush=True)


def _drop_incomplete_checkpoints(run_dir: Path) -> None:
    """A checkpoint folder newer than the newest complete one was cut off mid-write: it must not
    stay under its final name, where a resume or a person would take it for a checkpoint."""
    try:
        from .trainer import checkpoint_step, latest_checkpoint

        newest = latest_checkpoint(run_dir)
        floor = checkpoint_step(newest) if newest is not None else -1
        for d in (run_dir / "checkpoints").glob("checkpoint-*"):
            if d.is_dir() and checkpoint_step(d) > floor:
                shutil.rmtree(d, ignore_errors=True)
    except Exception as e:  # noqa: BLE001 - never hide the failure being reported
        print(f"could not check the checkpoints: {e}", file=sys.stderr, flush=True)


def _newest_checkpoint_bytes(run_dir: Path) -> int | None:
    """What one more checkpoint needs, judged by the newest complete one (None before the first)."""
    ckpts = sorted((p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime)
    if not ckpts:
        return None
    return sum(f.stat().st_size for f in ckpts[-1].rglob("*") if f.is_file()) or None


def main() -> None:
    args = sys.argv[1:]
    resume = "--resume" in args
    args = [a for a in args if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m tunesmith.engine.worker RUN_DIR [--resume]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(Path(args[0]), resume=resume))


if __name__ == "__main__":
    main()
