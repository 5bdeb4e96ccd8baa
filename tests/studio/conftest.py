"""Fixtures for the studio tests: a studio server on a free port and real Chromium.

The server runs in a subprocess with its own TUNESMITH_HOME, exactly as
`tunesmith studio` runs it; workers it starts write only under that home.
Browser tests are skipped (with the reason) when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("TUNESMITH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tunesmith-home")


@pytest.fixture(scope="module")
def studio_url(studio_home: Path, tmp_path_factory):
    """Start `launch()` in a subprocess; yield its URL; stop it (runs it started finish on their own)."""
    yield from serve_studio(studio_home, tmp_path_factory)


@pytest.fixture(scope="module")
def trained_studio_url(request, tunesmith_home, tmp_path_factory):
    """A studio over the session's TUNESMITH_HOME, started once the module's `runs` fixture has
    trained what it needs there."""
    request.getfixturevalue("runs")
    yield from serve_studio(tunesmith_home, tmp_path_factory)


def serve_studio(studio_home: Path, tmp_path_factory):
    """Run the studio over `studio_home` until the generator is closed (a fixture body)."""
    port = free_port()
    log = studio_home / "studio.log"
    env = dict(os.environ, TUNESMITH_HOME=str(studio_home), GRADIO_ANALYTICS_ENABLED="False",
               HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("TUNESMITH_AUTH", None)
    with open(log, "wb") as out:
        # cwd outside the checkout, as a user's would be.
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from tunesmith.studio.app import launch; launch(port={port})"],
            cwd=str(tmp_path_factory.mktemp("cwd")), env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"studio exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"studio did not answer in 90 s:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (CI does) or set TUNESMITH_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, studio_url):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(studio_url)
    pg.wait_for_selector(".ts-header")
    yield pg
    ctx.close()
