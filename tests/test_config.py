"""RunConfig: the one schema. YAML round trip, overrides, clear errors, help texts."""

from __future__ import annotations

import pytest

from tunesmith.engine.config import RunConfig, field_help
from tunesmith.engine.errors import ConfigError


def test_defaults_follow_current_practice():
    c = RunConfig()
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.target_modules) == (16, 16, 0.0, "all-linear")
    assert c.training.learning_rate == 2e-4
    assert (c.training.batch_size, c.training.gradient_accumulation) == (2, 4)
    assert c.method == "qlora" and c.quantization.double_quant and c.quantization.quant_type == "nf4"
    assert c.data.train_on_responses_only and not c.model.trust_remote_code


def test_yaml_round_trip_is_exact():
    c = RunConfig().with_overrides(["training.max_steps=20", "lora.target_modules=q_proj,v_proj", "data.datasets=[identity,instruct_en_zh]"])
    again = RunConfig.from_yaml_text(c.to_yaml())
    assert again == c
    assert again.lora.target_modules == ["q_proj", "v_proj"]
    assert c.to_yaml().startswith("# Tunesmith run config. Launch with: tunesmith train")


def test_every_field_has_help():
    def walk(model, prefix=""):
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            assert info.description, f"{path} has no help text"
            ann = info.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, path + ".")

    walk(RunConfig)
    assert "learning rate" in field_help("training.learning_rate").lower()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("training:\n  learning_rate: fast\n", "training.learning_rate"),
        ("training:\n  batch_size: 0\n", "training.batch_size"),
        ("lora:\n  rank: 8\n", "lora.rank: unknown field"),
        ("method: qlora2\n", "method"),
        ("- a\n- b\n", "expected a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
        ("data:\n  datasets: []\n", "data.datasets"),
    ],
)
def test_bad_config_names_the_field(text, needle):
    with pytest.raises(ConfigError) as e:
        RunConfig.from_yaml_text(text, source="run.yaml")
    assert needle in str(e.value) and "run.yaml" in str(e.value)


def test_override_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        RunConfig().with_overrides(["training.max_steps"])
    with pytest.raises(ConfigError, match="training.max_steps"):
        RunConfig().with_overrides(["training.max_steps=-3"])


def test_sample_configs_load_and_the_demo_one_matches_the_studio_preset():
    from tunesmith.engine.catalog import demo_overrides_list
    from tunesmith.engine.paths import assets_dir

    demo = RunConfig.from_yaml(assets_dir() / "demo_identity.yaml")
    assert demo == RunConfig().with_overrides(demo_overrides_list() + ["output.run_name=demo-identity"])
    assert RunConfig.from_yaml(assets_dir() / "qwen_qlora.yaml").model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
