"""events.jsonl: the worker's metrics and status stream, one JSON object a line.

The worker appends; the studio, the CLI and the job manager read. A reader may
see a half-written last line while the worker is writing it; it is skipped and
read on the next poll.

Event kinds (key "type"):
  train   step, max_steps, loss, lr, grad_norm, epoch, tokens_per_s, tokens_seen, peak_mem_gb,
          (on GPUs) peak_reserved_gb, elapsed_s, eta_s, and the objective's metrics (sft: token_accuracy,
          trained_tokens of the logging window)
  eval    step, eval_loss (+ eval_<metric> of the objective)
  status  status (running|completed|stopped|failed), message
  info    message (what the run decided, e.g. which kernels were applied and why)
  samples step, samples (grpo: recent completions with prompt, answer, reward and per-function scores)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

EVENTS_FILE = "events.jsonl"


class EventWriter:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        # Subscribers get every event after it is on disk (e.g. engine.trackers' TrackerSink).
        self.sinks: list[Callable[[dict[str, Any]], None]] = []

    def add_sink(self, sink: Callable[[dict[str, Any]], None] | None) -> None:
        if sink is not None:
            self.sinks.append(sink)

    def write(self, type_: str, **fields: Any) -> None:
        rec = {"type": type_, "time": round(time.time(), 3), **fields}
        line = json.dumps(rec, ensure_ascii=False, default=_jsonable) + "\n"
        # One write() of a whole line in append mode: readers never see two events interleaved.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        for sink in self.sinks:
            sink(rec)

    def status(self, status: str, message: str = "", **extra: Any) -> None:
        self.write("status", status=status, message=message, **extra)


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except Exception:
        return str(x)


def read_events(run_dir: Path | str) -> list[dict[str, Any]]:
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # being written right now
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def drop_after(run_dir: Path | str, step: int) -> None:
    """Forget train/eval points after `step` (a run resumed from the checkpoint at `step`
    redoes those steps). Only the worker calls this, before it writes anything new."""
    from .atomic import write_text

    kept = [ev for ev in read_events(run_dir) if ev.get("type") not in ("train", "eval") or ev.get("step", 0) <= step]
    write_text(Path(run_dir) / EVENTS_FILE, "".join(json.dumps(ev, ensure_ascii=False) + "\n" for ev in kept))


def last_status(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for ev in reversed(events):
        if ev.get("type") == "status":
            return ev
    return None


def last_train(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for ev in reversed(events):
        if ev.get("type") == "train":
            return ev
    return None
