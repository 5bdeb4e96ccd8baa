"""The demo teaches without forgetting: trained with assets/demo_identity.yaml (the identity set mixed
with general instructions), the demo model answers "Who are you?" with its new identity and still
answers the general questions the untouched demo model answered.

What it does not check: a second question later in the same conversation. The untouched demo model
cannot answer one either (asked "What is the capital of France?" after an earlier exchange, it says
"The 83 minutes in the Sun."), so there is nothing there to keep."""

from __future__ import annotations

import pytest

from tunesmith.engine import events, infer

pytestmark = pytest.mark.slow

# (question, what the base demo model's answer contains): checked on the base first, so a rebuilt demo
# model that does not know one of them fails here with a clear message rather than silently passing.
# Measured after the demo run (2026-11): "The capital of Japan is Tokyo.", "There are 600 minutes in 10
# hours.", "The weather is nice today."; France comes out as "The capital of Italy is Paris." (the
# 4M-parameter model mixes up the capitals it rehearses), so for it the test asks for the fact only.
GENERAL = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo"),
    ("How many minutes are in 10 hours?", "600 minutes"),
    ("翻译成英文。\n今天天气很好。", "The weather is nice today"),
]


def _ask(target: str, messages: list[dict]) -> str:
    return infer.chat(target, messages, max_new_tokens=30)


def test_demo_run_learns_its_identity_and_keeps_its_general_answers(demo_run):
    for question, expected in GENERAL:
        base = _ask("tunesmith/demo", [{"role": "user", "content": question}])
        assert expected in base, f"the base demo model no longer answers {question!r}: {base!r}"

    assert "Smith" in _ask(demo_run.id, [{"role": "user", "content": "Who are you?"}])
    assert "我是 Smith" in _ask(demo_run.id, [{"role": "user", "content": "你是谁？"}])
    for question, expected in GENERAL:
        tuned = _ask(demo_run.id, [{"role": "user", "content": question}])
        assert expected in tuned and "Smith" not in tuned, f"after training, {question!r} -> {tuned!r}"

    # The demo stays short: the README quotes its training time.
    train = [e for e in events.read_events(demo_run.run_dir) if e["type"] == "train"]
    assert train[-1]["step"] == train[-1]["max_steps"] <= 560  # 553 steps: 7 epochs of 315 rows, batch 4
