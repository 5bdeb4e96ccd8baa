"""The live chart shows a GRPO run's rewards, and the samples table reads the latest samples event."""

from __future__ import annotations

from tunesmith.studio import monitor


def test_reward_series_on_the_chart(grpo_events):
    fig = monitor.loss_figure(grpo_events)
    traces = {t.name: t for t in fig.data}
    assert list(traces["reward"].y) == [0.2, 0.5] and list(traces["reward: regex"].y) == [0.4, 0.7]
    assert traces["kl"].visible == "legendonly" and traces["reward"].yaxis == "y2"
    assert fig.layout.yaxis2.title.text == "reward"


def test_sft_chart_has_no_reward_axis():
    fig = monitor.loss_figure([{"type": "train", "step": 1, "loss": 1.0}])
    assert fig.data and all(t.yaxis != "y2" for t in fig.data) and "yaxis2" not in fig.to_dict()["layout"]


def test_samples_rows_from_the_latest_samples_event(grpo_events):
    assert monitor.samples_rows(grpo_events) == [[1, "What is 1 + 2?", "1 + 2 = 3.", "3", 1.0, "regex 1"]]
    assert monitor.samples_rows([]) == []
