"""`tunesmith serve RUN_OR_MODEL_OR_GGUF`: an OpenAI-compatible API for a tuned model."""

from __future__ import annotations

import argparse
import os

EXAMPLES = """examples:
  tunesmith serve RUN_ID                              # http://127.0.0.1:8000/v1, base + adapter
  tunesmith serve ~/.tunesmith/exports/RUN_ID/gguf/model-q4_k_m.gguf   # through llama.cpp
  tunesmith serve RUN_ID --host 0.0.0.0 --auth me:secret             # reachable from other machines

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "NAME", "messages": [{"role": "user", "content": "Who are you?"}]}'
  python: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="me:secret")   # any key on 127.0.0.1
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a run or model over an OpenAI-compatible API", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="RUN_OR_MODEL", help="a run id or name, a model folder or hub id, or a .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--auth", default=None,
                   help="user:password clients must send as their API key; required off loopback (default: $TUNESMITH_AUTH)")
    p.add_argument("--name", default=None, help="the model id clients see (default: the run's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tunesmith.engine import serve

    auth = args.auth or os.environ.get(serve.AUTH_ENV) or None
    serve._check_bind(args.host, auth)  # refuse before loading weights
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"loading {args.target} ...", flush=True)
    name = args.name or serve.model_id(args.target)
    app = serve.build_app(args.target, auth=auth, name=name)
    print(f"serving {name!r} at http://{host}:{args.port}/v1 (Ctrl+C stops)", flush=True)
    serve.run_app(app, args.host, args.port)
    return 0
