"""`tunesmith push RUN_ID --repo user/name`: upload a run to the Hugging Face Hub with a model card."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  HF_TOKEN=hf_... tunesmith push RUN_ID --repo me/my-assistant-lora
  tunesmith push RUN_ID --repo me/my-assistant --format merged --private
  tunesmith push RUN_ID --repo me/my-assistant-gguf --format gguf --quant q4_k_m,q8_0
The token comes from $HF_TOKEN or `hf auth login`; Tunesmith never stores it.
"""


def add_push_options(p: argparse.ArgumentParser, repo_flag: str) -> None:
    p.add_argument(repo_flag, dest="repo", metavar="USER/NAME", help="Hub repository to create or update")
    p.add_argument("--private", action="store_true", help="create the repository as private")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload a run's adapter, merged model or GGUF to the Hugging Face Hub",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id")
    add_push_options(p, "--repo")
    p.add_argument("--format", default="adapter", choices=["adapter", "merged", "gguf"], help="what to upload (default adapter)")
    p.add_argument("--quant", default="q4_k_m", help="GGUF types for --format gguf, comma-separated (default q4_k_m)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine import hub

    if not args.repo:
        print("error: --repo USER/NAME is required", file=sys.stderr)
        return 2
    hub.check_repo_id(args.repo)
    from .export import percent_bar

    bar, progress = percent_bar()

    quants = [q.strip().lower() for q in args.quant.split(",") if q.strip()]
    try:
        url = hub.push_run(args.run_id, args.repo, fmt=args.format, private=args.private, quants=quants, progress=progress)
    finally:
        bar.close()
    print(f"pushed {args.format} to {url}")
    return 0
