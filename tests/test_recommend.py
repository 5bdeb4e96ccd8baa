"""The recommended-settings helper follows the published guides and says why for each setting."""

from __future__ import annotations

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.recommend import REASONS, recommend, training_rows


def _by_path(cfg: RunConfig, rows: int | None) -> dict:
    return {s.path: s for s in recommend(cfg, rows)}


def _cfg(**changes) -> RunConfig:
    overrides = ["model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct"] + [f"{k}={v}" for k, v in changes.items()]
    return RunConfig().with_overrides(overrides)


@pytest.mark.parametrize("rows, epochs, rank", [(300, 3, 8), (5_000, 2, 16), (50_000, 1, 32), (500_000, 1, 64),
                                                (None, 3, 16)])
def test_epochs_and_rank_follow_the_dataset_size(rows, epochs, rank):
    s = _by_path(_cfg(), rows)
    assert s["training.num_epochs"].value == epochs
    assert s["lora.r"].value == rank and s["lora.alpha"].value == 2 * rank
    assert s["training.learning_rate"].value == 2e-4
    if rows:
        assert f"{rows:,}" in s["training.num_epochs"].why()


@pytest.mark.parametrize("changes, lr", [({"objective": "grpo"}, 5e-6), ({"objective": "dpo"}, 5e-6),
                                         ({"objective": "kto"}, 5e-6), ({"objective": "reward"}, 1e-5),
                                         ({"method": "full"}, 1e-5), ({"method": "qlora"}, 2e-4)])
def test_learning_rate_by_method_and_objective(changes, lr):
    assert _by_path(_cfg(**changes), 2_000)["training.learning_rate"].value == lr


def test_full_fine_tuning_gets_no_rank_and_rl_one_pass():
    assert "lora.r" not in _by_path(_cfg(method="full"), 2_000)
    assert _by_path(_cfg(objective="grpo"), 300)["training.num_epochs"].value == 1


def test_small_sets_still_get_about_ten_updates_per_pass():
    s = _by_path(_cfg(**{"training.batch_size": 2}), 60)["training.gradient_accumulation"]
    assert 2 * s.value <= 6 and "6 examples per update" in s.why()
    assert _by_path(_cfg(**{"training.batch_size": 2}), 5_000)["training.gradient_accumulation"].value == 8


def test_demo_model_gets_its_tested_recipe():
    from tunesmith.engine.catalog import recommended_overrides

    s = _by_path(RunConfig(), 300)
    demo = recommended_overrides("tunesmith/demo")
    assert s["training.num_epochs"].value == demo["training.num_epochs"]
    assert s["training.learning_rate"].value == demo["training.learning_rate"]


def test_every_suggestion_has_a_known_reason_and_a_valid_value():
    for cfg in (_cfg(), _cfg(method="full"), _cfg(objective="dpo"), RunConfig()):
        sugg = recommend(cfg, 1234)
        assert sugg and all(s.reason in REASONS and s.why() for s in sugg)
        # Applying them gives a valid config.
        RunConfig().with_overrides([f"{s.path}={s.value}" for s in sugg])


def test_training_rows():
    assert training_rows([100, 5000], 200) == 300
    assert training_rows([100, 5000], None) == 5100
    assert training_rows([100, None], None) is None
