"""GRPO in real Chromium, as a person who does not write code would set it up.

    pytest tests/studio/test_browser_grpo.py -m browser

Pick the bundled arithmetic questions, choose Reinforcement learning (GRPO), tick two rewards in
the picker, start a few steps on the demo model (CPU), and watch the reward chart and the table
of sampled answers fill in while it trains. The studio and its worker run as in conftest.py.
"""

from __future__ import annotations

import time

import pytest
from test_browser import _open_tab, _remove_datasets, _shown_yaml, _text_input, _toasts, _wait_for
from test_browser_finish import _pick

pytestmark = pytest.mark.browser

REWARD_LEGEND = "#loss-chart .legendtext"


def _set(box, value: str) -> None:
    box.fill(value)
    box.press("Tab")


def test_grpo_with_two_picked_rewards_fills_the_chart_and_the_samples_table(page):
    t0 = time.time()
    # Data: only the bundled arithmetic questions (the demo model's settings mix three chat sets).
    _open_tab(page, "2 · Data")
    _remove_datasets(page)
    _pick(page, "datasets", "arithmetic")
    _wait_for(lambda: "arithmetic" in page.locator("#datasets").inner_text(), 10, "arithmetic chosen")

    # LoRA on a 16-bit base: 4-bit (the default) is slow on a CPU
    _open_tab(page, "1 · Model")
    page.locator("#method").get_by_text("LoRA: small add-on, 16-bit base").click()

    _open_tab(page, "3 · Train")
    _pick(page, "objective", "Reinforcement learning (GRPO)")
    page.locator("#reward-regex-on").wait_for(state="visible")  # the picker shows with GRPO
    # Right number is ticked by default; tick two more: a pattern (any digit) and shorter-is-better.
    page.locator("#reward-regex-on input[type=checkbox]").check()
    pattern = _text_input(page, "reward-regex-pattern")
    pattern.fill(r"\d")
    pattern.press("Tab")  # a pattern of one's own (Enter would take a highlighted preset)
    page.locator("#reward-length_penalty-on input[type=checkbox]").check()
    _set(_text_input(page, "reward-length-target"), "40")
    settings = page.locator("#settings-grpo")
    _set(settings.get_by_label("Max completion length"), "8")
    _set(settings.get_by_label("Group size"), "4")
    steps = _text_input(page, "max-steps")
    steps.fill("2")
    steps.press("Tab")
    _text_input(page, "run-name").fill("grpo-picker")

    # What Start will run is what the picker shows (one schema with YAML).
    def picked():
        if _toasts(page):  # the form does not make a valid config: say why
            raise AssertionError(f"Show YAML: {_toasts(page)}")
        try:
            cfg = _shown_yaml(page)
        except AssertionError:  # the YAML did not change yet
            return None
        seen.append(cfg.objective_settings)
        names = [r["name"] for r in cfg.objective_settings.get("rewards", [])]
        return cfg if cfg.objective == "grpo" and names == ["numeric_match", "regex", "length_penalty"] \
            and cfg.objective_settings.get("max_completion_length") == 8 else None

    seen: list[dict] = []
    try:
        cfg = _wait_for(picked, 40, "the picked rewards in the YAML")
    except AssertionError as e:
        raise AssertionError(f"{e}; last shown: {seen[-1:]}") from None
    assert cfg.data.datasets == ["arithmetic"] and cfg.method == "lora"
    assert cfg.objective_settings["rewards"][1]["pattern"] == r"\d"
    assert cfg.objective_settings["rewards"][2]["max_chars"] == 40

    page.click("#start")
    _wait_for(lambda: "grpo-picker" in page.locator("#run-stats").inner_text(), 30, "the run in the monitor")
    legend = page.locator(REWARD_LEGEND)
    names = lambda: set(legend.evaluate_all("els => els.map(e => e.textContent)"))  # noqa: E731 - SVG text
    want = {"reward", "reward: regex", "reward: length_penalty"}
    try:
        _wait_for(lambda: want <= names(), 120, "reward lines on the chart")
    except AssertionError as e:
        raise AssertionError(f"{e}; the legend shows {names()}") from None
    table = page.locator("#samples-table")
    _wait_for(lambda: table.is_visible() and any(q in table.inner_text() for q in ("What is", "Compute")), 60,
              "sampled answers in the table")
    assert "regex" in table.inner_text() and "length_penalty" in table.inner_text()  # a score per reward
    assert page.locator("#grpo-length-chart .scatterlayer .trace").count() >= 1  # completion length per step
    _wait_for(lambda: "completed" in page.locator("#run-stats").inner_text().lower(), 120, "the run to complete")
    assert not [t for t in _toasts(page) if "Error" in t]
    print(f"grpo browser test took {time.time() - t0:.0f}s")
