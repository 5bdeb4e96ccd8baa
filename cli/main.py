"""`tunesmith`: the command line. This file only registers the command groups.

    tunesmith webui [--host H] [--port P] [--auth user:password] [--allow-dir DIR] [--allow-host NAME]
    tunesmith train CONFIG.yaml [--set training.max_steps=20 ...] [--gpus 0,1] [--detach]
    tunesmith runs [--json]
    tunesmith queue [top|up|down|bottom|move|cancel RUN_ID]
    tunesmith scheduler [--exit-when-idle]
    tunesmith stop RUN_ID
    tunesmith chat RUN_ID_OR_MODEL [--message TEXT]
    tunesmith eval RUN_ID [--data FILE] [-n 20] [--no-base] [--json]
    tunesmith export RUN_ID --format adapter|merged|gguf [--quant q4_k_m,q8_0] [--out DIR]
    tunesmith data inspect PATH [--format F] [--json]
    tunesmith doctor [--check] [--rebuild]
    tunesmith setup gguf [--check]
    tunesmith serve RUN_OR_MODEL_OR_GGUF [--host H] [--port P] [--auth user:password]
    tunesmith push RUN_ID --repo user/name [--format adapter|merged|gguf] [--private]
    tunesmith config convert LLAMAFACTORY.yaml [-o run.yaml]

Mistakes (a bad config, an unknown run, a missing file) print one line naming
the problem and exit with status 2; --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from tunesmith import __version__


def build_parser() -> argparse.ArgumentParser:
    from . import chat, config, data, doctor, export, push, queue, runs, scheduler, serve, setup, train, webui
    from . import eval as eval_cmd  # the module is named for the command; keep the builtin unshadowed

    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune open LLMs: studio, CLI and YAML on one engine.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in (webui, train, runs, queue, scheduler, chat, eval_cmd, export, data, doctor, setup, serve, push, config):
        mod.register(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep library chatter (deprecation notices, weight-loading bars, optional-backend
    probes) out of a user's terminal; --debug shows it all."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|peft|bitsandbytes)\b")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # Read by tunesmith.engine.models when it loads weights (transformers is imported lazily).
    os.environ.setdefault("TUNESMITH_QUIET_LOADING", "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        _quiet_libraries()
    from tunesmith.engine.errors import TunesmithError
    from tunesmith.engine.text import one_line

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise  # the reader left (`| head`): entry() ends quietly; never an "error:" line for it
    except TunesmithError as e:
        if args.debug:
            raise
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as e:
        # Not a bug in the input, but the machine: a full disk, a permission, a damaged file.
        if args.debug or isinstance(e, BrokenPipeError):
            raise
        from tunesmith.engine import paths
        from tunesmith.engine.diskspace import disk_full_reason

        print(f"error: {one_line(disk_full_reason(e, paths.home()) or str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()  # a reader that left early (`| head`) shows up here, not at interpreter exit
    except BrokenPipeError:
        # The reader of our output went away (head, a closed pager): stop quietly, as Unix tools do.
        # stdout now points at /dev/null so Python's own flush at exit does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141  # 128 + SIGPIPE, what the shell reports for `yes | head`
    sys.exit(code)


if __name__ == "__main__":
    entry()
