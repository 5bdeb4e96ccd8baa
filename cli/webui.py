"""`tunesmith webui`: serve the studio."""

from __future__ import annotations

import argparse
import os

EXAMPLES = """examples:
  tunesmith webui                                   # http://127.0.0.1:7860, local only
  tunesmith webui --host 0.0.0.0 --auth me:secret   # reachable from other machines (auth required)
  TUNESMITH_AUTH=me:secret tunesmith webui --host 0.0.0.0
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("webui", help="serve the studio in the browser", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("TUNESMITH_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("TUNESMITH_PORT", "7860")), help="port (default 7860)")
    p.add_argument("--auth", default=None, help="user:password required to open the studio (default: $TUNESMITH_AUTH)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The bind/auth policy lives in one place, studio.app.launch (it also reads TUNESMITH_AUTH).
    from tunesmith.studio.app import launch, parse_auth

    launch(host=args.host, port=args.port, auth=parse_auth(args.auth) if args.auth else None)
    return 0
