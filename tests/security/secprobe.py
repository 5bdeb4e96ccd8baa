"""Helpers of the security suite: the real studio (`tunesmith webui` in a subprocess),
an attacker's HTTP client for its API, and the probe count.

Every probe goes through `PROBES.refuse(name, ok)` (or `PROBES.works(...)` for a
use that must stay open); conftest.py prints the totals at the end of the run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

SECRET = "TOPSECRET-7f3a9c"  # in files the studio must never show
UPLOAD_MB = 48  # the loopback studio's upload limit (--max-upload-mb)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- counting probes ------------------------------------------------------------------------


@dataclass
class Probes:
    refused: list[tuple[str, bool]] = field(default_factory=list)
    allowed: list[tuple[str, bool]] = field(default_factory=list)

    def refuse(self, name: str, ok: bool, detail: str = "") -> None:
        """Record an attack probe; `ok` means it was refused. Fails the test when it was not."""
        self.refused.append((name, bool(ok)))
        assert ok, f"probe not refused: {name}: {detail[:600]}"

    def works(self, name: str, ok: bool, detail: str = "") -> None:
        """Record a legitimate use that must still work."""
        self.allowed.append((name, bool(ok)))
        assert ok, f"allowed use failed: {name}: {detail[:600]}"


PROBES = Probes()


# ---- the studio ---------------------------------------------------------------------------------


@dataclass
class Studio:
    url: str  # http://127.0.0.1:PORT/
    port: int
    home: Path
    proc: subprocess.Popen
    log: Path

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, **kw)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_studio(home: Path, cwd: Path, args: list[str], env: dict | None = None) -> Studio:
    """`tunesmith webui ARGS --port P` with its own TUNESMITH_HOME; waits until it answers."""
    port = free_port()
    log = home.parent / f"studio-{port}.log"
    full_env = dict(os.environ, TUNESMITH_HOME=str(home), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
                    PYTHONUNBUFFERED="1", GRADIO_TEMP_DIR=str(home.parent / f"gradio-tmp-{port}"))
    for k in ("TUNESMITH_AUTH", "TUNESMITH_ALLOW_DIRS", "TUNESMITH_ALLOW_HOSTS", "TUNESMITH_LOGIN_FILE",
              "TUNESMITH_MAX_UPLOAD_MB"):
        full_env.pop(k, None)
    full_env.update(env or {})
    exe = [sys.executable, "-c", "from tunesmith.cli.main import entry; entry()"]
    with open(log, "wb") as out:
        # cwd outside the checkout, as a user's would be.
        proc = subprocess.Popen([*exe, "webui", *args, "--port", str(port)], cwd=str(cwd), env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    studio = Studio(f"http://127.0.0.1:{port}/", port, home, proc, log)
    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"studio exited with {proc.returncode}:\n{studio.log_text()[-3000:]}")
        try:
            if httpx.get(studio.url, timeout=2).status_code == 200:
                return studio
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"studio did not answer in 120 s:\n{studio.log_text()[-3000:]}")
        time.sleep(0.3)


def stop_studio(studio: Studio) -> None:
    studio.proc.terminate()
    try:
        studio.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        studio.proc.kill()


def fake_run(home: Path, name: str, with_adapter: bool = True) -> str:
    """A completed run in `home`'s registry (with a small adapter folder to export)."""
    code = f"""
import json, time
from pathlib import Path
from tunesmith.engine import registry
from tunesmith.engine.jobs import RunInfo
run_id = "20250101-000000-{uuid.uuid4().hex[:4]}"
run_dir = Path({str(home)!r}) / "runs" / run_id
(run_dir / "adapter").mkdir(parents=True)
if {with_adapter}:
    (run_dir / "adapter" / "adapter_config.json").write_text('{{"peft_type": "LORA"}}')
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"0" * 64)
lines = [{{"type": "train", "step": 3, "max_steps": 3, "loss": 1.25, "time": 1}},
         {{"type": "status", "status": "completed", "message": "", "time": 2}}]
(run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\\n" for x in lines))
registry.insert(RunInfo(id=run_id, name={name!r}, status="running", model="tunesmith/demo", datasets=["identity"],
                        method="lora", run_dir=run_dir, created_at=time.time(), max_steps=3))
registry.update(run_id, status="running", started_at=time.time())  # as the scheduler marks a run it starts
registry.update(run_id, status="completed", finished_at=time.time(), step=3, last_loss=1.25)  # and settles it
print(run_id)
"""
    env = dict(os.environ, TUNESMITH_HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=str(home))
    return out.stdout.strip().splitlines()[-1]


# ---- calling endpoints as an attacker would ----------------------------------------------------


def _skipped(value) -> bool:
    """An output left as it was: None, gr.skip() ({"__type__": "update"}), or an update of skips only."""
    if value is None:
        return True
    return (isinstance(value, dict) and value.get("__type__") == "update"
            and all(_skipped(v) for k, v in value.items() if k != "__type__"))


class Api:
    """Calls named Gradio endpoints over plain HTTP (/gradio_api/call/NAME), filling every
    parameter with its default and overriding some by their label."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        r = client.get("gradio_api/info")
        r.raise_for_status()
        self.endpoints = r.json()["named_endpoints"]
        self.fn_index: dict | None = None

    def args(self, endpoint: str, **by_label) -> list:
        params = self.endpoints["/" + endpoint]["parameters"]
        out = []
        for p in params:
            label = p.get("label") or p.get("parameter_name")
            if isinstance(label, dict):  # a translated label (gr.I18n): {"__type__": ..., "key": English text}
                label = label.get("key")
            if label in by_label:
                out.append(by_label.pop(label))
            elif p.get("parameter_has_default"):
                out.append(p.get("parameter_default"))
            elif "filepath" in json.dumps(p.get("python_type")):
                out.append(None)  # the example is a URL on the internet
            else:
                out.append(p.get("example_input"))
        assert not by_label, f"{endpoint} has no parameter labelled {list(by_label)}"
        return out

    def call(self, endpoint: str, session_hash: str | None = None, **by_label) -> tuple[str, object]:
        """("complete" | "error", data or error message) of one call.

        Through the queue (/queue/join + /queue/data), as the browser does, so the
        toasts come back too: the studio shows a refusal as a warning toast and skips
        every output (notices.toast_errors). A call that toasted a warning and changed
        nothing is answered ("error", {"error": the warning}), like a raised gr.Error."""
        if self.fn_index is None:
            r = self.client.get("config")
            r.raise_for_status()
            config = r.json()
            state_ids = {c["id"] for c in config["components"] if c.get("type") == "state"}
            self.fn_index = {d.get("api_name"): d.get("id", n) for n, d in enumerate(config["dependencies"])}
            # The API info leaves State inputs out; the queue wants a slot for each (Gradio fills it
            # from the session, whatever is sent).
            self.states = {d.get("api_name"): [i for i, c in enumerate(d["inputs"]) if c in state_ids]
                           for d in config["dependencies"]}
        session_hash = session_hash or uuid.uuid4().hex
        data = self.args(endpoint, **by_label)
        for i in self.states[endpoint]:
            data.insert(i, None)
        body = {"data": data, "fn_index": self.fn_index[endpoint],
                "session_hash": session_hash, "event_data": None, "trigger_id": None}
        r = self.client.post("gradio_api/queue/join", json=body)
        if r.status_code != 200:
            return f"http {r.status_code}", r.text
        event_id = r.json()["event_id"]
        warnings: list[str] = []
        event, data = "error", None
        with self.client.stream("GET", "gradio_api/queue/data", params={"session_hash": session_hash}) as s:
            for line in s.iter_lines():
                if not line.startswith("data: "):
                    continue
                msg = json.loads(line[6:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "log" and msg.get("level") in ("warning", "error"):
                    warnings.append(msg.get("log") or "")
                elif msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    if not msg.get("success"):
                        event, data = "error", {"error": out.get("error"), **out}
                    else:
                        event, data = "complete", out.get("data")
                    break
        skipped = isinstance(data, list) and all(_skipped(d) for d in data)
        if event == "complete" and warnings and skipped:
            return "error", {"error": " ".join(warnings)}
        return event, data
