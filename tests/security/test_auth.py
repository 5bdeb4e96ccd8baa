"""The studio on 0.0.0.0 behind its login, as the Docker image runs it: a generated password
kept hashed (TUNESMITH_LOGIN_FILE), nothing but the login page before login, login back-off.

    pytest tests/security/test_auth.py
"""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest
from secprobe import fake_run, start_studio, stop_studio

pytestmark = pytest.mark.slow  # each starts the real studio (tens of seconds on 2 cores)

RUN_NAME = "confidential-run-name-93d1"
PASSWORD_LINE = re.compile(r"user: (\S+)\s+password: (\S+)")

PRIVATE_GETS = ["config", "config/", "gradio_api/info", "gradio_api/info?all_endpoints=true", "gradio_api/openapi.json",
                "gradio_api/runs", "gradio_api/run-history/records", "gradio_api/file=/etc/passwd",
                "gradio_api/heartbeat/abc", "gradio_api/queue/data?session_hash=abc", "gradio_api/queue/status",
                "gradio_api/upload_progress?upload_id=abc", "gradio_api/app_id",
                "gradio_api/deep_link?session_hash=abc", "gradio_api/call/start_run/abc", "gradio_api/user",
                "gradio_api/token", "monitoring", "gradio_api/vibe-code", "gradio_api/profiling/summary",
                "gradio_api/stream/abc/0/1/playlist.m3u8", "docs", "redoc", "openapi.json"]
PRIVATE_POSTS = ["gradio_api/call/start_run", "gradio_api/call/v2/start_run", "gradio_api/queue/join",
                 "gradio_api/upload", "gradio_api/component_server", "gradio_api/cancel", "gradio_api/reset",
                 "gradio_api/run/predict", "gradio_api/api/start_run", "gradio_api/process_recording",
                 "gradio_api/vibe-edit", "gradio_api/stream/abc", "gradio_api/run-history/connect"]


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth")
    home, cwd = root / "home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    run_id = fake_run(home, RUN_NAME)
    env = {"TUNESMITH_LOGIN_FILE": str(home / "studio-login.json")}
    studio = start_studio(home, cwd, ["--host", "0.0.0.0"], env)
    found = PASSWORD_LINE.search(studio.log_text())
    assert found, studio.log_text()
    yield {"studio": studio, "home": home, "cwd": cwd, "env": env, "run": run_id, "user": found[1],
           "password": found[2]}
    stop_studio(studio)


def _login(c: httpx.Client, user: str, password: str) -> httpx.Response:
    return c.post("login", data={"username": user, "password": password})


def test_generated_password_is_printed_once_and_kept_hashed(remote, probes):
    stored = (remote["home"] / "studio-login.json").read_text()
    probes.refuse("the login file holds no password", remote["password"] not in stored and "scrypt$" in stored, stored)
    probes.refuse("the login file is private (0600)", (remote["home"] / "studio-login.json").stat().st_mode & 0o077 == 0)
    with remote["studio"].client() as c:
        probes.works("the printed password logs in", _login(c, remote["user"], remote["password"]).status_code == 200)


def test_before_login_only_the_login_page(remote, probes):
    studio = remote["studio"]
    with studio.client() as c:
        page = c.get("")
        assert _login(c, remote["user"], remote["password"]).status_code == 200
        endpoints = list(c.get("gradio_api/info").json()["named_endpoints"])
    assert len(endpoints) > 40
    text = page.text
    leaked = [e for e in endpoints if len(e) > 8 and e.strip("/") in text]
    probes.refuse("login page: no API description", page.status_code == 200 and '"auth_required":true' in text
                  and "named_endpoints" not in text and not leaked, f"{page.status_code} leaked {leaked}")
    probes.refuse("login page: no run names or ids", RUN_NAME not in text and remote["run"] not in text)
    probes.refuse("login page: no component values", "tunesmith/demo" not in text and "identity" not in text)
    with studio.client() as c:
        for path in PRIVATE_GETS:
            r = c.get(path)
            probes.refuse(f"before login: GET /{path}", r.status_code == 401 and RUN_NAME not in r.text,
                          f"{r.status_code} {r.text[:200]}")
        for path in PRIVATE_POSTS:
            r = c.post(path, json={"data": []})
            probes.refuse(f"before login: POST /{path}", r.status_code == 401, f"{r.status_code} {r.text[:200]}")
        for path in ("assets/index.html", "theme.css", "favicon.ico"):
            r = c.get(path)
            probes.works(f"before login: GET /{path} (the login page's files)", r.status_code in (200, 404)
                         and r.status_code != 401, str(r.status_code))


def test_after_login_the_studio_and_its_api_work(remote, probes):
    from gradio_client import Client

    studio = remote["studio"]
    with studio.client() as c:
        assert _login(c, remote["user"], remote["password"]).status_code == 200
        r = c.get("config")
        probes.works("after login: /config", r.status_code == 200 and "components" in r.text)
        page = c.get("")
        probes.works("after login: the page holds the studio", RUN_NAME in page.text or "named_endpoints" in page.text)
    client = Client(studio.url, auth=(remote["user"], remote["password"]), verbose=False)
    out = client.predict(["identity"], api_name="/describe_selection")
    probes.works("after login: gradio_client calls an endpoint", "identity" in out, str(out))


def test_failed_logins_back_off(remote, probes):
    studio, user, password = remote["studio"], remote["user"], remote["password"]
    with studio.client() as c:
        codes = [_login(c, user, f"wrong-{i}").status_code for i in range(5)]
        probes.works("the first 5 wrong passwords get 'incorrect credentials'", codes == [400] * 5, str(codes))
        r = _login(c, user, "wrong-6")
        probes.refuse("6th wrong password: told to wait", r.status_code == 429 and "wait" in r.json()["detail"]
                      and int(r.headers["retry-after"]) >= 1, f"{r.status_code} {r.text}")
        r = _login(c, user, password)
        probes.refuse("the right password while waiting is not checked", r.status_code == 429, r.text)
        t0 = time.monotonic()
        codes = [_login(c, user, f"guess-{i}").status_code for i in range(200)]
        elapsed = time.monotonic() - t0
        checked = codes.count(400)
        probes.refuse(f"200 guesses in {elapsed:.1f} s: {checked} checked", checked <= 8 and 200 not in codes,
                      str(codes))
    # Another address is not held back by this one's failures.
    other = httpx.Client(base_url=studio.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=60)
    with other:
        r = _login(other, user, password)
        probes.works("another client address logs in meanwhile", r.status_code == 200, f"{r.status_code} {r.text}")
    with studio.client() as c:
        deadline = time.monotonic() + 90
        while (r := _login(c, user, password)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(min(float(r.headers.get("retry-after", 1)), 20))
        probes.works("after the wait, the right password logs in", r.status_code == 200, r.text)


def test_host_check_when_bound_to_all_interfaces(remote, probes):
    studio = remote["studio"]
    with studio.client() as c:
        r = c.get("", headers={"Host": f"rebind.evil.example:{studio.port}"})
        probes.refuse("0.0.0.0: foreign Host", r.status_code == 403, r.text)
        r = c.post("login", data={"username": "a", "password": "b"},
                   headers={"Origin": "http://evil.example"})
        probes.refuse("0.0.0.0: login from a foreign page", r.status_code == 403, r.text)
        for host in (socket.gethostname(), "10.1.2.3", "[fe80::1]"):
            r = c.get("", headers={"Host": f"{host}:{studio.port}"})
            probes.works(f"0.0.0.0: Host {host} (this machine's name, an address)", r.status_code == 200)


def test_restart_keeps_the_generated_password(remote, probes):
    """Last in this module: it restarts the studio on the same volume."""
    stop_studio(remote["studio"])
    studio = start_studio(remote["home"], remote["cwd"], ["--host", "0.0.0.0"], remote["env"])
    remote["studio"] = studio
    log = studio.log_text()
    probes.refuse("a restart prints no password", not PASSWORD_LINE.search(log) and remote["password"] not in log, log)
    with studio.client() as c:
        probes.works("a restart keeps the same password", _login(c, remote["user"], remote["password"]).status_code
                     == 200)
    stored = json.loads((remote["home"] / "studio-login.json").read_text())
    assert stored["user"] == remote["user"]
