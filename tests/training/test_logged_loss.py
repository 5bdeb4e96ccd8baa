"""The logged training loss of a window of steps is the mean of its steps' losses, as TRL and
transformers' Trainer log it, so curves from both can be laid over each other."""

from __future__ import annotations

import pytest

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter, read_events
from tunesmith.engine.trainer import Recipe


def _losses(tmp_path, name: str, logging_steps: int) -> dict[int, float]:
    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        "method=lora", "training.max_steps=6", "training.batch_size=3", "training.save_steps=1000",
        f"training.logging_steps={logging_steps}", "training.learning_rate=1e-3"])
    run = tmp_path / name
    run.mkdir()
    recipe = Recipe(cfg, run, EventWriter(run), lambda: False)
    recipe.setup()
    assert recipe.train() == "completed"
    return {e["step"]: e["loss"] for e in read_events(run) if e["type"] == "train"}


def test_a_window_logs_the_mean_of_its_step_losses(tunesmith_home, tmp_path):
    every = _losses(tmp_path, "every", 1)
    windows = _losses(tmp_path, "windows", 3)
    assert sorted(windows) == [1, 3, 6]  # step 1, then every 3rd step
    assert windows[1] == pytest.approx(every[1], rel=1e-6)
    assert windows[3] == pytest.approx((every[2] + every[3]) / 2, rel=1e-5)
    assert windows[6] == pytest.approx((every[4] + every[5] + every[6]) / 3, rel=1e-5)
