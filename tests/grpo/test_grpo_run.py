"""A GRPO run on the demo model and the bundled arithmetic set: the reward rises, samples are written."""

from __future__ import annotations

import json

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter, read_events
from tunesmith.engine.trainer import Recipe


def test_grpo_on_the_demo_model_raises_the_reward(tunesmith_home, tmp_path):
    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        "method=lora", "objective=grpo", "data.datasets=[arithmetic]", "training.max_steps=8",
        "training.batch_size=4", "training.gradient_accumulation=1", "training.learning_rate=5e-3",
        "training.save_steps=1000", "training.logging_steps=1", "training.seed=3"])
    data = cfg.model_dump()
    # Four fixed questions and a length penalty: the demo model learns to stop after "= 27." within a
    # few steps. numeric_match has weight 0: scored and charted, not trained on.
    data["objective_settings"] = {"group_size": 8, "max_completion_length": 16, "beta": 0.02,
                                  "rewards": [{"name": "length_penalty", "max_chars": 30},
                                              {"name": "numeric_match", "weight": 0.0}]}
    data["data"]["max_samples"] = 4
    cfg = RunConfig.model_validate(data)
    run = tmp_path / "run"
    run.mkdir()
    recipe = Recipe(cfg, run, EventWriter(run), lambda: False)
    recipe.setup()
    assert recipe.train() == "completed"
    events = read_events(run)
    train = [e for e in events if e["type"] == "train"]
    assert [e["step"] for e in train] == list(range(1, 9))
    for e in train:
        assert {"reward", "reward_std", "reward/length_penalty", "reward/numeric_match", "completion_length",
                "kl"} <= set(e)
    rewards = [e["reward"] for e in train]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.05, rewards
    samples = [e for e in events if e["type"] == "samples"]
    assert samples and samples[-1]["samples"][0]["prompt"].startswith(("What is", "Compute"))
    assert set(samples[-1]["samples"][0]["scores"]) == {"length_penalty", "numeric_match"}
    assert train[-1]["completion_length"] < train[0]["completion_length"]
    print(json.dumps(rewards))
