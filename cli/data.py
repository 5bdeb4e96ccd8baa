"""`tunesmith data`: check, list and register datasets (the CLI side of the Data tab).

    tunesmith data inspect data/identity.json
    tunesmith data inspect chats.jsonl --model tunesmith/demo --cutoff-len 512 --preview 2
    tunesmith data inspect export.csv --format alpaca --map prompt=question,response=answer --json
    tunesmith data inspect messy.jsonl --drop-invalid          # statistics without the bad rows
    tunesmith data list [--json]
    tunesmith data register my_chats.jsonl --name my_chats     # then data.datasets: [my_chats]
    tunesmith data import-info ~/LLaMA-Factory/data/dataset_info.json   # bring LLaMA-Factory entries

`inspect` exits 0 when every row is usable (or --drop-invalid was given), 1
when rows have errors, 2 (from the main CLI) when the file cannot be read.
The --json output follows the schema documented in tunesmith.engine.data.inspect.
"""

from __future__ import annotations

import argparse
import json
import sys

INSPECT_EXAMPLES = """examples:
  tunesmith data inspect data/identity.json
  tunesmith data inspect chats.jsonl --model tunesmith/demo --preview 2
  tunesmith data inspect export.csv --format alpaca --map prompt=question,response=answer --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from tunesmith.engine.data.formats import FORMATS

    p = subparsers.add_parser("data", help="check, list and register datasets")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    # --- inspect
    i = sub.add_parser("inspect", help="check a dataset: format, rows with problems, token statistics",
                       epilog=INSPECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    i.add_argument("path", metavar="PATH",
                   help="a file, a folder, a registered dataset name or a hub id (owner/name[:subset][@split])")
    i.add_argument("--format", default="auto", choices=["auto", *FORMATS],
                   help="dataset layout (default: detect it from the keys of the rows)")
    i.add_argument("--map", dest="mapping", metavar="FIELD=COLUMN,...",
                   help="column mapping overriding detection, e.g. prompt=question,response=answer "
                        "or messages=dialog,role_tag=speaker")
    # Token statistics and previews need a tokenizer; without --model the report counts characters only.
    i.add_argument("--model", metavar="M", help="tokenize with this model's tokenizer and template")
    i.add_argument("--template", metavar="NAME",
                   help="named chat template instead of the tokenizer's own (chatml, llama3, qwen, ...)")
    i.add_argument("--cutoff-len", type=int, default=1024, help="max tokens per example, as data.cutoff_len")
    i.add_argument("--drop-invalid", action="store_true",
                   help="leave rows with errors out of the statistics (as data.drop_invalid)")
    i.add_argument("--preview", type=int, default=0, metavar="N",
                   help="show the first N rows as the model sees them (needs --model)")
    i.add_argument("--json", action="store_true",
                   help="machine-readable report (stable schema, see tunesmith.engine.data.inspect)")
    i.set_defaults(func=run_inspect)

    # --- list
    ls = sub.add_parser("list", help="list bundled and registered datasets")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=run_list)

    # --- register
    r = sub.add_parser("register", help="copy a file into $TUNESMITH_HOME/uploads and register it by name")
    r.add_argument("path", metavar="PATH", help="the dataset file")
    r.add_argument("--name", required=True, help="the name to use in data.datasets")
    r.add_argument("--replace", action="store_true", help="replace an existing registration with this name")
    r.set_defaults(func=run_register)

    # --- import-info
    im = sub.add_parser("import-info", help="register the entries of a LLaMA-Factory dataset_info.json")
    im.add_argument("path", metavar="PATH", help="a dataset_info.json, or the folder holding one")
    im.add_argument("--replace", action="store_true", help="replace registrations with the same names")
    im.set_defaults(func=run_import_info)


def _ansi(spans, cut) -> str:
    green, grey, red, reset = "\033[32m", "\033[90m", "\033[31;9m", "\033[0m"
    out = [(green if trained else grey) + text + reset for text, trained in spans]
    out += [red + text + reset for text, _ in cut]
    return "".join(out)


def run_inspect(args: argparse.Namespace) -> int:
    from tunesmith.engine.data.inspect import inspect_dataset, preview_rows

    fmt = None if args.format == "auto" else args.format
    report = inspect_dataset(args.path, format=fmt, model=args.model, cutoff_len=args.cutoff_len,
                             drop_invalid=args.drop_invalid, mapping=args.mapping, chat_template=args.template)
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(report.to_text())
        if args.preview:
            from tunesmith.engine.errors import DataError

            if not args.model:
                raise DataError("--preview needs --model to render rows through its chat template.")
            color = sys.stdout.isatty()
            for row in preview_rows(args.path, model=args.model, n=args.preview, format=fmt,
                                    chat_template=args.template, cutoff_len=args.cutoff_len):
                print(f"\n--- row {row.row}: {row.n_tokens} tokens, {row.n_trained} trained"
                      + (f", {row.truncated_tokens} cut off" if row.truncated_tokens else "") + " ---")
                if color:
                    print(_ansi(row.spans, row.cut_spans))
                else:  # trained text between [[ ]] when there is no colour
                    print("".join(f"[[{t}]]" if trained else t for t, trained in row.spans)
                          + ("<<cut: " + "".join(t for t, _ in row.cut_spans) + ">>" if row.cut_spans else ""))
    return 0 if report.ok else 1


def run_list(args: argparse.Namespace) -> int:
    from tunesmith.engine.data import list_datasets

    entries = list_datasets()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], ensure_ascii=False, indent=2))
        return 0
    rows = [("NAME", "FORMAT", "LANG", "SOURCE", "DESCRIPTION")]
    rows += [(e.name, e.format, ",".join(e.language), e.source, e.description) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def run_register(args: argparse.Namespace) -> int:
    from tunesmith.engine.data import register_upload

    e = register_upload(args.path, args.name, overwrite=args.replace)
    print(f"registered {e.name!r} ({e.format}) -> {e.path}; use it as data.datasets: [{e.name}]")
    return 0


def run_import_info(args: argparse.Namespace) -> int:
    from tunesmith.engine.data import import_dataset_info

    imported, skipped = import_dataset_info(args.path, overwrite=args.replace)
    for e in imported:
        print(f"registered {e.name!r} ({e.format}) -> {e.path or e.hub_id}")
        for note in e.notes():
            print(f"  note: {note}")
    for name, why in skipped.items():
        print(f"skipped {name!r}: {why}")
    return 0 if imported else 1
