"""Finishing the job in real Chromium, as a person who does not write code would.

    pytest tests/studio/test_browser_finish.py -m browser

The studio runs over the session's TUNESMITH_HOME, which holds the trained demo
run (tests/conftest.py `demo_run`, shared with the CPU end-to-end test) and one
short run added here, so nothing is trained twice: download an export (a real
zip and a real GGUF), evaluate base vs tuned, chat with both side by side,
compare two runs, and read the whole page in Chinese.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from tunesmith.studio.locales.zh_cn import ZH

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def runs(demo_run):
    """(demo run, a short second run that finished after it)."""
    from tunesmith.engine import jobs
    from tunesmith.engine.catalog import demo_overrides_list
    from tunesmith.engine.config import RunConfig

    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        "data.datasets=[identity]", "training.max_steps=2", "training.learning_rate=0.001",
        "output.run_name=browser-short"])
    short = jobs.wait(jobs.submit(cfg), timeout=600)
    assert short.status == "completed", short.error
    return demo_run, short


@pytest.fixture(scope="module")
def finish_url(trained_studio_url):
    return trained_studio_url


def _open(browser, url: str, locale: str = "en-US"):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.goto(url)
    pg.wait_for_selector(".ts-header")
    return ctx, pg


@pytest.fixture
def page(browser, finish_url):
    ctx, pg = _open(browser, finish_url)
    yield pg
    ctx.close()


def _input(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("input, textarea").first


def _pick(page, elem_id: str, option: str) -> None:
    """Choose `option` (a visible label, matched in part) in a Gradio dropdown."""
    box = _input(page, elem_id)
    box.click()
    page.locator(f"#{elem_id} ul.option-list li", has_text=option).first.click()


def _download(page, link) -> Path:
    with page.expect_download() as info:
        link.click()
    return Path(info.value.path())


def shot(page, name: str) -> None:
    """Save a screenshot under $TUNESMITH_SHOTS (a folder) when it is set, to look at by eye."""
    import os

    if folder := os.environ.get("TUNESMITH_SHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _load_adapter(folder: Path) -> None:
    """The downloaded adapter loads with peft on the demo model and changes its answer's logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.engine.paths import demo_model_dir

    base = AutoModelForCausalLM.from_pretrained(str(demo_model_dir()))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, str(folder))
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def _load_gguf(path: Path) -> None:
    """The downloaded GGUF loads in llama.cpp and writes text."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (the gguf extra) is not installed")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    out = llm("Hello", max_tokens=4, temperature=0.0)
    assert out["choices"][0]["text"] is not None and out["usage"]["completion_tokens"] >= 1


def test_export_downloads_a_real_zip_and_gguf(page, runs, tmp_path):
    _, short = runs
    page.get_by_role("tab", name="5 · Export").click()
    # The run just trained (the newest to finish) is preselected.
    page.wait_for_function("name => document.querySelector('#export-run input').value.includes(name)", arg=short.name)
    page.get_by_label("GGUF (llama.cpp, Ollama, LM Studio)").check()
    page.click("#export-btn")
    links = page.locator("#export-downloads a[download]")
    page.wait_for_function("() => document.querySelectorAll('#export-downloads a[download]').length >= 2",
                           timeout=300_000)
    names = [link.evaluate("a => decodeURIComponent(a.download || a.href.split('/').pop())") for link in links.all()]
    assert any(n.endswith("adapter.zip") for n in names) and any(n.endswith(".gguf") for n in names), names
    assert "Error" not in page.locator("#export-results").inner_text()
    for i, name in enumerate(names):
        path = _download(page, links.nth(i))
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                assert "adapter/adapter_config.json" in zf.namelist()
                zf.extractall(tmp_path / "unzipped")
            _load_adapter(tmp_path / "unzipped" / "adapter")
        elif name.endswith(".gguf"):
            _load_gguf(path)
    shot(page, "export-downloads")
    # A run's settings, log and metrics download from the Runs tab.
    page.get_by_role("tab", name="Runs").click()
    _pick(page, "runs-pick", short.id)
    page.wait_for_function("() => document.querySelectorAll('#runs-files a[download]').length == 3")
    cfg = _download(page, page.locator("#runs-files a[href*=\"config.yaml\"]"))
    assert short.name in cfg.read_text()


def _watch_replies(page, *roots: str) -> None:
    """Record the length of the last reply in each chat column every time it changes (window.__lengths)."""
    page.evaluate("""(roots) => {
        window.__lengths = {};
        for (const id of roots) {
            window.__lengths[id] = [];
            const root = document.querySelector(id);
            new MutationObserver(() => {
                const bots = root.querySelectorAll('[data-testid="bot"]');
                if (bots.length) window.__lengths[id].push(bots[bots.length - 1].innerText.trim().length);
            }).observe(root, {subtree: true, childList: true, characterData: true});
        }
    }""", list(roots))


def _streamed(page, *roots: str) -> None:
    """Wait until every column's reply has been seen at two lengths at least (it grew while streaming)."""
    page.wait_for_function("""(roots) => roots.every(k => new Set(window.__lengths[k].filter(n => n > 1)).size >= 2)""",
                           arg=list(roots), timeout=120_000)


def test_chat_with_the_exported_gguf_and_the_guide_follows(page, runs):
    """The GGUF the export test wrote is a chat target (llama.cpp); the guide strip then marks every step done."""
    page.get_by_role("tab", name="4 · Chat").click()
    box = _input(page, "chat-target")
    box.click()
    option = page.locator("#chat-target ul.option-list li", has_text="GGUF:").first
    option.wait_for()
    option.click()
    assert box.input_value().startswith("GGUF:")
    _watch_replies(page, "#chatbot")
    message = _input(page, "chat-input")
    message.fill("Who are you?")
    message.press("Enter")
    _streamed(page, "#chatbot")
    assert page.locator('#chatbot [data-testid="bot"]').last.inner_text().strip()
    assert page.locator("span.error").count() == 0
    # Trained, chatted with, exported: the strip says so (it started at "Next: ask your trained run").
    page.wait_for_function("() => document.querySelector('#guide-next')?.innerText.startsWith('All done')")
    assert page.locator("#guide li.ts-guide-done").count() == 5
    shot(page, "gguf-chat")


def test_compare_chat_streams_two_columns(page, runs):
    demo, _ = runs
    page.get_by_role("tab", name="4 · Chat").click()
    _pick(page, "chat-target", demo.id)
    page.get_by_label("Compare side by side").check()
    page.wait_for_selector("#chatbot-b")
    page.wait_for_function("() => document.querySelector('#chat-target-b input').value.startsWith('Base')")
    _watch_replies(page, "#chatbot", "#chatbot-b")
    box = _input(page, "chat-input")
    box.fill("Who are you?")
    box.press("Enter")
    # Both columns answer; both replies grow while they stream.
    _streamed(page, "#chatbot", "#chatbot-b")
    assert page.locator('#chatbot [data-testid="bot"]').last.inner_text().strip()
    assert page.locator('#chatbot-b [data-testid="bot"]').last.inner_text().strip()
    assert page.locator("span.error").count() == 0
    shot(page, "compare-chat")


def test_evaluate_scores_base_and_tuned(page, runs):
    demo, _ = runs
    page.get_by_role("tab", name="Evaluate").click()
    _pick(page, "eval-run", demo.id)
    box = _input(page, "eval-data")
    box.fill("identity")
    box.press("Enter")
    rows = _input(page, "eval-rows")
    rows.fill("6")
    rows.press("Enter")
    page.click("#eval-start")
    page.wait_for_function("() => document.querySelector('#eval-scores').innerText.includes('base model')",
                           timeout=300_000)
    text = page.locator("#eval-scores").inner_text()
    rouge = {who: float(re.search(rf"{who}\s+\d+%\s+([\d.]+)", text).group(1)) for who in ("fine-tuned", "base model")}
    # Trained on who it is, the tuned model says it; the base model does not.
    assert rouge["fine-tuned"] > rouge["base model"], text
    answers = page.locator("#eval-predictions").inner_text()
    assert "Smith" in answers and "base answer" in answers
    assert page.locator("#eval-download a[download]").count() == 1
    shot(page, "evaluate")


def test_compare_two_runs(page, runs):
    demo, short = runs
    page.get_by_role("tab", name="Runs").click()
    page.get_by_text("Compare runs").click()
    for run in (demo, short):
        _pick(page, "runs-compare", run.id)
    page.click("#runs-compare-btn")
    page.wait_for_function("() => document.querySelector('#runs-compare-table')?.innerText.includes('max_steps')")
    # One curve per run on one chart, and the settings that differ in a table.
    page.wait_for_function("() => document.querySelectorAll('#runs-compare-chart .scatterlayer .trace').length >= 2")
    diff = page.locator("#runs-compare-table").inner_text()
    assert "training.max_steps" in diff and "output.run_name" in diff
    assert "model.name_or_path" not in diff  # the same in both
    shot(page, "compare-runs")


def _english_left(text: str) -> list[str]:
    """Catalogue strings still shown in English (those whose Chinese differs and read as words; single
    words are left out, as data in the page's tables may hold them)."""
    left = []
    for en, zh in ZH.items():
        plain = re.sub(r"[*#`]", "", en).strip()
        if en == zh or "{" in en or " " not in plain or not re.search(r"[a-z]{3}", plain):
            continue
        if plain in text:
            left.append(plain)
    return left


def test_zh_cn_page_is_chinese_and_the_switch_persists(browser, finish_url):
    ctx, page = _open(browser, finish_url, locale="zh-CN")
    try:
        page.wait_for_function("() => document.body.innerText.includes('开始训练') || "
                               "document.body.innerText.includes('模型')")
        seen = []
        for tab in ("1 · 模型", "2 · 数据", "3 · 训练", "4 · 对话", "5 · 导出", "评估", "运行记录"):
            page.get_by_role("tab", name=tab).click()
            page.get_by_role("tab", name=tab, selected=True).wait_for()
            for acc in page.locator("button.label-wrap:not(.open)").all():  # open every "Advanced" section
                if acc.is_visible():
                    acc.click()
            # The studio's own text: data (tables, chat, code) is the user's and stays as it is.
            text = page.evaluate("""() => { const c = document.body.cloneNode(true);
                c.querySelectorAll('table, .cm-editor, [data-testid=bot], [data-testid=user]').forEach(e => e.remove());
                return c.innerText; }""")
            seen.append(text)
            assert not _english_left(text), (tab, _english_left(text))
            shot(page, f"zh-{tab.split()[-1]}")
        assert "开始训练" in "".join(seen) and "检查数据" in "".join(seen)
        if zh_shot := __import__("os").environ.get("TUNESMITH_SCREENSHOT_ZH"):
            page.get_by_role("tab", name="3 · 训练").click()
            page.screenshot(path=zh_shot, full_page=True)
        # The switch changes the page in place, and the choice survives a reload.
        page.locator("#lang-switch label", has_text="English").click()
        page.wait_for_function("() => document.body.innerText.includes('Compare runs')")  # the Runs tab, in English
        page.reload()
        page.wait_for_selector(".ts-header")
        page.wait_for_function("() => document.body.innerText.includes('1 · Model')")
        assert "1 · 模型" not in page.locator("body").inner_text()
    finally:
        ctx.close()
