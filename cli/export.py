"""`tunesmith export RUN_ID --format adapter|merged|gguf`."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  tunesmith export RUN_ID --format adapter --out ./my-adapter
  tunesmith export RUN_ID --format merged
  tunesmith export RUN_ID --format gguf --quant q4_k_m,q8_0,f16
  tunesmith export RUN_ID --format adapter --push-to-hub me/my-adapter [--private]   # needs HF_TOKEN
F16/BF16/Q8_0 need nothing more; K-quants (q4_k_m, ...) need llama.cpp support, installed on first use
(asked at a terminal; elsewhere run `tunesmith setup gguf` first).
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

    from tunesmith.engine import export, jobs

    info = jobs.find_run(args.run_id)
    bar, progress = percent_bar()

    quants = [q.strip().lower() for q in args.quant.split(",") if q.strip()]
    skipped: list[str] = []
    if args.format == "gguf":
        quants, skipped = _llama_cpp_on_first_use(quants)
        if not quants:
            return 2
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
        elif f.get("fidelity"):
            extra = f"  {f['fidelity']}"
        print(f"  {f['path']}  {f['size_bytes'] / 2**20:.1f} MiB{extra}")
    for n in res.notes:
        print(f"  note: {n}")
    if skipped:
        from tunesmith.engine.gguf.llamacpp_setup import INSTALL_HINT

        print(f"error: not written: {', '.join(q.upper() for q in skipped)} (needs llama.cpp support: "
              f"{INSTALL_HINT}, then export again)", file=sys.stderr)
        return 2
    if args.push_to_hub:
        hub.write_card(info.id, res.format, res.path, args.push_to_hub)
        url = hub.push_folder(res.path, args.push_to_hub, private=args.private,
                              message=f"Tunesmith: {res.format} of run {info.name}")
        print(f"pushed to {url}")
    return 0


def _llama_cpp_on_first_use(quants: list[str]) -> tuple[list[str], list[str]]:
    """(types to export now, types left out): K-quants need llama.cpp support, installed here on first use.

    At a terminal we ask, then build it with a progress bar; elsewhere (CI, scripts) we say the exact
    command. A failed or declined install still exports the types Tunesmith writes itself (F16, Q8_0, ...).
    """
    import os

    from tunesmith.engine.gguf import llamacpp_setup
    from tunesmith.engine.gguf.quantize import LLAMA_QUANTS

    need = [q for q in quants if q in LLAMA_QUANTS]
    if not need or llamacpp_setup.llama_cpp_available():
        return quants, []
    names = ", ".join(q.upper() for q in need)
    st = llamacpp_setup.status()
    print(f"{names} need llama.cpp support (llama-cpp-python), which is not installed yet.", file=sys.stderr)
    interactive = sys.stdin.isatty() and not os.environ.get("CI")
    if st.missing:
        print(f"It cannot be built here yet: {'; '.join(st.missing)}.", file=sys.stderr)
    elif not interactive:
        print(f"Install it with `tunesmith setup gguf` ({llamacpp_setup.TYPICAL_TIME}), or: "
              f"{llamacpp_setup.install_command_text()}", file=sys.stderr)
    else:
        answer = input(f"Install it now? It builds llama.cpp ({llamacpp_setup.TYPICAL_TIME}). [Y/n] ").strip().lower()
        if answer in ("", "y", "yes"):
            from .setup import install_with_progress

            try:
                install_with_progress()
                return quants, []
            except llamacpp_setup.LlamaCppSetupError as e:
                print(f"error: {e}", file=sys.stderr)
    rest = [q for q in quants if q not in need]
    if rest:
        print(f"Exporting {', '.join(q.upper() for q in rest)} now (written by Tunesmith, no llama.cpp needed).",
              file=sys.stderr)
    return rest, need


def percent_bar():
    """A tqdm bar on stderr and the engine's progress(frac, msg) callback that drives it (export, push)."""
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True)

    def progress(frac: float, msg: str) -> None:
        bar.n = int(100 * frac)
        bar.set_description(msg[:40])
        bar.refresh()

    return bar, progress
