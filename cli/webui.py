"""`tunesmith webui`: serve the studio."""

from __future__ import annotations

import argparse
import os

EXAMPLES = """examples:
  tunesmith webui                                   # http://127.0.0.1:7860, local only
  tunesmith webui --allow-dir ~/datasets            # the studio may also read (and export to) ~/datasets
  tunesmith webui --host 0.0.0.0 --auth me:secret   # reachable from other machines (auth required)
  TUNESMITH_AUTH=me:secret tunesmith webui --host 0.0.0.0 --allow-host gpu-box.example.com

The browser may name only uploads, the bundled datasets, registered dataset names
and the folders given with --allow-dir ($TUNESMITH_ALLOW_DIRS, separated by ':');
the CLI itself reads any path. With TUNESMITH_LOGIN_FILE=PATH and no password
given, a password is generated on first start, printed once and kept hashed in PATH.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("webui", help="serve the studio in the browser", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=os.environ.get("TUNESMITH_HOST", "127.0.0.1"), help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("TUNESMITH_PORT", "7860")), help="port (default 7860)")
    p.add_argument("--auth", default=None, help="user:password required to open the studio (default: $TUNESMITH_AUTH)")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a folder the studio may read datasets and models from and export to (repeatable; "
                        "also $TUNESMITH_ALLOW_DIRS)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the studio answers to besides loopback and --host, e.g. the name of a "
                        "reverse proxy (repeatable; also $TUNESMITH_ALLOW_HOSTS, comma-separated; '*' = any)")
    p.add_argument("--max-upload-mb", type=float, default=None, metavar="MB",
                   help="largest file the studio accepts as an upload (default 512; also $TUNESMITH_MAX_UPLOAD_MB)")
    p.set_defaults(func=run)


def check_home_writable() -> None:
    """Runs, uploads and the login live in TUNESMITH_HOME: say so at once when this user cannot write it
    (a Docker bind mount owned by root, for one)."""
    from tunesmith.engine import paths
    from tunesmith.engine.errors import ConfigError

    try:
        home = paths.home()
        ok = os.access(home, os.W_OK | os.X_OK)
    except OSError:
        home, ok = os.environ.get("TUNESMITH_HOME", "~/.tunesmith"), False
    if not ok:
        raise ConfigError(f"TUNESMITH_HOME {home} is not writable by this user (uid {os.getuid()}): give the folder "
                          f"to it (chown -R {os.getuid()} FOLDER) or point TUNESMITH_HOME elsewhere.")


def run(args: argparse.Namespace) -> int:
    # The bind/auth policy lives in one place, studio.app.launch (it also reads the environment).
    from tunesmith.studio.app import launch, parse_auth

    check_home_writable()

    launch(host=args.host, port=args.port, auth=parse_auth(args.auth) if args.auth else None,
           allow_dirs=args.allow_dir, allow_hosts=args.allow_host, max_upload=args.max_upload_mb)
    return 0
