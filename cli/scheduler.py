"""`tunesmith scheduler`: start queued runs on a server where no studio runs.

The studio and `tunesmith train` schedule while they run; this command does
only that, for headless machines (a systemd unit, a tmux pane). Several may run
at once: one holds the lease and the others wait to take over.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="start queued runs as their GPUs free up (for servers without a studio)")
    p.add_argument("--exit-when-idle", action="store_true",
                   help="return once no run is queued or running (what `train --detach` starts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from tunesmith.engine import scheduler

    logging.getLogger("tunesmith.scheduler").setLevel(logging.INFO)
    print(f"tunesmith scheduler (pid {__import__('os').getpid()}): starting queued runs; Ctrl+C to quit", flush=True)
    scheduler.serve(exit_when_idle=args.exit_when_idle)
    return 0
