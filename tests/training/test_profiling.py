"""TUNESMITH_PROFILE_STEPS: a real run writes where its steps' time went, and only when asked."""

from __future__ import annotations

import pytest

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter
from tunesmith.engine.trainer import Recipe
from tunesmith.engine.training.profiling import ENV, parse_steps


def _train(tmp_path, name: str) -> None:
    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        "method=lora", "training.max_steps=3", "training.batch_size=2", "training.save_steps=1000"])
    run = tmp_path / name
    run.mkdir()
    recipe = Recipe(cfg, run, EventWriter(run), lambda: False)
    recipe.setup()
    assert recipe.train() == "completed"


def test_profile_of_the_steps_asked_for(tunesmith_home, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "2-3")
    _train(tmp_path, "profiled")
    text = (tmp_path / "profiled" / "profile.txt").read_text()
    assert text.startswith("steps 2-3: ")
    assert "ms per step" in text and "Self CPU" in text  # the host table of the torch profiler
    monkeypatch.delenv(ENV)
    _train(tmp_path, "plain")
    assert not (tmp_path / "plain" / "profile.txt").exists()


@pytest.mark.parametrize("text, want", [("4-6", (4, 6)), ("5", (5, 5))])
def test_steps_parse(text, want):
    assert parse_steps(text) == want


@pytest.mark.parametrize("text", ["0-2", "6-4", "steps"])
def test_bad_steps_are_refused_with_the_form(text):
    with pytest.raises(ValueError, match="FIRST-LAST"):
        parse_steps(text)
