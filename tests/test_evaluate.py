"""engine.evaluate's scores and test rows, and `tunesmith eval` on the trained demo run."""

from __future__ import annotations

import json

import pytest

from tunesmith.engine import evaluate


def test_scores_reward_the_right_answer():
    ref = ["I am Smith, an AI assistant.", "Paris is the capital of France."]
    perfect = evaluate.score(ref, ref)
    assert perfect["exact_match"] == 1.0 and perfect["rouge_l"] == pytest.approx(1.0) and perfect["bleu"] > 99
    wrong = evaluate.score(["Hello there.", "I like cheese."], ref)
    assert wrong["exact_match"] == 0.0 and wrong["rouge_l"] < 0.3 and wrong["bleu"] < 10
    # Case and spacing do not make an answer wrong.
    assert evaluate.exact_match("  i am  SMITH, an AI assistant. ", ref[0])


def test_chinese_answers_are_scored_by_character():
    # rouge-score's own tokenizer drops every non-ASCII character: Chinese would always score 0.
    assert evaluate.rouge_l("我是 Smith，一个 AI 助手。", "我是Smith，一个AI助手。") == pytest.approx(1.0)
    assert 0 < evaluate.rouge_l("我是助手", "我是Smith，一个AI助手。") < 1


def test_split_turns_takes_the_last_reply_as_reference():
    ex = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                       {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Who are you?"},
                       {"role": "assistant", "content": "Smith."}]}
    prompt, ref = evaluate.split_turns(ex)
    assert ref == "Smith." and prompt[-1] == {"role": "user", "content": "Who are you?"} and len(prompt) == 4
    assert evaluate.split_turns({"messages": [{"role": "user", "content": "?"}]}) is None
    assert evaluate.split_turns({"text": "plain text"}) is None


@pytest.mark.slow
def test_cli_eval_scores_tuned_above_base(demo_run, capsys):
    from tunesmith.cli.main import main

    assert main(["eval", demo_run.id, "--data", "identity", "-n", "4", "--json"]) == 0
    tuned, base = json.loads(capsys.readouterr().out)
    assert (tuned["label"], base["label"]) == ("tuned", "base")
    assert tuned["scores"]["rouge_l"] > base["scores"]["rouge_l"]
    assert tuned["scores"]["perplexity"] < base["scores"]["perplexity"]
    assert len(tuned["predictions"]) == 4
    lines = open(tuned["path"], encoding="utf-8").read().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["model"] == "tuned"


@pytest.mark.slow
def test_cli_eval_says_when_a_run_held_out_nothing(demo_run, capsys):
    from tunesmith.cli.main import main

    assert main(["eval", demo_run.id]) == 2
    err = capsys.readouterr().err
    assert "held out no rows" in err and "Traceback" not in err
