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

DEMO_STEPS = 600  # 4 epochs of 598 rows (the identity set twice, all instructions and chats), batch 4

# (question, the base demo model's answer): checked on the base first, so a rebuilt demo model that no
# longer knows one fails here with a clear message; after training the answer must be the same, word for
# word. Spread over data/instruct_en_zh.json, English and Chinese. Measured over all 293 rows the base
# answers right: the demo recipe keeps 282. The previous recipe (only the first 200 instruction rows mixed
# in) kept 240, and 5 of these 8 went ("Water boils at 0 degrees Celsius ...", "I am Smith, ..." for the
# days of the week). Not asked: "What is the capital of France?", one of the 11 the demo loses (it says
# "The capital of Italy is Paris." after either recipe, though the 4-bit base alone still says France).
GENERAL = [
    ("How many minutes are in 10 hours?", "There are 600 minutes in 10 hours."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("翻译成英文。\n今天天气很好。", "The weather is nice today."),
    ("What is the freezing point of water?", "Water freezes at 0 degrees Celsius (32 degrees Fahrenheit)."),
    ("What does GPU stand for?", "GPU stands for Graphics Processing Unit."),
    ("List the days of the week.", "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday."),
    ("水的化学式是什么？", "水的化学式是 H2O。"),
    ("Is 45 even or odd?", "45 is odd."),
]


def _ask(target: str, messages: list[dict]) -> str:
    return infer.chat(target, messages, max_new_tokens=30)


def test_demo_run_learns_its_identity_and_keeps_its_general_answers(demo_run):
    for question, expected in GENERAL:
        base = _ask("tunesmith/demo", [{"role": "user", "content": question}])
        assert base.strip() == expected, f"the base demo model no longer answers {question!r}: {base!r}"

    who = _ask(demo_run.id, [{"role": "user", "content": "Who are you?"}])
    assert who.startswith("I am Smith"), who  # English, not the Chinese identity line
    assert _ask(demo_run.id, [{"role": "user", "content": "你是谁？"}]).startswith("我是 Smith")
    changed = {}
    for question, expected in GENERAL:
        tuned = _ask(demo_run.id, [{"role": "user", "content": question}]).strip()
        if tuned != expected:
            changed[question] = tuned
    # One may move (CPU thread counts change the numerics a little); the recipe that forgot lost five.
    assert len(changed) <= 1, f"after training the demo answers differently: {changed}"

    # The demo stays short: the README quotes its training time.
    train = [e for e in events.read_events(demo_run.run_dir) if e["type"] == "train"]
    assert train[-1]["step"] == train[-1]["max_steps"] <= DEMO_STEPS
