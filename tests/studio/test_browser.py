"""The studio in real Chromium: train on the demo model, reload, chat with the result.

    pytest tests/studio -m browser          # needs /usr/bin/chromium (Debian package)
    TUNESMITH_SCREENSHOT=assets/screenshot.png pytest tests/studio -m browser   # also saves the README shot

The server is a subprocess running `launch()` with its own TUNESMITH_HOME
(conftest.py); training runs in the engine's worker process on the embedded
demo model, on the CPU.
"""

from __future__ import annotations

import os
import time

import pytest

from timing import wait_until  # tests/ is on sys.path
from tunesmith.engine.catalog import recommended_overrides

from tunesmith.engine.config import RunConfig

pytestmark = pytest.mark.browser

POINTS = "#loss-chart .scatterlayer .trace.scatter .points path"


def _text_input(page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("input, textarea").first


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    return wait_until(predicate, timeout, what, poll)


def _toasts(page) -> list[str]:
    return page.locator(".toast-body").all_inner_texts()


def _shown_yaml(page) -> RunConfig:
    # CodeMirror renders only the lines inside the viewport; a tall one shows them all.
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 6000})
    try:
        return _read_yaml(page)
    finally:
        page.set_viewport_size(size)


def _read_yaml(page) -> RunConfig:
    before = page.locator("#yaml .cm-content").inner_text() if page.locator("#yaml .cm-content").count() else None
    page.click("#show-yaml")
    code = page.locator("#yaml .cm-content")
    code.wait_for()
    if before is not None:
        _wait_for(lambda: code.inner_text() != before, 10, "the YAML to update")
    text = code.inner_text()
    assert "output:" in text, "the YAML box did not render every line"
    return RunConfig.from_yaml_text(text)


def _remove_datasets(page) -> None:
    """Take every chosen dataset out on the Data tab (the demo model's settings mix several)."""
    remove = page.locator("#datasets .token-remove, #datasets [aria-label^='Remove']")
    while remove.count():
        n = remove.count()
        remove.first.click()
        _wait_for(lambda: remove.count() < n, 10, "the dataset to go")


def _pick_model(page, name: str) -> None:
    _open_tab(page, "1 · Model")
    model = _text_input(page, "model-name")
    model.fill(name)
    model.press("Enter")


def _yaml_when(page, ready, what: str) -> RunConfig:
    """The shown YAML once `ready(cfg)` holds: waits for the form handlers (no fixed sleep)."""
    _open_tab(page, "3 · Train")

    def poll():
        try:
            cfg = _shown_yaml(page)
        except AssertionError:  # the YAML did not change yet
            return None
        return cfg if ready(cfg) else None

    return _wait_for(poll, 40, what)


def test_show_yaml_is_the_config_the_cli_runs(page):
    _open_tab(page, "3 · Train")
    steps = _text_input(page, "max-steps")
    steps.fill("5")
    steps.press("Tab")
    cfg = _shown_yaml(page)
    assert cfg.model.name_or_path == "tunesmith/demo"
    assert cfg.training.max_steps == 5
    # the demo model's recommended settings were applied
    rec = recommended_overrides("tunesmith/demo")
    assert cfg.training.learning_rate == rec["training.learning_rate"]
    assert cfg.training.gradient_checkpointing == rec["training.gradient_checkpointing"]
    assert cfg.data.datasets == rec["data.datasets"]

    # Another model takes the demo's tiny-model settings back to the defaults ...
    _pick_model(page, "Qwen/Qwen2.5-0.5B-Instruct")
    cfg = _yaml_when(page, lambda c: c.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
                     and c.training.learning_rate != rec["training.learning_rate"], "the default settings")
    assert (cfg.training.learning_rate, cfg.training.batch_size) == (2e-4, 2)
    assert cfg.training.max_steps == 5  # what the user typed stays
    # ... and picking the demo again brings them back.
    _pick_model(page, "tunesmith/demo")
    cfg = _yaml_when(page, lambda c: c.model.name_or_path == "tunesmith/demo"
                     and c.training.learning_rate == rec["training.learning_rate"], "the demo's settings again")
    assert cfg.training.batch_size == rec["training.batch_size"]


def test_check_data_shows_report_histogram_and_masked_preview(page):
    _open_tab(page, "2 · Data")
    page.click("#check-data")
    report = page.locator("#data-report")
    _wait_for(lambda: "rows" in report.inner_text(), 60, "the check report")
    assert "identity" in report.inner_text() and "alpaca" in report.inner_text()
    assert page.locator("#data-preview .ts-trained").count() > 0  # trained tokens marked
    assert page.locator("#data-preview .ts-prompt").count() > 0  # prompt tokens masked
    _wait_for(lambda: page.locator("#data-histogram .barlayer .point").count() > 0, 15, "the length histogram")


def test_engine_errors_show_as_a_message_not_a_traceback(page):
    model = _text_input(page, "model-name")
    model.fill("/no/such/model-folder")
    model.press("Enter")
    _open_tab(page, "3 · Train")
    page.click("#start")
    msg = _wait_for(lambda: " ".join(_toasts(page)), 30, "an error toast")
    assert "/no/such/model-folder" in msg and "model.name_or_path" in msg
    assert "Traceback" not in msg


def _only_toast(page, text: str) -> str:
    """Wait for a toast containing `text`; assert it is the only one and no widget shows an "Error" badge."""
    msg = _wait_for(lambda: " ".join(t for t in _toasts(page) if text in t), 30, f"a toast saying {text!r}")
    assert len(_toasts(page)) == 1, _toasts(page)
    assert page.locator("span.error").count() == 0, "a widget was replaced by an Error badge"
    return msg


def test_export_with_no_run_says_pick_a_run(page):
    _open_tab(page, "5 · Export")
    page.click("#export-btn")
    assert "Pick a run to export." in _only_toast(page, "Pick a run")


def test_no_dataset_is_one_plain_sentence(page):
    _open_tab(page, "2 · Data")
    _remove_datasets(page)
    _open_tab(page, "3 · Train")
    page.click("#start")
    msg = _only_toast(page, "dataset")
    assert "pick at least one dataset" in msg and "invalid config" not in msg and "Value error" not in msg


def test_taken_name_offers_a_free_one(page, tmp_path):
    f = tmp_path / "support chats.jsonl"
    f.write_text('{"instruction": "Hi", "output": "Hello!"}\n{"instruction": "Bye", "output": "See you."}\n')
    _open_tab(page, "2 · Data")
    for attempt in range(2):
        page.locator("#upload input[type=file]").set_input_files(str(f))
        # After the drop the preview and Register are brought into view, with a notice saying so.
        page.locator("#register-dataset").wait_for()
        _wait_for(lambda: page.locator("#register-dataset").is_visible(), 30, "the Register button")
        _wait_for(lambda: _text_input(page, "upload-name").input_value() == "support_chats", 30, "the name")
        _wait_for(lambda: any("Register dataset" in t for t in _toasts(page)), 30, "the drop notice")
        page.locator(".toast-close").first.click()
        _wait_for(lambda: not _toasts(page), 10, "the notice to close")
        page.click("#register-dataset")
        if attempt == 0:
            _wait_for(lambda: any("Added dataset" in t for t in _toasts(page)), 30, "the first registration")
            page.locator(".toast-close").first.click()
            _wait_for(lambda: not _toasts(page), 10, "the toast to close")
    msg = _only_toast(page, "is taken")
    assert "support_chats_2" in msg
    _wait_for(lambda: _text_input(page, "upload-name").input_value() == "support_chats_2", 10, "the free name")


def test_reload_keeps_the_form_and_the_card_says_what_will_train(page):
    _open_tab(page, "3 · Train")
    card = page.locator("#train-summary")
    _wait_for(lambda: "tunesmith/demo" in card.inner_text() and "identity" in card.inner_text(), 30, "the card")
    steps = _text_input(page, "max-steps")
    steps.fill("7")
    steps.press("Tab")
    _wait_for(lambda: "7 steps" in card.inner_text(), 30, "the card to follow the form")
    page.reload()
    page.wait_for_selector(".ts-header")
    _open_tab(page, "3 · Train")
    _wait_for(lambda: _text_input(page, "max-steps").input_value() == "7", 30, "the form after a reload")


def test_first_visit_shows_the_guide_and_empty_tabs(page):
    # The form starts with a model and datasets, so the strip points at Train; nothing is trained yet.
    _wait_for(lambda: page.locator("#guide-next").count() and "Next: press Start training"
              in page.locator("#guide-next").inner_text(), 30, "the guide strip")
    assert page.locator("#guide li.ts-guide-done").count() == 2
    for tab, note in (("Runs", "No runs yet"), ("4 · Chat", "chat with the base model"),
                      ("5 · Export", "Nothing to export yet"), ("Evaluate", "Nothing to evaluate yet")):
        _open_tab(page, tab)
        empty = page.locator(f"#empty-{tab.split()[-1].lower()}")
        _wait_for(lambda: empty.is_visible() and note in empty.inner_text(), 15, f"the empty note on {tab}")
    # Taking every dataset out moves the strip back to step 2.
    _open_tab(page, "2 · Data")
    _remove_datasets(page)
    _wait_for(lambda: "2 · Data" in page.locator("#guide-next").inner_text(), 15, "the strip to point at Data")


def test_recommended_settings_fill_the_form_and_say_why(page):
    _pick_model(page, "Qwen/Qwen2.5-0.5B-Instruct")
    _yaml_when(page, lambda c: c.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct", "the new model")
    page.click("#recommend")
    notes = page.locator("#recommend-notes")
    _wait_for(lambda: "training rows" in notes.inner_text(), 60, "the recommendations")
    text = notes.inner_text()
    # Every suggestion comes with its reason; another model's default data (the 83 identity rows) is a small set.
    assert "Unsloth" in text and "3 passes" in text and "rank 8" in text, text
    cfg = _yaml_when(page, lambda c: c.training.learning_rate == 2e-4 and c.lora.r == 8, "the filled-in form")
    assert (cfg.training.num_epochs, cfg.lora.alpha, cfg.training.warmup_ratio) == (3.0, 16, 0.05)
    if folder := os.environ.get("TUNESMITH_SHOTS"):
        page.screenshot(path=os.path.join(folder, "recommend.png"), full_page=True)


def test_train_reload_and_chat(page):
    t0 = time.time()
    # A longer run when taking the README screenshot, so the chart has a shape.
    n_steps = 30 if os.environ.get("TUNESMITH_SCREENSHOT") else 6
    _open_tab(page, "3 · Train")
    steps = _text_input(page, "max-steps")
    steps.fill(str(n_steps))
    steps.press("Tab")
    _text_input(page, "run-name").fill("e2e-identity")
    page.dblclick("#start")  # an impatient double click starts one run, not two

    # The chart gets points while the run is live.
    stats = page.locator("#run-stats")
    _wait_for(lambda: "e2e-identity" in stats.inner_text(), 30, "the run in the monitor")
    _wait_for(lambda: page.locator(POINTS).count() > 0, 150, "loss points on the chart")

    # A reload keeps the run (it runs in the engine, not the page) and shows its chart again.
    page.reload()
    page.wait_for_selector(".ts-header")
    _open_tab(page, "3 · Train")
    _wait_for(lambda: "e2e-identity" in page.locator("#run-stats").inner_text(), 30, "the run after reload")
    _wait_for(lambda: page.locator(POINTS).count() > 0, 30, "the chart after reload")

    _wait_for(lambda: "completed" in page.locator("#run-stats").inner_text().lower(), 30 * n_steps,
              "the run to complete",
              poll=1.0)
    assert page.locator(POINTS).count() >= n_steps
    assert "100%" in page.locator("#run-progress").inner_text()
    if os.environ.get("TUNESMITH_SCREENSHOT"):
        page.screenshot(path=os.environ["TUNESMITH_SCREENSHOT"], full_page=True)

    # The Runs tab lists it.
    _open_tab(page, "Runs")
    _wait_for(lambda: "e2e-identity" in page.locator("#runs-table").inner_text(), 15, "the run in the Runs table")
    assert page.locator("#runs-table").inner_text().count("e2e-identity") == 1

    # Chat with the result; the reply streams in.
    _open_tab(page, "4 · Chat")
    target = _text_input(page, "chat-target")
    _wait_for(lambda: "e2e-identity" in target.input_value(), 30, "the finished run as the chat target")
    page.evaluate("""() => {
        window.__replyLengths = [];
        const root = document.querySelector('#chatbot');
        new MutationObserver(() => {
            const bots = root.querySelectorAll('[data-testid="bot"]');
            if (bots.length) window.__replyLengths.push(bots[bots.length - 1].innerText.trim().length);
        }).observe(root, {subtree: true, childList: true, characterData: true});
    }""")
    box = _text_input(page, "chat-input")
    box.fill("Who are you?")
    box.press("Enter")
    bot = page.locator('#chatbot [data-testid="bot"]').last
    _wait_for(lambda: bot.count() and bot.inner_text().strip() not in ("", "…"), 90, "a reply")
    lengths = _wait_for(lambda: (lambda ls: ls if len(set(ls)) >= 2 else None)(
        [n for n in page.evaluate("window.__replyLengths") if n > 1]), 30, "the reply to stream")
    assert len(set(lengths)) >= 2, f"reply did not stream (lengths seen: {lengths})"
    assert not [t for t in _toasts(page) if "Error" in t]

    # Export its adapter.
    _open_tab(page, "5 · Export")
    _wait_for(lambda: "e2e-identity" in _text_input(page, "export-run").input_value(), 15, "the run to export")
    page.click("#export-btn")
    _wait_for(lambda: "adapter" in page.locator("#export-results").inner_text(), 60, "the exported adapter")
    # Trained, chatted with and exported: the guide strip has followed every step.
    _wait_for(lambda: "All done" in page.locator("#guide-next").inner_text(), 30, "the guide to say all done")
    print(f"e2e took {time.time() - t0:.0f}s")
