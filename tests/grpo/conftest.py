"""Events of a short GRPO run as the studio reads them (train metrics and a samples event)."""

from __future__ import annotations

import pytest


@pytest.fixture
def grpo_events() -> list[dict]:
    return [
        {"type": "train", "step": 1, "loss": 0.0, "reward": 0.2, "reward/regex": 0.4, "completion_length": 9.0,
         "kl": 0.01},
        {"type": "samples", "step": 1, "samples": [{"prompt": "What is 1 + 2?", "completion": "1 + 2 = 3.",
                                                    "answer": "3", "reward": 1.0, "scores": {"regex": 1.0}}]},
        {"type": "train", "step": 2, "loss": 0.0, "reward": 0.5, "reward/regex": 0.7, "completion_length": 7.0},
    ]
