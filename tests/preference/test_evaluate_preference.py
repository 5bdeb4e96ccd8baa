"""Evaluating a finished preference run scores its held-out pairs, not generated answers.

- a DPO run's evaluation on the pairs it held out gives the numbers its chart showed at the last
  step (the same seeded split, the objective's own math), a margin that grew, the base model's
  rewards at 0 with its log-prob accuracy beside them, a per-pair table and files under evals/;
- a reward run's evaluation scores each reply as the Chat tab's scorer does, and has no base row;
- a KTO run's evaluation scores labelled replies: right when the reward has the label's sign;
- a test set of chat rows is refused in one sentence that says what to pick.

Three short runs through the job manager on the demo model (about 10 s each on 2 cores, and the
evaluations a few seconds), in a TUNESMITH_HOME of their own: other tests count the reward runs
of the session's home.
"""

from __future__ import annotations

import json

import pytest

from preference_runs import STEPS, train_preference_run  # tests/ is on sys.path


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("pref-eval-home")
        mp.setenv("TUNESMITH_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def dpo(home):
    return train_preference_run("dpo", "eval-dpo", f"training.eval_steps={STEPS}")


@pytest.fixture(scope="module")
def reward(home):
    return train_preference_run("reward", "eval-reward")


def test_dpo_evaluation_reports_the_held_out_pairs_as_the_chart_did(dpo, home):
    from tunesmith.engine.evaluate_preference import evaluate_preference_run
    from tunesmith.engine.events import read_events
    from tunesmith.studio.evaluate_tab import describe, pairs_frame, preference_scores_frame

    result = evaluate_preference_run(dpo.id, n=None, base=True)
    m = result.metrics
    # The same pairs and the same math as the training-time eval at the last step (the adapter saved).
    last = [e for e in read_events(dpo.run_dir) if e["type"] == "eval"][-1]
    assert last["step"] == STEPS and len(result.pairs) == last["eval_pairs"] == 8
    for ours, theirs in (("accuracy", "eval_rewards/accuracies"), ("reward_chosen", "eval_rewards/chosen"),
                         ("reward_rejected", "eval_rewards/rejected"), ("margin", "eval_rewards/margins"),
                         ("loss", "eval_loss")):
        assert m[ours] == pytest.approx(last[theirs], abs=1e-3), ours
    assert m["margin"] > 0 and m["accuracy"] > 0.5, m  # it learnt to prefer the chosen replies
    assert m["accuracy"] == sum(p.correct for p in result.pairs) / 8
    assert all(p.correct == (p.chosen_reward > p.rejected_reward) for p in result.pairs)

    # The base is DPO's reference: its rewards are 0 by definition; its log-prob preference is measured.
    b = result.base_metrics
    assert (b["reward_chosen"], b["reward_rejected"], b["margin"], b["accuracy"]) == (0.0, 0.0, 0.0, None)
    assert 0 <= b["logp_accuracy"] <= 1 and "0 by definition" in result.base_note
    assert b["logp_accuracy"] == sum(p.base_correct for p in result.pairs) / 8

    # The table shows the questions as written in the dataset, with both replies.
    table = pairs_frame(result)
    assert list(table.columns[:3]) == ["question", "chosen reply", "rejected reply"]
    assert "assistant" not in " ".join(table["question"])  # not the chat template's rendering
    assert (table["prefers chosen"] == "✓").sum() == round(8 * m["accuracy"])
    scores = preference_scores_frame(result)
    assert list(scores.columns) == ["score", "fine-tuned", "base model"]
    assert {"preference accuracy", "margin", "log-prob accuracy"} <= set(scores["score"])
    assert "0 by definition" in describe(dpo.id)[0]

    written = json.loads((result.path.parent / "scores.json").read_text())
    assert result.path.parent.parent == home / "evals" / dpo.id
    assert written["tuned"]["accuracy"] == m["accuracy"] and written["pairs"] == 8
    assert len(result.path.read_text().splitlines()) == 8


def test_reward_evaluation_scores_replies_as_the_chat_tab_does(reward):
    from tunesmith.engine.evaluate_preference import evaluate_preference_run
    from tunesmith.engine.objectives.reward import score_reply
    from tunesmith.studio.evaluate_tab import pairs_frame, preference_scores_frame

    result = evaluate_preference_run(reward.id, n=3, base=True)
    assert len(result.pairs) == 3 and result.base_metrics is None and "no score head" in result.base_note
    first = result.pairs[0]
    q = {"role": "user", "content": first.prompt}
    assert first.chosen_reward == pytest.approx(score_reply(reward.id, [q, {"role": "assistant",
                                                                            "content": first.chosen}]), abs=1e-4)
    assert first.rejected_reward == pytest.approx(score_reply(reward.id, [q, {"role": "assistant",
                                                                              "content": first.rejected}]), abs=1e-4)
    m = result.metrics
    assert m["accuracy"] == sum(p.correct for p in result.pairs) / 3 and m["logp_accuracy"] is None
    scores = preference_scores_frame(result)
    assert list(scores.columns) == ["score", "fine-tuned"] and "log-prob accuracy" not in set(scores["score"])
    assert "base prefers chosen" not in pairs_frame(result).columns


def test_kto_evaluation_scores_labelled_replies(home):
    from tunesmith.engine.evaluate_preference import evaluate_preference_run
    from tunesmith.studio.evaluate_tab import describe, pairs_frame

    kto = train_preference_run("kto", "eval-kto", "data.datasets=[kto_feedback]", "data.val_size=0.1")
    result = evaluate_preference_run(kto.id, n=6, base=True)
    assert result.unit == "rows" and len(result.pairs) == 6 and result.base_metrics is None
    for p in result.pairs:  # a row is the good reply (chosen) or the bad one (rejected), never both
        assert bool(p.chosen) != bool(p.rejected)
        assert p.correct == ((p.chosen_reward or 0) > 0 if p.chosen else (p.rejected_reward or 0) < 0)
    assert result.metrics["accuracy"] == sum(p.correct for p in result.pairs) / 6
    assert list(pairs_frame(result).columns) == ["question", "reply", "label", "reward", "right way"]
    assert "good or bad" in describe(kto.id)[0]


def test_chat_rows_are_not_a_preference_test_set(dpo):
    from tunesmith.engine.errors import DataError
    from tunesmith.engine.evaluate_preference import evaluate_preference_run

    with pytest.raises(DataError, match="not preference pairs.*Pick a preference dataset") as e:
        evaluate_preference_run(dpo.id, data="identity", n=4)
    assert "objective sft" not in str(e.value)  # the run is given; only the test set can change


def test_cli_eval_of_a_preference_run_prints_pair_scores(dpo, capsys):
    from tunesmith.cli.main import main

    assert main(["eval", dpo.id, "-n", "2", "--no-base"]) == 0
    out = capsys.readouterr().out
    assert "(2 pairs), objective dpo" in out and "accuracy" in out and "margin" in out and "rouge" not in out
