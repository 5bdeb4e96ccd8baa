"""Requests a web page could make the browser send: foreign Host (DNS rebinding), foreign Origin
(cross-site requests), and oversized uploads. Real studio on loopback, real HTTP.

    pytest tests/security/test_http.py
"""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest
from secprobe import UPLOAD_MB

pytestmark = pytest.mark.slow  # each starts the real studio (tens of seconds on 2 cores)

START = "gradio_api/call/start_run"
JSON = {"data": []}  # a body Gradio cannot use: a 403 means the guard refused it first


def _runs(world) -> set[str]:
    return set(os.listdir(world["home"] / "runs"))


def test_foreign_host_is_refused(world, probes):
    studio = world["studio"]
    before = _runs(world)
    with studio.client() as c:
        for host in ("rebind.evil.example", f"rebind.evil.example:{studio.port}", "localhost.evil.example",
                     "127.0.0.1.nip.io", "LOCALHOST.evil.example."):
            for method, path in (("GET", ""), ("GET", "config"), ("GET", "gradio_api/info"), ("POST", START)):
                r = c.request(method, path, headers={"Host": host}, json=JSON if method == "POST" else None)
                probes.refuse(f"Host {host}: {method} /{path}", r.status_code == 403 and "--allow-host" in r.text,
                              f"{r.status_code} {r.text[:300]}")
        # DNS rebinding as a browser sends it: the attacker's name in both Host and Origin.
        r = c.post(START, json=JSON, headers={"Host": f"rebind.evil.example:{studio.port}",
                                               "Origin": f"http://rebind.evil.example:{studio.port}"})
        probes.refuse("DNS rebinding: start a run", r.status_code == 403, r.text)
    probes.refuse("foreign Host started no run", _runs(world) == before)


def test_request_without_host_is_refused(world, probes):
    with socket.create_connection(("127.0.0.1", world["studio"].port), timeout=30) as s:
        s.sendall(b"GET /config HTTP/1.0\r\n\r\n")
        head = s.recv(200).decode("latin-1")
    probes.refuse("HTTP/1.0 request with no Host", head.startswith("HTTP/1.1 403") or " 400 " in head, head)


def test_loopback_names_and_addresses_are_served(world, probes):
    port = world["studio"].port
    with world["studio"].client() as c:
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            r = c.get("config", headers={"Host": host})
            probes.works(f"Host {host}", r.status_code == 200, r.text[:200])


def test_foreign_origin_can_neither_change_nor_read(world, probes):
    port = world["studio"].port
    before = _runs(world)
    origins = ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}", f"http://localhost:{port + 1}",
               "file://", f"http://evil.example:{port}")
    with world["studio"].client() as c:
        for origin in origins:
            for path in (START, "gradio_api/queue/join", "gradio_api/upload", "gradio_api/cancel",
                         "gradio_api/component_server", "login"):
                r = c.post(path, json=JSON, headers={"Origin": origin})
                probes.refuse(f"Origin {origin}: POST /{path}", r.status_code == 403, f"{r.status_code} {r.text[:200]}")
            r = c.delete("gradio_api/queue/join", headers={"Origin": origin})
            probes.refuse(f"Origin {origin}: DELETE", r.status_code == 403, f"{r.status_code} {r.text[:200]}")
            # Reads too: Gradio's CORS rules let any localhost page read the config (the Runs table).
            r = c.get("config", headers={"Origin": origin})
            probes.refuse(f"Origin {origin}: GET /config", r.status_code == 403, f"{r.status_code} {r.text[:200]}")
    probes.refuse("foreign Origin started no run", _runs(world) == before)


def test_own_origin_and_scripts_pass(world, probes):
    port = world["studio"].port
    call, body = "gradio_api/call/describe_selection", {"data": [["identity"]]}
    with world["studio"].client() as c:
        for origin, host in ((f"http://127.0.0.1:{port}", None), (None, None),
                             (f"http://localhost:{port}", f"localhost:{port}")):
            headers = {k: v for k, v in (("Origin", origin), ("Host", host)) if v}
            r = c.post(call, json=body, headers=headers)
            probes.works(f"Origin {origin} Host {host}: a call is queued", r.status_code == 200 and "event_id" in r.text,
                         f"{r.status_code} {r.text[:200]}")


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_upload_cap(world, probes, tmp_path):
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate((UPLOAD_MB + 4) * 2**20)
    limit_text = f"upload limit ({UPLOAD_MB} MB)"
    with world["studio"].client() as c:
        # Announced size over the limit: refused before the body is read.
        with open(big, "rb") as fh:
            try:
                r = c.post("gradio_api/upload", files={"files": ("big.jsonl", fh)})
                ok, detail = r.status_code == 413 and limit_text in r.text, f"{r.status_code} {r.text[:300]}"
            except httpx.HTTPError as e:  # the studio answered 413 and closed while the body was still going
                ok, detail = False, repr(e)
        probes.refuse(f"upload of {UPLOAD_MB + 4} MB with a Content-Length", ok, detail)

        # No Content-Length (chunked): Gradio counts the file while it streams it to disk.
        def chunks():
            boundary = b"--xyz\r\n"
            yield boundary + b'Content-Disposition: form-data; name="files"; filename="big.jsonl"\r\n\r\n'
            block = b"0" * 2**20
            for _ in range(UPLOAD_MB + 4):
                yield block
            yield b"\r\n--xyz--\r\n"

        try:
            r = c.post("gradio_api/upload", content=chunks(),
                       headers={"Content-Type": "multipart/form-data; boundary=xyz"})
            ok, detail = r.status_code in (400, 413), f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as e:  # the studio stopped reading
            ok, detail = True, repr(e)
        probes.refuse(f"chunked upload of {UPLOAD_MB + 4} MB", ok, detail)
        tmp = world["home"].parent / f"gradio-tmp-{world['studio'].port}"
        kept = [p for p in tmp.rglob("*") if p.is_file() and p.stat().st_size > UPLOAD_MB * 2**20]
        probes.refuse("no file over the limit kept", not kept, str(kept))

        # Under the limit: accepted, streamed to disk (the studio's memory barely moves).
        size_mb = UPLOAD_MB - 8
        with open(big, "r+b") as f:
            f.truncate(size_mb * 2**20)
        pid = world["studio"].proc.pid
        rss0 = _rss_kb(pid)
        with open(big, "rb") as fh:
            r = c.post("gradio_api/upload", files={"files": ("big.jsonl", fh)})
        time.sleep(0.5)
        grew_mb = (_rss_kb(pid) - rss0) / 1024
        probes.works(f"upload of {size_mb} MB", r.status_code == 200 and r.json()[0].endswith("big.jsonl"), r.text)
        probes.works(f"a {size_mb} MB upload is streamed to disk (studio grew {grew_mb:.0f} MB)", grew_mb < size_mb / 2)


def test_oversized_request_body_is_refused(world, probes):
    with world["studio"].client() as c:
        r = c.post(START, content=b"[" + b"0," * (9 * 2**20) + b"0]", headers={"Content-Type": "application/json"})
        probes.refuse("an 18 MB JSON body", r.status_code == 413, f"{r.status_code} {r.text[:200]}")
