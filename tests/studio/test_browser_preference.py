"""Preference training in real Chromium: pick DPO, start it, watch the reward margin grow, and get
its settings back after a reload and from Runs -> Reuse its settings.

    pytest tests/studio/test_browser_preference.py -m browser

The demo model trains on the bundled preference set (preference_pairs) in the engine's worker,
on the CPU; about a minute here.
"""

from __future__ import annotations

import pytest
from test_browser import _open_tab, _remove_datasets, _text_input, _toasts, _wait_for
from test_browser_finish import _open, _pick

pytestmark = pytest.mark.browser

# The y values of the chart's "reward margin" series (studio/monitor.py), or null.
MARGINS = """() => {
    const gd = document.querySelector('#loss-chart .js-plotly-plot');
    const t = gd && gd.data ? gd.data.find(t => t.name === 'reward margin') : null;
    return t ? Array.from(t.y) : null;
}"""


def _dpo_settings_shown(page) -> tuple[str, str, str]:
    return (_text_input(page, "objective").input_value(), _text_input(page, "dpo-beta").input_value(),
            _text_input(page, "dpo-loss-type").input_value())


def _shows_our_dpo(page) -> bool:
    objective, beta, loss = _dpo_settings_shown(page)
    return "DPO" in objective and beta and float(beta) == 0.2 and loss == "hinge"


def test_dpo_in_the_studio_grows_the_reward_margin_and_keeps_its_settings(page, browser, studio_url):
    _open_tab(page, "2 · Data")
    _remove_datasets(page)
    _pick(page, "datasets", "preference_pairs")
    _wait_for(lambda: "preference_pairs" in page.locator("#datasets").inner_text(), 10, "the preference set")

    # Preference pairs under the default objective (SFT): Start asks before anything trains.
    _open_tab(page, "3 · Train")
    page.click("#start")
    msg = _wait_for(lambda: " ".join(t for t in _toasts(page) if "Press Start again" in t), 30, "Start to ask")
    assert "learns the chosen replies only" in msg and "DPO" in msg
    assert "No run yet" in page.locator("#run-stats").inner_text()  # nothing was started
    page.locator(".toast-close").first.click()

    _pick(page, "objective", "Prefer A over B (DPO)")
    _wait_for(lambda: page.locator("#settings-dpo").is_visible(), 15, "the DPO settings")
    assert "base model" in page.locator("#objective-note").inner_text()
    beta = _text_input(page, "dpo-beta")
    beta.fill("0.2")
    beta.press("Tab")
    _pick(page, "dpo-loss-type", "hinge")

    _open_tab(page, "3 · Train")
    steps = _text_input(page, "max-steps")
    steps.fill("10")
    steps.press("Tab")
    _text_input(page, "run-name").fill("browser-dpo")
    _wait_for(lambda: "10 steps" in page.locator("#train-summary").inner_text(), 30, "the card to follow the form")
    page.click("#start")
    _wait_for(lambda: "browser-dpo" in page.locator("#run-stats").inner_text(), 30, "the run in the monitor")
    # the margin starts at 0 (the adapter starts as the identity: policy == reference) and grows
    margins = _wait_for(lambda: (lambda m: m if m and len(m) >= 3 and m[-1] > m[0] + 1e-3 else None)(
        page.evaluate(MARGINS)), 150, "a growing reward margin on the chart")
    assert abs(margins[0]) < 1e-3, margins
    assert not [t for t in _toasts(page) if "Error" in t]
    _wait_for(lambda: "completed" in page.locator("#run-stats").inner_text().lower(), 120, "the run to complete")

    # A reload brings the form back, the objective's settings included.
    page.reload()
    page.wait_for_selector(".ts-header")
    _open_tab(page, "3 · Train")
    _wait_for(lambda: _shows_our_dpo(page), 30, "DPO, beta 0.2 and hinge after a reload")

    # A fresh browser (the default form: SFT) gets them from the run: Runs -> Reuse its settings.
    ctx, other = _open(browser, studio_url)
    try:
        _open_tab(other, "3 · Train")
        _wait_for(lambda: "SFT" in _text_input(other, "objective").input_value(), 15, "the default objective")
        _open_tab(other, "Runs")
        _pick(other, "runs-pick", "browser-dpo")
        other.click("#runs-reuse")
        _wait_for(lambda: other.locator("#settings-dpo").is_visible() and _shows_our_dpo(other), 30,
                  "DPO, beta 0.2 and hinge from Reuse its settings")
    finally:
        ctx.close()
