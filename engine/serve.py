"""An OpenAI-compatible HTTP server for a tuned model: /v1/models, /v1/chat/completions, /v1/completions.

    app = build_app("20261123-120000-ab12")         # a run (base + adapter, or its full model)
    app = build_app("exports/run/gguf/model-q4_k_m.gguf")   # a GGUF file, through llama.cpp
    serve("RUN_ID", host="127.0.0.1", port=8000)    # uvicorn; what `tunesmith serve` runs

Targets: a run id (or run name), a model folder or hub id (as `tunesmith chat`
takes them), or a .gguf file (llama-cpp-python). Chat requests are rendered
with the model's chat template (the one the run trained with); /v1/completions
continues raw text. `stream: true` answers with server-sent events in OpenAI's
chunk format, ending with `data: [DONE]`.

Auth follows the studio's rule: on a loopback address none is needed; binding
anywhere else requires `user:password` (--auth or $TUNESMITH_AUTH), which
clients send as their API key (`Authorization: Bearer user:password`) or as
HTTP Basic credentials.

What it does not do: batching (requests are answered one at a time: one model,
one generation), tools / function calling, logprobs, n > 1. Token counts in
`usage` come from re-tokenizing the text, so they can differ by a token at
piece boundaries from what the model generated; for a GGUF chat the prompt's
count is not known here and is reported as 0.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from fastapi import Request  # module level: FastAPI resolves the handlers' (string) annotations here

from .errors import ConfigError, TunesmithError

AUTH_ENV = "TUNESMITH_AUTH"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_MAX_TOKENS = 256


# ---- backends: a run / HF model, or a GGUF file ---------------------------------


class HFBackend:
    """A run (base + adapter, or full model) or a model folder / hub id, through engine.infer."""

    def __init__(self, target: str):
        from . import infer

        self.infer = infer
        self.target = target
        self.model, self.tok = infer.get_model(target)  # load now: the first request should not wait

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens_chat(self, messages: list[dict]) -> int:
        return int(self.infer.build_prompt_ids(self.tok, messages).shape[-1])

    def chat(self, messages: list[dict], max_tokens: int, temperature: float, top_p: float) -> Iterator[str]:
        ids = self.infer.build_prompt_ids(self.tok, messages).to(self.model.device)
        return self.infer.stream_generate(self.model, self.tok, ids, max_tokens, temperature, top_p)

    def complete(self, prompt: str, max_tokens: int, temperature: float, top_p: float) -> Iterator[str]:
        ids = self.tok(prompt, return_tensors="pt")["input_ids"].to(self.model.device)
        return self.infer.stream_generate(self.model, self.tok, ids, max_tokens, temperature, top_p)


class GGUFBackend:
    """A .gguf file through llama.cpp (llama-cpp-python); its stored chat template renders chats."""

    def __init__(self, path: str, n_ctx: int = 4096):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ConfigError("serving a .gguf file needs llama-cpp-python: pip install 'tunesmith[gguf]'") from None
        self.llm = Llama(model_path=path, n_ctx=n_ctx, verbose=False)

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens_chat(self, messages: list[dict]) -> int:
        return 0  # llama.cpp reports it per request; see chat()

    def chat(self, messages: list[dict], max_tokens: int, temperature: float, top_p: float) -> Iterator[str]:
        for chunk in self.llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=temperature,
                                                     top_p=top_p, stream=True):
            piece = chunk["choices"][0].get("delta", {}).get("content")
            if piece:
                yield piece

    def complete(self, prompt: str, max_tokens: int, temperature: float, top_p: float) -> Iterator[str]:
        for chunk in self.llm.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                                                top_p=top_p, stream=True):
            piece = chunk["choices"][0].get("text")
            if piece:
                yield piece


def open_backend(target: str):
    if target.lower().endswith(".gguf"):
        if not Path(target).expanduser().is_file():
            raise ConfigError(f"{target}: no such GGUF file.")
        return GGUFBackend(str(Path(target).expanduser()))
    return HFBackend(target)


def model_id(target: str) -> str:
    """The name /v1/models lists and requests may send: a run's name, else the target as given."""
    if target.lower().endswith(".gguf"):
        return Path(target).stem
    from . import jobs

    run = jobs.resolve_run(target)
    return run.name if run is not None else target


# ---- the HTTP app ----------------------------------------------------------------


def _check_bind(host: str, auth: str | None) -> None:
    if host not in LOOPBACK and not auth:
        raise ConfigError(f"serving on {host} makes the model reachable from other machines: pass --auth user:password "
                          f"or set {AUTH_ENV}=user:password (clients send it as their API key), or bind 127.0.0.1.")
    if auth is not None and ":" not in auth:
        raise ConfigError(f"--auth / {AUTH_ENV} must look like user:password (got {auth!r}).")


def _authorized(header: str | None, auth: str) -> bool:
    if not header:
        return False
    kind, _, value = header.partition(" ")
    if kind.lower() == "bearer":
        given = value.strip()
    elif kind.lower() == "basic":
        try:
            given = base64.b64decode(value.strip()).decode("utf-8")
        except Exception:
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), auth.encode())


def _stops(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s]


def _cut_at_stops(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """Pass pieces through until one of `stops` appears; hold back text that may be a stop's start."""
    if not stops:
        yield from pieces
        return
    buf = ""
    hold = max(len(s) for s in stops) - 1
    for piece in pieces:
        buf += piece
        hits = [buf.find(s) for s in stops if s in buf]
        if hits:
            out = buf[: min(hits)]
            if out:
                yield out
            return
        if len(buf) > hold:
            yield buf[: len(buf) - hold]
            buf = buf[len(buf) - hold:]
    if buf:
        yield buf


def build_app(target: str, auth: str | None = None, name: str | None = None, backend=None):
    """The FastAPI app serving `target` (loaded now). `auth` = "user:password" or None (no check)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, StreamingResponse

    backend = backend or open_backend(target)
    served = name or model_id(target)
    created = int(time.time())
    lock = threading.Lock()  # one generation at a time: one model, one device
    app = FastAPI(title="Tunesmith OpenAI-compatible server", docs_url=None, redoc_url=None)

    def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if auth and not _authorized(request.headers.get("authorization"), auth):
            return error(401, "missing or wrong API key: send Authorization: Bearer user:password", "authentication_error")
        return await call_next(request)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created, "owned_by": "tunesmith"}]}

    @app.get("/health")
    def health():
        return {"status": "ok", "model": served}

    async def _body(request: Request) -> dict | JSONResponse:
        try:
            body = await request.json()
        except Exception:
            return error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "the request body must be a JSON object")
        return body

    def _params(body: dict) -> tuple[int, float, float] | JSONResponse:
        try:
            max_tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)
            temperature = float(body.get("temperature") if body.get("temperature") is not None else 0.0)
            top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
        except (TypeError, ValueError):
            return error(400, "max_tokens, temperature and top_p must be numbers")
        if max_tokens < 1 or temperature < 0 or not 0 < top_p <= 1:
            return error(400, "need max_tokens >= 1, temperature >= 0 and 0 < top_p <= 1")
        if int(body.get("n") or 1) != 1:
            return error(400, "n > 1 is not supported", param="n")
        return max_tokens, temperature, top_p

    def _respond(kind: str, pieces_fn, body: dict, max_tokens: int, prompt_tokens: int):
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        obj = "chat.completion" if kind == "chat" else "text_completion"
        stops = _stops(body.get("stop"))

        def finish(text: str) -> str:
            return "length" if backend.count(text) >= max_tokens else "stop"

        def choice(text: str | None, fin: str | None, delta: bool) -> dict:
            if kind == "chat":
                if delta:
                    return {"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": fin}
                return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": fin}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": fin}

        if not body.get("stream"):
            with lock:
                try:
                    text = "".join(_cut_at_stops(pieces_fn(), stops))
                except TunesmithError as e:
                    return error(500, str(e), "server_error")
            n = backend.count(text)
            return {"id": rid, "object": obj, "created": int(time.time()), "model": served,
                    "choices": [choice(text, finish(text), False)],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}}

        chunk_obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def events() -> Iterator[str]:
            def sse(choices: list[dict]) -> str:
                return "data: " + json.dumps({"id": rid, "object": chunk_obj, "created": int(time.time()),
                                              "model": served, "choices": choices}, ensure_ascii=False) + "\n\n"

            with lock:
                if kind == "chat":
                    yield sse([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                text = ""
                try:
                    for piece in _cut_at_stops(pieces_fn(), stops):
                        text += piece
                        yield sse([choice(piece, None, True)])
                except TunesmithError as e:  # headers are sent: report in the stream, as OpenAI does
                    yield "data: " + json.dumps({"error": {"message": str(e), "type": "server_error"}}) + "\n\n"
                    return
                yield sse([choice(None, finish(text), True)])
                yield "data: [DONE]\n\n"

        # sync generator: Starlette iterates it in a worker thread, so the event loop stays free
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list of {role, content}", param="messages")
        clean = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                return error(400, f"messages[{i}]: role must be system, user or assistant", param="messages")
            content = m.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": ...}] parts; only text is understood
                if any(isinstance(p, dict) and p.get("type") != "text" for p in content):
                    return error(400, f"messages[{i}]: only text content is supported (no images or audio)", param="messages")
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                return error(400, f"messages[{i}]: content must be text", param="messages")
            clean.append({"role": m["role"], "content": content})
        params = _params(body)
        if isinstance(params, JSONResponse):
            return params
        max_tokens, temperature, top_p = params
        try:
            prompt_tokens = backend.prompt_tokens_chat(clean)
        except TunesmithError as e:
            return error(400, str(e))
        return _respond("chat", lambda: backend.chat(clean, max_tokens, temperature, top_p), body, max_tokens, prompt_tokens)

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            return error(400, "prompt must be one string", param="prompt")
        params = _params(body)
        if isinstance(params, JSONResponse):
            return params
        max_tokens, temperature, top_p = params
        return _respond("completion", lambda: backend.complete(prompt, max_tokens, temperature, top_p), body,
                        max_tokens, backend.count(prompt))

    return app


def serve(target: str, host: str = "127.0.0.1", port: int = 8000, auth: str | None = None, name: str | None = None) -> None:
    """Load `target` and serve it until interrupted (what `tunesmith serve` runs)."""
    auth = auth or os.environ.get(AUTH_ENV) or None
    _check_bind(host, auth)
    run_app(build_app(target, auth=auth, name=name), host, port)


def run_app(app, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")
