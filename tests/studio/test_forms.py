"""Form values <-> RunConfig: what the studio's widgets produce is what the CLI runs."""

from __future__ import annotations

import pytest

from tunesmith.engine import catalog
from tunesmith.engine.config import DEMO_MODEL, RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.studio.context import (
    config_from_form,
    config_values,
    default_value,
    form_value,
    override_updates,
    to_config_value,
)

# Roughly what the widgets hand back: numbers as floats, empty text, 0 for "not set".
FORM = {
    "model.name_or_path": " Qwen/Qwen2.5-0.5B-Instruct ",
    "model.revision": "",
    "model.trust_remote_code": False,
    "model.chat_template": "",
    "method": "lora",
    "quantization.bits": 4,
    "lora.r": 8.0,
    "lora.alpha": 16.0,
    "lora.dropout": 0.05,
    "lora.target_modules": "q_proj, v_proj",
    "data.datasets": ["identity", "instruct_en_zh"],
    "data.max_samples": 0,
    "data.cutoff_len": 512.0,
    "data.val_size": 0.1,
    "training.num_epochs": 2.0,
    "training.max_steps": 30.0,
    "training.learning_rate": 1e-4,
    "training.eval_steps": 0,
    "training.seed": 7.0,
    "kernels": "off",
    "output.run_name": "  ",
}


def test_form_to_config_normalizes_widget_values():
    cfg = config_from_form(FORM)
    assert cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cfg.model.revision is None and cfg.model.chat_template is None
    assert cfg.lora.r == 8 and isinstance(cfg.lora.r, int)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.max_samples is None  # 0 = all
    assert cfg.training.max_steps == 30 and isinstance(cfg.training.max_steps, int)
    assert cfg.training.eval_steps is None
    assert cfg.output.run_name is None
    assert cfg.kernels == "off"


def test_yaml_round_trip_is_exact():
    cfg = config_from_form(FORM, extra={"training.logging_steps": 2})
    text = cfg.to_yaml()
    again = RunConfig.from_yaml_text(text)
    assert again == cfg
    assert again.to_yaml() == text
    assert text.startswith("# Tunesmith run config. Launch with: tunesmith train")


def test_config_to_form_and_back():
    cfg = config_from_form(FORM)
    paths = list(FORM)
    shown = config_values(cfg, paths)
    assert shown["training.eval_steps"] == 0
    assert shown["lora.target_modules"] == "q_proj, v_proj"
    assert shown["data.datasets"] == ["identity", "instruct_en_zh"]
    assert config_from_form(shown) == cfg


def test_invalid_value_names_the_field():
    with pytest.raises(ConfigError, match=r"lora\.r"):
        config_from_form({"lora.r": 0})
    with pytest.raises(ConfigError, match=r"data\.datasets"):
        config_from_form({"data.datasets": []})


def test_widgets_do_not_override_extras_they_do_not_show():
    cfg = config_from_form({"training.learning_rate": 3e-4}, extra={"training.learning_rate": 1.0,
                                                                    "training.save_steps": 5})
    assert cfg.training.learning_rate == 3e-4  # the widget wins
    assert cfg.training.save_steps == 5


def test_to_config_value_and_form_value_are_inverse_for_optionals():
    assert to_config_value("training.max_steps", 0) is None
    assert form_value("training.max_steps", None) == 0
    assert to_config_value("model.revision", " ") is None
    assert form_value("model.revision", None) == ""
    # Non-optional ints keep 0 (and the schema then says what is wrong with it).
    assert to_config_value("training.seed", 0.0) == 0


def test_switching_models_undoes_recommended_settings():
    demo = catalog.recommended_overrides(DEMO_MODEL)
    assert demo, "the demo model should come with recommended settings"
    back = override_updates(demo, {})
    assert set(back) == set(demo)
    assert all(back[p] == default_value(p) for p in demo)
    assert override_updates({}, demo) == demo
    assert override_updates(demo, demo) == demo
