"""The login page in real Chromium: it logs in, and a client held back by failures is told why;
a file over the upload limit is refused with a message naming the limit.

    pytest tests/security/test_login_browser.py -m browser
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from secprobe import start_studio, stop_studio

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("TUNESMITH_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("login-browser")
    (root / "home").mkdir()
    (root / "cwd").mkdir()
    s = start_studio(root / "home", root / "cwd", ["--auth", "ann:correct-horse", "--max-upload-mb", "1"])
    yield s
    stop_studio(s)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (CI does) or set TUNESMITH_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _submit(page, user: str, password: str) -> None:
    page.locator("input").nth(0).fill(user)
    page.locator("input[type=password]").fill(password)
    page.locator("input[type=password]").press("Enter")


def test_login_then_back_off_message(browser, studio, probes, tmp_path):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.goto(studio.url)
    page.locator("input[type=password]").wait_for()
    _submit(page, "ann", "correct-horse")
    page.locator(".ts-header").wait_for()  # the studio itself, after Gradio's reload
    probes.works("browser: the login form logs in", page.get_by_role("tab", name="2 · Data").count() > 0)
    big = tmp_path / "big.jsonl"
    big.write_text('{"instruction": "q", "output": "a"}\n' * 60_000)  # 2 MB
    page.get_by_role("tab", name="2 · Data").click()
    page.locator("#upload input[type=file]").set_input_files(str(big))
    toast = page.locator(".toast-body", has_text="maximum allowed size")
    toast.wait_for()
    probes.refuse("browser: a 2 MB file over a 1 MB limit, with the limit shown",
                  "1.0 Mb" in toast.inner_text() and "big.jsonl" in toast.inner_text(), toast.inner_text())
    ctx.close()

    ctx = browser.new_context()
    page = ctx.new_page()
    page.set_default_timeout(30_000)
    page.goto(studio.url)
    page.locator("input[type=password]").wait_for()
    from playwright.sync_api import expect

    for i in range(5):
        _submit(page, "ann", f"wrong-{i}")
        expect(page.locator("input[type=password]")).to_have_value("")  # the form clears on its answer
    expect(page.get_by_text("Incorrect Credentials", exact=False)).to_be_visible()
    _submit(page, "ann", "wrong-again")
    banner = page.locator("#ts-login-wait")
    banner.wait_for()
    text = banner.inner_text()
    probes.refuse("browser: the 6th wrong password is held back, with the reason shown",
                  "Too many failed logins" in text and "wait" in text, text)
    ctx.close()
