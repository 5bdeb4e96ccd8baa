"""The first-time guide strip says what is done and what is next; empty tabs say to train first."""

from __future__ import annotations

from pathlib import Path

from tunesmith.engine import paths
from tunesmith.studio.guide import GuideState, current_state, empty_flags, guide_html


def _state(**changes) -> GuideState:
    base = dict(model="tunesmith/demo", datasets=("identity",), any_run=False, training=False, trained=False,
                chatted=False, exported=False)
    return GuideState(**{**base, **changes})


def test_next_step_follows_what_the_person_did():
    assert _state(model="").next_step() == "model"
    assert _state(datasets=()).next_step() == "data"
    assert _state().next_step() == "train"
    assert _state(any_run=True, trained=True).next_step() == "chat"
    assert _state(any_run=True, trained=True, chatted=True).next_step() == "export"
    assert _state(any_run=True, trained=True, chatted=True, exported=True).next_step() is None
    # Chatting with the base model does not count as trying a trained run.
    assert _state(chatted=True).done()["chat"] is False


def test_the_strip_names_the_next_step_in_both_languages():
    en = guide_html(_state(), "en")
    assert "Next: press Start training" in en and 'class="ts-guide-next" data-step="train"' in en
    assert en.count('class="ts-guide-done"') == 2  # model and data
    zh = guide_html(_state(), "zh-CN")
    assert "开始训练" in zh and "Next:" not in zh
    assert "Training is under way" in guide_html(_state(any_run=True, training=True), "en")
    assert "All done" in guide_html(_state(any_run=True, trained=True, chatted=True, exported=True), "en")


def test_empty_tabs_until_a_run_can_chat():
    flags = empty_flags(_state())
    assert flags == {"runs": True, "chat": True, "export": True, "evaluate": True}
    flags = empty_flags(_state(any_run=True, training=True))
    assert flags == {"runs": False, "chat": True, "export": True, "evaluate": True}
    assert not any(empty_flags(_state(any_run=True, trained=True)).values())


def test_state_is_read_from_the_engine(fresh_home: Path):
    s = current_state("tunesmith/demo", ["identity"], None)
    assert (s.any_run, s.trained, s.exported, s.chatted) == (False, False, False, False)
    (paths.exports_dir() / "some-run" / "adapter").mkdir(parents=True)
    assert current_state("tunesmith/demo", ["identity"], True).exported
