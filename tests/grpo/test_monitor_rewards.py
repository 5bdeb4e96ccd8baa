"""The live chart shows a GRPO run's rewards, and the samples table reads the latest samples event."""

from __future__ import annotations

from tunesmith.studio import monitor


def _events():
    return [
        {"type": "train", "step": 1, "loss": 0.0, "reward": 0.2, "reward/regex": 0.4, "completion_length": 9.0,
         "kl": 0.01},
        {"type": "samples", "step": 1, "samples": [{"prompt": "What is 1 + 2?", "completion": "1 + 2 = 3.",
                                                    "answer": "3", "reward": 1.0, "scores": {"regex": 1.0}}]},
        {"type": "train", "step": 2, "loss": 0.0, "reward": 0.5, "reward/regex": 0.7, "completion_length": 7.0,
         "kl": 0.02},
    ]


def test_reward_series_on_the_chart():
    fig = monitor.loss_figure(_events())
    traces = {t.name: t for t in fig.data}
    assert list(traces["reward"].y) == [0.2, 0.5] and list(traces["reward: regex"].y) == [0.4, 0.7]
    assert traces["kl"].visible == "legendonly" and traces["reward"].yaxis == "y2"
    assert fig.layout.yaxis2.title.text == "reward"


def test_sft_chart_has_no_reward_axis():
    fig = monitor.loss_figure([{"type": "train", "step": 1, "loss": 1.0}])
    assert fig.data and all(t.yaxis != "y2" for t in fig.data) and "yaxis2" not in fig.to_dict()["layout"]


def test_samples_rows_from_the_latest_samples_event():
    assert monitor.samples_rows(_events()) == [[1, "What is 1 + 2?", "1 + 2 = 3.", "3", 1.0, "regex 1"]]
    assert monitor.samples_rows([]) == []
