"""GRPO's data: prompts and optional answers from GSM8K-style rows, chat rows and the bundled arithmetic set."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError, DataError
from tunesmith.engine.objectives import get_objective
from tunesmith.engine.rewards import build_rewards, RewardChoice


@pytest.fixture(scope="module")
def tok():
    from tunesmith.engine.paths import demo_model_dir

    return AutoTokenizer.from_pretrained(str(demo_model_dir()))


def _prepare(tok, datasets, **settings):
    cfg = RunConfig.model_validate({"objective": "grpo", "method": "lora", "data": {"datasets": datasets},
                                    "objective_settings": settings})
    obj = get_objective("grpo")(cfg)
    rows, eval_rows = obj.prepare(tok)
    return obj, rows, eval_rows


def test_gsm8k_style_rows_give_prompts_and_answers(tok, tmp_path):
    f = tmp_path / "gsm.jsonl"
    f.write_text("\n".join(json.dumps({"question": f"Tom has {i} apples and buys 2. How many?",
                                       "answer": f"He has {i} + 2 = {i + 2}.\n#### {i + 2}"}) for i in range(3)))
    obj, rows, eval_rows = _prepare(tok, [str(f)], system_prompt="Answer inside <answer></answer>.")
    assert eval_rows is None and len(rows) == 3
    assert rows[1]["prompt"].startswith("Tom has 1 apples")
    text = tok.decode(rows[1]["input_ids"])
    assert "Answer inside <answer></answer>." in text and "Tom has 1 apples" in text
    (nm,) = build_rewards([RewardChoice(name="numeric_match")])
    assert nm.fn(rows[1]["prompt"], "so <answer>3</answer>", rows[1]["row"]) == 1.0


def test_chat_rows_train_on_the_last_user_turn(tok, tmp_path):
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"},
                                          {"role": "assistant", "content": "4"}]}) + "\n")
    _, rows, _ = _prepare(tok, [str(f)])
    assert rows[0]["prompt"] == "What is 2 + 2?" and "4" not in tok.decode(rows[0]["input_ids"]).split("2 + 2?")[-1]


def test_bundled_arithmetic_and_a_missing_prompt_column(tok, tmp_path):
    _, rows, _ = _prepare(tok, ["arithmetic"])
    assert len(rows) == 200 and all(r["row"]["answer"] for r in rows)
    f = tmp_path / "odd.jsonl"
    f.write_text(json.dumps({"foo": "bar"}) + "\n")
    with pytest.raises(DataError, match="prompt_column"):
        _prepare(tok, [str(f)])


def test_beta_needs_an_adapter(tok):
    cfg = RunConfig.model_validate({"objective": "grpo", "method": "full", "data": {"datasets": ["arithmetic"]},
                                    "objective_settings": {"beta": 0.1}})
    with pytest.raises(ConfigError, match="objective_settings.beta"):
        get_objective("grpo")(cfg).prepare(tok)
