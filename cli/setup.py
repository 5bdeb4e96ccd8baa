"""`tunesmith setup gguf`: install llama.cpp support (llama-cpp-python) on first use, with progress."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  tunesmith setup gguf            # check cmake / compilers, then build and install llama-cpp-python
  tunesmith setup gguf --check    # only say what is installed and what is missing
F16/BF16/Q8_0 GGUF export works without it; K-quants (q4_k_m, ...) and the llama.cpp check need it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="install optional parts: llama.cpp support for GGUF quantization", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["gguf"], help="gguf: llama-cpp-python (llama.cpp's quantizer and loader)")
    p.add_argument("--check", action="store_true", help="only report what is installed and what is missing")
    p.set_defaults(func=run)


def install_with_progress(verbose: bool = False) -> None:
    """Install llama-cpp-python, drawing a bar on stderr (shared with `tunesmith export`)."""
    from tqdm import tqdm

    from tunesmith.engine.gguf import llamacpp_setup

    bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}%")

    def progress(frac: float, msg: str) -> None:
        bar.n = int(100 * frac)
        bar.set_description(msg[:70])
        bar.refresh()

    try:
        llamacpp_setup.install(progress, log=(lambda line: bar.write(line, file=sys.stderr)) if verbose else None)
    finally:
        bar.close()


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine.gguf import llamacpp_setup

    st = llamacpp_setup.status()
    print(st.summary())
    for n in st.notes:
        print(f"  note: {n}")
    if args.check or st.installed:
        return 0 if st.installed or not st.missing else 2
    print(f"Installing with: {llamacpp_setup.install_command_text()}", file=sys.stderr)
    install_with_progress(verbose=getattr(args, "debug", False))
    print("llama.cpp support installed: K-quants and the llama.cpp check are ready.")
    return 0
