"""Export tab, "Share" panel: push a run to the Hugging Face Hub, or serve it over an OpenAI-compatible API.

    share = build_share_panel(ctx, run_dropdown)   # inside the Export tab, below its own controls

Push calls engine.hub.push_run (export + model card + upload); the token typed
here lives only in this browser session's textbox and the call that uses it,
never on disk (empty = HF_TOKEN or `hf auth login` on the studio's machine).
Serve starts engine.serve's app on 127.0.0.1 inside the studio process and
shows its URL and a curl line; Stop ends it. From another machine, run
`tunesmith serve RUN --host 0.0.0.0 --auth user:password` instead.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import gradio as gr

from .context import StudioContext
from .i18n import T, localize, tr
from .notices import toast_errors

PUSH_FORMATS = [("Adapter", "adapter"), ("Merged model", "merged"), ("GGUF q4_k_m", "gguf")]
_SERVERS: dict[str, tuple[object, threading.Thread, int]] = {}  # run id -> (uvicorn server, thread, port)
_LOCK = threading.Lock()


@dataclass
class ShareHandles:
    repo: gr.Textbox
    push: gr.Button
    serve: gr.Button
    serve_info: gr.Markdown


def _free_port(preferred: int = 8000) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise gr.Error(tr("No free port on 127.0.0.1 to serve on."))


def serve_help(run_name: str, port: int) -> str:
    url = f"http://127.0.0.1:{port}/v1"
    return (tr("Serving **{name}** at `{url}` (OpenAI-compatible; this machine only).", name=run_name, url=url) + "\n\n"
            f"```bash\ncurl {url}/chat/completions -H 'Content-Type: application/json' \\\n"
            f"  -d '{{\"model\": \"{run_name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Who are you?\"}}]}}'\n```")


def start_serving(run_id: str) -> str:
    import uvicorn

    from tunesmith.engine import serve

    with _LOCK:
        if run_id in _SERVERS:
            return serve_help(serve.model_id(run_id), _SERVERS[run_id][2])
        name = serve.model_id(run_id)
        app = serve.build_app(run_id, name=name)  # loads the model now
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True, name=f"serve-{run_id}")
        thread.start()
        deadline = time.time() + 30
        while not server.started:  # answer with the URL only once it accepts connections
            if not thread.is_alive() or time.time() > deadline:
                server.should_exit = True
                raise gr.Error(tr("The API server did not start on port {port}; see the studio's terminal.", port=port))
            time.sleep(0.05)
        _SERVERS[run_id] = (server, thread, port)
    return serve_help(name, port)


def stop_serving(run_id: str) -> str:
    with _LOCK:
        entry = _SERVERS.pop(run_id, None)
    if entry is None:
        return tr("Not serving this run.")
    server, thread, _ = entry
    server.should_exit = True
    thread.join(10)
    return tr("Stopped.")


def build_share_panel(ctx: StudioContext, run: gr.Dropdown) -> ShareHandles:
    with gr.Accordion(T("Share: push to the Hugging Face Hub, or serve an OpenAI-compatible API"), open=False):
        with gr.Row():
            repo = gr.Textbox(label=T("Hub repository"), placeholder="your-user/my-model", elem_id="push-repo", scale=3,
                              info=T("Created if it does not exist; the model card is written for you."))
            fmt = localize(gr.Radio(PUSH_FORMATS, value="adapter", label=T("What to push"), scale=2), PUSH_FORMATS)
        with gr.Row():
            token = gr.Textbox(label=T("Hugging Face token (optional)"), type="password", scale=3,
                               info=T("Kept only for this session; empty uses HF_TOKEN or `hf auth login`."))
            private = gr.Checkbox(label=T("Private repository"), value=True, scale=1)
            push = gr.Button(T("Push to the Hub"), variant="primary", elem_id="push-btn", scale=1)
        push_info = gr.Markdown()
        with gr.Row():
            serve = gr.Button(T("Serve (OpenAI API)"), elem_id="serve-btn")
            stop = gr.Button(T("Stop serving"), elem_id="serve-stop-btn")
        serve_info = gr.Markdown(elem_id="serve-info")

    @toast_errors
    def do_push(run_id: str | None, repo_id: str, what: str, tok: str, priv: bool, progress=gr.Progress()):
        from tunesmith.engine import hub

        if not run_id:
            raise gr.Error(tr("Pick a run to push. No runs yet: train one first."))
        url = hub.push_run(run_id, repo_id, fmt=what, private=priv, token=(tok or "").strip() or None,
                           quants=["q4_k_m"], progress=lambda f, m: progress(f, desc=m))
        return tr("Pushed to {url}.", url=f"[{url}]({url})")

    @toast_errors
    def do_serve(run_id: str | None):
        if not run_id:
            raise gr.Error(tr("Pick a run to serve. No runs yet: train one first."))
        return start_serving(run_id)

    push.click(do_push, [run, repo, fmt, token, private], push_info)
    serve.click(do_serve, run, serve_info)
    stop.click(lambda r: stop_serving(r) if r else tr("Pick a run first."), run, serve_info)
    return ShareHandles(repo=repo, push=push, serve=serve, serve_info=serve_info)
