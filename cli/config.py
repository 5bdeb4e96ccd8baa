"""`tunesmith config convert LF.yaml`: write a LLaMA-Factory training YAML as a Tunesmith run config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  tunesmith config convert examples/train_lora/llama3_lora_sft.yaml            # print it
  tunesmith config convert llama3_lora_sft.yaml -o run.yaml && tunesmith train run.yaml
The report (what mapped to what, what is ignored) goes to stderr; keys Tunesmith
cannot honour are refused by name and nothing is written.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="convert other tools' configs")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("convert", help="LLaMA-Factory training YAML -> Tunesmith run YAML", epilog=EXAMPLES,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("config", help="a LLaMA-Factory (or Tunesmith) training YAML")
    c.add_argument("-o", "--out", help="write the Tunesmith YAML here (default: print it)")
    c.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from tunesmith.engine import atomic
    from tunesmith.engine.compat import read_config

    cfg, translation = read_config(args.config)
    if translation is None:
        print(f"{args.config}: already a Tunesmith config (checked); written unchanged in canonical form", file=sys.stderr)
    else:
        print(f"{args.config}: LLaMA-Factory config, translated:", file=sys.stderr)
        print("\n".join(translation.report()), file=sys.stderr)
    if args.out:
        atomic.write_text(Path(args.out), cfg.to_yaml())
        print(f"wrote {args.out}; train it with: tunesmith train {args.out}", file=sys.stderr)
    else:
        print(cfg.to_yaml(), end="")
    return 0
