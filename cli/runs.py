"""`tunesmith runs` and `tunesmith stop`: list and control runs."""

from __future__ import annotations

import argparse
import json
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs (id, name, status, model, dataset, steps, last loss)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_list)
    s = sub.add_parser("stop", help="stop a run gracefully (keeps the adapter trained so far)")
    s.add_argument("run_id")
    s.set_defaults(func=run_stop)
    r = sub.add_parser("resume", help="continue a stopped or failed run from its newest checkpoint")
    r.add_argument("run_id")
    r.add_argument("--detach", action="store_true", help="resume it and return at once")
    r.set_defaults(func=run_resume)


def _fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def failure_summary(error: str) -> str:
    """The reason a run failed: the first line of its error (the worker's or the job manager's
    own words), not the metric lines that happen to end worker.log."""
    for line in error.strip().splitlines():
        if line.strip() and not line.startswith("---"):
            return line.strip()
    return ""


def run_list(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs
    from tunesmith.engine.text import printable

    runs = jobs.list_runs()
    if args.json:
        print(json.dumps([{
            "id": r.id, "name": r.name, "status": r.status, "model": r.model, "datasets": r.datasets,
            "method": r.method, "step": r.step, "max_steps": r.max_steps, "last_loss": r.last_loss,
            "created_at": r.created_at, "run_dir": str(r.run_dir), "error": r.error,
        } for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs yet: start one with `tunesmith train CONFIG.yaml` or in the studio")
        return 0
    rows = [("ID", "NAME", "STATUS", "MODEL", "DATASET", "STEPS", "LAST LOSS", "CREATED")]
    for r in runs:
        steps = f"{r.step}/{r.max_steps}" if r.max_steps else str(r.step)
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        rows.append(tuple(printable(c) for c in (r.id, r.name, r.status, r.model, ",".join(r.datasets), steps,
                                                  _fmt_loss(r.last_loss), created)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    for r in runs:
        if r.status == "failed" and r.error:
            print(f"\n{r.id} failed: {printable(failure_summary(r.error))}")
            print(f"    worker log: {printable(r.run_dir / jobs.LOG_FILE)}")
    return 0


def run_stop(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs

    info = jobs.stop(jobs.find_run(args.run_id).id)
    print(f"run {info.id}: {info.status}")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs
    from tunesmith.engine.text import printable

    from .train import follow

    info = jobs.resume(jobs.find_run(args.run_id).id)
    print(f"run {info.id} ({printable(info.name)}) resumed")
    return 0 if args.detach else follow(info.id)
