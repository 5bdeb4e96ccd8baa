"""`tunesmith doctor`: check the run registry against the run folders and repair it."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  tunesmith doctor              # check and repair (an unreadable db is moved aside, never deleted)
  tunesmith doctor --check      # only report; exit 1 when something is wrong
  tunesmith doctor --rebuild    # rebuild tunesmith.db from the run folders anyway
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check and repair the run registry (rebuilds it from the run folders)",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="report only, change nothing")
    p.add_argument("--rebuild", action="store_true", help="move tunesmith.db aside and rebuild it from the run folders")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine import paths, recovery
    from tunesmith.engine.text import printable

    rep = recovery.doctor(fix=not args.check, rebuild=args.rebuild)
    for line in rep.findings:
        print(printable(line))
    for line in rep.notes:
        print(f"note: {printable(line)}")
    if rep.healthy:
        print(f"ok: {rep.checked} run(s) in {paths.home()}, registry and folders agree")
        return 0
    if args.check:
        return 1
    print(f"repaired; {rep.checked} run(s) in {paths.home()}")
    return 0
