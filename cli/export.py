"""`tunesmith export RUN_ID --format adapter|merged|gguf`."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  tunesmith export RUN_ID --format adapter --out ./my-adapter
  tunesmith export RUN_ID --format merged
  tunesmith export RUN_ID --format gguf --quant q4_k_m,q8_0,f16
  tunesmith export RUN_ID --format adapter --push-to-hub me/my-adapter [--private]   # needs HF_TOKEN
Default output: $TUNESMITH_HOME/exports/RUN_ID/FORMAT
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's adapter, merged model or GGUF files", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id")
    p.add_argument("--format", required=True, choices=["adapter", "merged", "gguf"])
    p.add_argument("--quant", default="f16", help="GGUF types, comma-separated: f32,f16,bf16,q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m")
    p.add_argument("--out", help="output folder")
    p.add_argument("--push-to-hub", metavar="USER/NAME", help="also upload the export, with a model card, to this Hub repo")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from tunesmith.engine import export, jobs

    info = jobs.find_run(args.run_id)
    bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True)

    def progress(frac: float, msg: str) -> None:
        bar.n = int(100 * frac)
        bar.set_description(msg[:40])
        bar.refresh()

    quants = [q.strip().lower() for q in args.quant.split(",") if q.strip()]
    if args.push_to_hub:
        from tunesmith.engine import hub

        hub.check_repo_id(args.push_to_hub)  # before minutes of exporting
    try:
        res = export.export_run(info.id, args.format, args.out, quants=quants, progress=progress)
    finally:
        bar.close()
    print(f"{res.format} written to {res.path} ({res.size_bytes / 2**20:.1f} MiB)")
    for f in res.files:
        extra = ""
        if "top1_agreement" in f and f["top1_agreement"] is not None:
            extra = f"  top-1 agreement {100 * f['top1_agreement']:.1f}%, mean KL {f['mean_kl']:.4f}"
        print(f"  {f['path']}  {f['size_bytes'] / 2**20:.1f} MiB{extra}")
    for n in res.notes:
        print(f"  note: {n}")
    if args.push_to_hub:
        hub.write_card(info.id, res.format, res.path, args.push_to_hub)
        url = hub.push_folder(res.path, args.push_to_hub, private=args.private,
                              message=f"Tunesmith: {res.format} of run {info.name}")
        print(f"pushed to {url}")
    return 0
