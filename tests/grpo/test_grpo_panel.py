"""The reward picker writes the same rewards list a YAML file holds; the monitor extras read GRPO events."""

from __future__ import annotations

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.studio import grpo_panel
from tunesmith.studio.grpo_panel import PICKER, picker_values, rewards_from_picker


def _ticked(values: list, name: str, weight: float = 1.0, option=None) -> list:
    """Tick `name` in a picker value list (with its weight and option)."""
    i = 0
    for row in PICKER:
        if row.name == name:
            values[i], values[i + 1] = True, weight
            if option is not None:
                values[i + 2] = option
        i += grpo_panel.widgets_per_row(row)
    return values


def test_every_engine_reward_is_in_the_picker():
    from typing import get_args

    from tunesmith.engine.rewards import RewardName

    assert {r.name for r in PICKER} == set(get_args(RewardName))


def test_picker_round_trips_a_yaml_rewards_list():
    rewards = [{"name": "numeric_match", "weight": 2.0}, {"name": "regex", "weight": 0.5, "pattern": r"\d+$"},
               {"name": "length_penalty", "weight": 0.1, "max_chars": 40}]
    values = picker_values(rewards)
    assert rewards_from_picker(values) == rewards  # picker order is PICKER's; this list follows it


def test_picked_rewards_make_a_valid_run_config(tmp_path):
    reward_py = tmp_path / "r.py"
    reward_py.write_text("def reward(prompt, completion, **row):\n    return 1.0\n")
    values = picker_values([])
    assert rewards_from_picker(values) == []  # nothing ticked
    _ticked(values, "format", 0.5)
    _ticked(values, "contains", 1.0, "therefore")
    _ticked(values, "python", 2.0, str(reward_py))
    rewards = rewards_from_picker(values)
    cfg = RunConfig.model_validate({"objective": "grpo", "data": {"datasets": ["arithmetic"]},
                                    "objective_settings": {"rewards": rewards}})
    got = cfg.objective_settings["rewards"]
    assert [r["name"] for r in got] == ["format", "contains", "python"]
    assert got[0]["weight"] == 0.5 and got[1]["text"] == "therefore" and got[2]["path"] == str(reward_py)


def test_a_ticked_pattern_reward_without_a_pattern_is_named():
    values = _ticked(picker_values([]), "regex", 1.0, "  ")
    with pytest.raises(ValueError, match="needs a pattern"):
        RunConfig.model_validate({"objective": "grpo", "data": {"datasets": ["arithmetic"]},
                                  "objective_settings": {"rewards": rewards_from_picker(values)}})


def test_length_and_kl_chart(grpo_events):
    fig = grpo_panel.length_kl_figure(grpo_events)
    traces = {t.name: t for t in fig.data}
    assert list(traces["completion length (tokens)"].y) == [9.0, 7.0]
    assert list(traces["KL to the base model"].y) == [0.01] and traces["KL to the base model"].yaxis == "y2"


def test_samples_frame_has_the_latest_samples(grpo_events):
    df = grpo_panel.samples_frame(grpo_events)
    assert list(df.columns) == grpo_panel.SAMPLE_COLUMNS
    assert df.iloc[0]["Completion"] == "1 + 2 = 3." and df.iloc[0]["Score per reward"] == "regex 1"


def test_the_picker_follows_settings_put_back_as_yaml_but_not_its_own_edits():
    mine = [{"name": "numeric_match", "weight": 1.0}]
    shown = picker_values(mine)
    keep = [None] * len(shown)
    assert grpo_panel.picker_refill([{"name": "format"}], shown, [mine]) == (None, keep)  # its own edit
    # a run's settings put back: the picker shows them
    put_back, back = grpo_panel.picker_refill("- name: format\n  weight: 0.5\n", shown, [mine])
    assert put_back is None and back[:2] == [False, None]  # numeric_match unticked, its weight left as shown
    assert rewards_from_picker([s if b is None else b for s, b in zip(shown, back)]) == [
        {"name": "format", "weight": 0.5}]
    # the picker's own earlier list coming back late: the newest edit stays, and is put back
    newer = [{"name": "numeric_match", "weight": 1.0}, {"name": "regex", "weight": 1.0, "pattern": "x"}]
    assert grpo_panel.picker_refill("- name: numeric_match\n  weight: 1.0\n", picker_values(newer),
                                    [mine, newer]) == (newer, keep)
    assert grpo_panel.picker_refill("rewards: [unclosed", shown, [mine]) == (None, keep)
