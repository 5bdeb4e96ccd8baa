"""`tunesmith webui`: serve the studio."""

from __future__ import annotations

import argparse
import os

EXAMPLES = """examples:
  tunesmith webui                                   # http://127.0.0.1:7860, local only
  tunesmith webui --host 0.0.0.0 --auth me:secret   # reachable from other machines (auth required)
  TUNESMITH_AUTH=me:secret tunesmith webui --host 0.0.0.0
"""

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_auth(value: str | None) -> tuple[str, str] | None:
    from tunesmith.engine.errors import ConfigError

    if not value:
        return None
    user, sep, pw = value.partition(":")
    if not sep or not user or not pw:
        raise ConfigError("--auth / TUNESMITH_AUTH must look like user:password (both non-empty).")
    return user, pw


def check_bind(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse to serve beyond this machine without a password."""
    from tunesmith.engine.errors import ConfigError

    if host not in LOOPBACK and auth is None:
        raise ConfigError(
            f"--host {host} makes the studio reachable from other machines, so it needs a password: "
            "add --auth user:password or set TUNESMITH_AUTH=user:password."
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("webui", help="serve the studio in the browser", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("TUNESMITH_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("TUNESMITH_PORT", "7860")), help="port (default 7860)")
    p.add_argument("--auth", default=None, help="user:password required to open the studio (default: $TUNESMITH_AUTH)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    auth = parse_auth(args.auth or os.environ.get("TUNESMITH_AUTH"))
    check_bind(args.host, auth)
    from tunesmith.studio.app import launch

    launch(host=args.host, port=args.port, auth=auth)
    return 0
