"""`tunesmith queue`: see, reorder and cancel runs waiting for their GPUs."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  tunesmith queue                      # waiting runs in the order they will start, and what runs now
  tunesmith queue top RUN_ID           # start it next (also: up, down, bottom)
  tunesmith queue move RUN_ID 3        # to place 3
  tunesmith queue cancel RUN_ID        # take it out of the queue
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="show, reorder and cancel queued runs", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=show)
    qs = p.add_subparsers(dest="queue_command", metavar="ACTION")
    for where in ("top", "up", "down", "bottom"):
        m = qs.add_parser(where, help=f"move a queued run {where if where in ('up', 'down') else 'to the ' + where}")
        m.add_argument("run_id")
        m.set_defaults(func=move, where=where)
    m = qs.add_parser("move", help="move a queued run to a place (1 = next)")
    m.add_argument("run_id")
    m.add_argument("place", type=int)
    m.set_defaults(func=move, where=None)
    c = qs.add_parser("cancel", help="take a queued run out of the queue")
    c.add_argument("run_id")
    c.set_defaults(func=cancel)


def show(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs, scheduler

    pos = scheduler.positions()
    runs = [r for r in jobs.list_runs() if r.status in ("queued", "running", "stopping")]
    lease = scheduler.holder()
    if args.json:
        print(json.dumps({
            "scheduler": None if lease is None else {"pid": lease.pid, "host": lease.host},
            "runs": [{"id": r.id, "name": r.name, "status": r.status, "position": pos.get(r.id),
                      "gpus": _gpus(r.id)} for r in sorted(runs, key=lambda r: pos.get(r.id, 0))],
        }, indent=2))
        return 0
    if not runs:
        print("the queue is empty and nothing is running")
        return 0
    rows = [("#", "ID", "NAME", "STATUS", "GPUS")]
    for r in sorted(runs, key=lambda r: pos.get(r.id, 0)):
        rows.append((str(pos.get(r.id, "-")), r.id, r.name, r.status, _gpus(r.id)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if pos and lease is None:
        print("\nno scheduler is running: `tunesmith scheduler` (or the studio) starts queued runs")
    return 0


def _gpus(run_id: str) -> str:
    """'0,1' given, 'auto' / '2' / '0,1' asked, 'cpu'; '-' outside the queue."""
    from tunesmith.engine import scheduler

    return scheduler.gpus_label(run_id) or "-"


def move(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs, scheduler

    run = jobs.find_run(args.run_id)
    place = scheduler.move(run.id, args.where if args.where else args.place)
    print(f"run {run.id} is now number {place} in the queue")
    return 0


def cancel(args: argparse.Namespace) -> int:
    from tunesmith.engine import jobs

    run = jobs.cancel(jobs.find_run(args.run_id).id)
    print(f"run {run.id}: {run.status}")
    return 0
