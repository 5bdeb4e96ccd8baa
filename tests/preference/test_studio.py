"""The studio's view of preference training: the objective as a plain choice with its settings
generated from the objective's Settings model, and the live chart's reward curves."""

from __future__ import annotations

from tunesmith.studio import monitor
from tunesmith.studio.train_tab import objective_choices, objective_note


def test_objectives_are_offered_in_plain_words():
    labels = dict((name, label) for label, name in objective_choices())
    assert labels["dpo"] == "Prefer A over B (DPO)"
    assert labels["kto"] == "Good or bad examples (KTO)"
    assert {"sft", "dpo", "orpo", "simpo", "kto", "reward"} <= set(labels)
    assert "base model" in objective_note("dpo")


def test_every_setting_has_one_line_of_help():
    from tunesmith.engine.objectives import get_objective

    for name in ("dpo", "orpo", "simpo", "kto", "reward"):
        for key, field in get_objective(name).Settings.model_fields.items():
            assert field.description and "\n" not in field.description, (name, key)


def test_chart_shows_rewards_and_accuracy_next_to_the_loss():
    evs = [{"type": "train", "step": s, "loss": 0.69 - 0.01 * s, "rewards/chosen": 0.02 * s,
            "rewards/rejected": -0.01 * s, "rewards/margins": 0.03 * s, "rewards/accuracies": 0.5 + 0.05 * s}
           for s in range(1, 6)]
    fig = monitor.loss_figure(evs)
    by_name = {t.name: t for t in fig.data}
    assert {"loss", "reward margin", "reward: chosen", "reward: rejected", "preference accuracy"} <= set(by_name)
    assert by_name["reward margin"].yaxis == "y2" and list(by_name["reward margin"].y)[-1] > 0.1
    assert fig.layout.yaxis2.title.text
    sft = monitor.loss_figure([{"type": "train", "step": 1, "loss": 1.0}])
    assert all(t.yaxis in (None, "y") for t in sft.data)


def test_chart_marks_the_held_out_margin_and_accuracy():
    evs = [{"type": "train", "step": 1, "loss": 0.69, "rewards/margins": 0.0, "rewards/accuracies": 0.0},
           {"type": "eval", "step": 5, "eval_loss": 0.6, "eval_rewards/margins": 0.4, "eval_rewards/accuracies": 0.75}]
    by_name = {t.name: t for t in monitor.loss_figure(evs).data}
    assert list(by_name["eval reward margin"].y) == [0.4] and by_name["eval reward margin"].mode == "markers"
    assert list(by_name["eval preference accuracy"].x) == [5]


def test_reused_settings_name_every_setting_of_the_objective():
    """Runs -> Reuse its settings fills the settings state with all of the run's objective settings
    (defaults included), so the Train tab's widgets redraw whichever objective the form showed."""
    from tunesmith.engine.config import RunConfig
    from tunesmith.studio.context import config_values

    cfg = RunConfig().with_overrides(["objective=dpo", "objective_settings.beta=0.2"])
    shown = config_values(cfg, ["objective", "objective_settings"])
    assert shown["objective"] == "dpo"
    assert shown["objective_settings"] == {"beta": 0.2, "loss_type": "sigmoid", "label_smoothing": 0.0,
                                           "reference": "base", "sft_weight": 0.0}
    assert config_values(RunConfig(), ["objective_settings"])["objective_settings"] == {}
