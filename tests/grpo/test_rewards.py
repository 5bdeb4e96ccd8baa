"""Reward functions: what each one scores, its options checked at the edge, and the user's Python file."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tunesmith.engine.rewards import HELP, RewardChoice, build_rewards, extract_answer, last_number, score


def _one(name: str, completion: str, row: dict | None = None, **opts) -> float:
    (r,) = build_rewards([RewardChoice(name=name, **opts)])
    return r.fn("What is 2 + 3?", completion, row or {})


def test_every_reward_has_plain_help():
    names = RewardChoice.model_fields["name"].annotation.__args__
    assert set(names) == set(HELP) and all(len(HELP[n]) > 20 for n in names)


def test_exact_match_uses_the_answer_tag_and_ignores_case_and_spaces():
    assert _one("exact_match", "<think>2+3</think><answer> Five </answer>", {"answer": "five"}) == 1.0
    assert _one("exact_match", "five", {"answer": "Five."}) == 1.0
    assert _one("exact_match", "<answer>six</answer>", {"answer": "five"}) == 0.0
    assert _one("exact_match", "five", {}) == 0.0  # no answer column: nothing to match


def test_numeric_match_reads_the_last_number_and_gsm8k_answers():
    assert _one("numeric_match", "2 + 3 = 5", {"answer": "5"}) == 1.0
    assert _one("numeric_match", "It is 1,234.0 apples", {"answer": "She has ... #### 1234"}) == 1.0
    assert _one("numeric_match", "<answer>7</answer> and later 5", {"answer": "5"}) == 0.0  # the tag wins
    assert _one("numeric_match", "no number", {"answer": "5"}) == 0.0
    assert last_number("from -3 to 4.5") == 4.5 and last_number("none") is None


def test_format_and_answer_tags():
    good = "<think>add them</think>\n<answer>5</answer>"
    assert _one("format", good) == 1.0
    assert _one("format", "<answer>5</answer>") == 0.0
    assert _one("format", good + " trailing words") == 0.0
    assert _one("answer_tags", "so <answer>5</answer>") == 1.0
    assert _one("answer_tags", "<answer> </answer>") == 0.0
    assert extract_answer("a <answer>1</answer> b <answer>2</answer>") == "2"


def test_regex_contains_and_length_penalty():
    assert _one("regex", "the answer is 5", pattern=r"\d+$") == 1.0
    assert _one("regex", "5 is the answer", pattern=r"\d+$") == 0.0
    assert _one("contains", "THEREFORE 5", text="therefore") == 1.0
    assert _one("contains", "so 5", text="therefore") == 0.0
    assert _one("length_penalty", "x" * 50, max_chars=100) == -0.5
    assert _one("length_penalty", "x" * 500, max_chars=100) == -1.0
    assert _one("length_penalty", "") == 0.0


def test_options_are_checked_with_the_field_named(tmp_path):
    with pytest.raises(ValidationError, match="regex needs a pattern"):
        RewardChoice(name="regex")
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        RewardChoice(name="regex", pattern="(")
    with pytest.raises(ValidationError, match="contains needs a text"):
        RewardChoice(name="contains")
    with pytest.raises(ValidationError, match="no such file"):
        RewardChoice(name="python", path=str(tmp_path / "missing.py"))
    with pytest.raises(ValidationError):
        RewardChoice(name="sparkle")


def test_python_reward_file_gets_prompt_completion_and_row(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def reward(prompt, completion, **row):\n    return len(row['answer']) + (completion == 'ok')\n")
    (r,) = build_rewards([RewardChoice(name="python", path=str(f))])
    assert r.fn("p", "ok", {"answer": "abc"}) == 4.0
    bad = tmp_path / "bad.py"
    bad.write_text("def reward(prompt, completion, **row):\n    return 1 / 0\n")
    (b,) = build_rewards([RewardChoice(name="python", path=str(bad))])
    with pytest.raises(ValueError, match="bad.py raised ZeroDivisionError"):
        b.fn("p", "c", {})
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(ValueError, match="has no function reward"):
        build_rewards([RewardChoice(name="python", path=str(none))])


def test_weights_and_labels():
    rs = build_rewards([RewardChoice(name="contains", text="a", weight=2.0), RewardChoice(name="contains", text="b")])
    assert [r.label for r in rs] == ["contains", "contains_2"] and rs[0].weight == 2.0
    assert score(rs, "p", "a", {}) == [1.0, 0.0]
