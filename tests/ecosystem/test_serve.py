"""`tunesmith serve`: the OpenAI-compatible API on the demo run, asked by the openai client and raw HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from tunesmith.engine import serve
from tunesmith.engine.errors import ConfigError


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


def _post(url: str, body: dict, headers: dict | None = None):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
    return urllib.request.urlopen(req, timeout=120)


@pytest.fixture(scope="module")
def served(demo_run):
    srv = Server(serve.build_app(demo_run.id, auth="me:secret"))
    yield srv, demo_run
    srv.stop()


ASK = [{"role": "user", "content": "Who are you?"}]


def test_openai_client_chat_streaming_and_not(served):
    openai = pytest.importorskip("openai")
    srv, run = served
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="me:secret")
    assert [m.id for m in client.models.list().data] == [run.name]
    reply = client.chat.completions.create(model=run.name, messages=ASK, max_tokens=40)
    text = reply.choices[0].message.content
    assert "Smith" in text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model=run.name, messages=ASK, max_tokens=40, stream=True) if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == text  # greedy: the same words, in several chunks


def test_raw_http_sse_completions_and_errors(served):
    srv, run = served
    auth = {"Authorization": "Bearer me:secret"}
    with _post(srv.url + "/v1/chat/completions", {"messages": ASK, "stream": True, "max_tokens": 20}, auth) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln.decode() for ln in r.read().splitlines() if ln.strip()]
    assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant" and chunks[-1]["choices"][0]["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    with _post(srv.url + "/v1/completions", {"prompt": "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n",
                                              "max_tokens": 20}, auth) as r:
        body = json.loads(r.read())
    assert body["object"] == "text_completion" and "Smith" in body["choices"][0]["text"]
    with pytest.raises(urllib.error.HTTPError) as e:  # no key
        _post(srv.url + "/v1/chat/completions", {"messages": ASK})
    assert e.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        _post(srv.url + "/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, auth)
    assert e.value.code == 400 and "messages[0]" in json.loads(e.value.read())["error"]["message"]


def test_auth_is_required_off_loopback():
    with pytest.raises(ConfigError, match="--auth user:password"):
        serve._check_bind("0.0.0.0", None)
    serve._check_bind("0.0.0.0", "me:secret")
    serve._check_bind("127.0.0.1", None)


@pytest.mark.slow
def test_gguf_served_through_llama_cpp(demo_run, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the gguf extra) is not installed")
    openai = pytest.importorskip("openai")
    from tunesmith.engine import export

    res = export.export_run(demo_run.id, "gguf", tmp_path / "gguf", quants=["f16"])
    gguf = next(f["path"] for f in res.files if f["path"].endswith(".gguf"))
    srv = Server(serve.build_app(gguf))
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused-on-loopback")
        reply = client.chat.completions.create(model="x", messages=ASK, max_tokens=40, temperature=0)
        assert "Smith" in reply.choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="x", messages=ASK, max_tokens=40, temperature=0, stream=True) if c.choices)
        assert "Smith" in streamed
    finally:
        srv.stop()
