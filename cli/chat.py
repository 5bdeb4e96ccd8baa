"""`tunesmith chat RUN_ID_OR_MODEL`: talk to a base model or a fine-tuned run, streaming."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  tunesmith chat 20261123-120000-ab12        # a run: its base model + adapter
  tunesmith chat tunesmith/demo              # the base demo model
  tunesmith chat exports/RUN/gguf/NAME-Q8_0.gguf   # an exported GGUF, through llama.cpp
  tunesmith chat RUN_ID --message "Who are you?"   # one reply, then exit
Type /reset to forget the conversation, /exit (or Ctrl+D) to leave.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a run or a model (streaming)", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run id (or unique prefix / name), model folder, hub id, tunesmith/demo, "
                                     "or a .gguf file (through llama.cpp)")
    p.add_argument("--message", "-m", help="send one message, print the reply, exit")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine import lookup

    lookup.check_chat_target(args.target)  # before torch loads: an unknown name is answered in seconds
    from tunesmith.engine import infer

    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []

    def reply(text: str) -> None:
        history.append({"role": "user", "content": text})
        out = []
        for piece in infer.stream_chat(args.target, history, max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature):
            out.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(out)})

    if args.message is not None:
        reply(args.message)
        return 0
    print(f"chatting with {args.target} (/reset, /exit)", file=sys.stderr)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            del history[1 if args.system else 0:]
            continue
        if text:
            sys.stdout.write("bot> ")
            reply(text)
