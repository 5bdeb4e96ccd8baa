"""After preference training, in real Chromium: the Evaluate tab scores a DPO run on its held-out
pairs (in English and in Chinese), and the Chat tab scores a reply with a reward model.

    pytest tests/studio/test_browser_preference_eval.py -m browser
    TUNESMITH_SHOTS=/tmp/shots pytest ...   # also save screenshots of the Evaluate view to look at

A short DPO run and a short reward run (about 10 s each on 2 cores) are trained through the job
manager before the studio starts, in a TUNESMITH_HOME of their own: other tests count the reward
runs of the session's home.
"""

from __future__ import annotations

import re

import pytest
from conftest import serve_studio
from preference_runs import train_preference_run
from test_browser import _open_tab, _text_input, _toasts, _wait_for
from test_browser_finish import _open, _pick, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(dpo run, reward run, their home)."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("pref-studio-home")
        mp.setenv("TUNESMITH_HOME", str(home))
        yield train_preference_run("dpo", "eval-dpo"), train_preference_run("reward", "eval-reward"), home


@pytest.fixture(scope="module")
def studio_url(runs, tmp_path_factory):
    yield from serve_studio(runs[2], tmp_path_factory)


def _evaluate(page, run_id: str, pairs: str, accuracy: str) -> str:
    """Evaluate the run on its held-out pairs; the scores table's text once it shows the base row."""
    page.get_by_role("tab", name=re.compile("Evaluate|评估")).click()
    _pick(page, "eval-run", run_id)
    _wait_for(lambda: pairs in page.locator("#eval-rows").inner_text(), 30, "the form to speak of pairs")
    page.click("#eval-start")
    return _wait_for(lambda: (lambda t: t if accuracy in t and "%" in t else None)(
        page.locator("#eval-scores").inner_text()), 120, "the preference scores")


def _score(text: str, metric: str) -> str:
    """The fine-tuned model's value of `metric` in the scores table (its text has one cell a line)."""
    cells = [c.strip() for c in text.splitlines() if c.strip()]
    return cells[cells.index(metric) + 1]


def test_evaluate_shows_preference_scores_for_a_dpo_run(page, browser, studio_url, runs):
    dpo, _, _ = runs
    text = _evaluate(page, dpo.id, "How many pairs", "preference accuracy")
    assert "base model" in text and "log-prob accuracy" in text and "exact match" not in text
    accuracy, margin = int(_score(text, "preference accuracy").rstrip("%")), float(_score(text, "margin"))
    assert accuracy > 50 and margin > 0, text  # six steps taught it to prefer the chosen replies
    assert "0 by definition" in page.locator("#eval-hint").inner_text()
    table = page.locator("#eval-predictions").inner_text()
    assert "chosen reply" in table and "prefers chosen" in table and "✓" in table
    assert "assistant\n" not in table  # the questions as written, not the chat template's rendering
    assert page.locator("#eval-download a[download]").count() == 1
    assert not [t for t in _toasts(page) if "rror" in t]
    shot(page, "evaluate-preference-en")

    ctx, zh = _open(browser, studio_url, "zh-CN")
    try:
        text = _evaluate(zh, dpo.id, "成对数据数量", "偏好准确率")
        assert "基座模型" in text and "奖励差距" in text
        assert "按定义为 0" in zh.locator("#eval-hint").inner_text()
        assert "较好的回复" in zh.locator("#eval-predictions").inner_text()
        shot(zh, "evaluate-preference-zh")
    finally:
        ctx.close()


def test_chat_scores_a_reply_with_the_reward_model(page, runs):
    _, reward, _ = runs
    _open_tab(page, "4 · Chat")
    page.get_by_text("Score replies with a reward model").click()
    # only runs that saved a score head are offered: the reward run, not the DPO run
    _wait_for(lambda: reward.id in _text_input(page, "score-model").input_value(), 30, "the reward model picked")
    page.locator("#score-model").locator("input").click()
    offered = [t.replace("✓", "").strip() for t in page.locator("#score-model ul.option-list li").all_inner_texts()]
    assert offered == [f"eval-reward ({reward.id})"]
    page.keyboard.press("Escape")

    page.click("#score-btn")  # nothing to score yet: one plain sentence
    _wait_for(lambda: any("no reply to score" in t for t in _toasts(page)), 30, "the no-reply message")

    box = _text_input(page, "chat-input")
    box.fill("What is the capital of France?")
    box.press("Enter")
    bot = page.locator('#chatbot [data-testid="bot"]').last
    _wait_for(lambda: bot.count() and bot.inner_text().strip() not in ("", "…"), 120, "a reply")
    page.click("#score-btn")
    result = _wait_for(lambda: (lambda t: t if re.search(r"Reply: [+-]\d+\.\d{3}", t) else None)(
        page.locator("#score-result").inner_text()), 120, "the reply's score")
    assert "Higher is better" in result and not [t for t in _toasts(page) if "rror" in t]
