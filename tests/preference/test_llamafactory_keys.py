"""LLaMA-Factory's preference configs (examples/train_lora/llama3_lora_{dpo,kto,reward}.yaml shapes)
become Tunesmith's objectives: stage dpo|kto|rm, pref_beta, pref_loss and their companions."""

from __future__ import annotations

import pytest
import yaml

from tunesmith.engine.compat import translate
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError

LLAMA3_LORA_DPO = """\
model_name_or_path: tunesmith/demo
stage: dpo
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
pref_beta: 0.1
pref_loss: sigmoid  # choices: [sigmoid (dpo), orpo, simpo]
dataset: preference_pairs
template: llama3
cutoff_len: 2048
output_dir: saves/llama3-8b/lora/dpo
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 5.0e-6
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
"""


def _cfg(**changes) -> tuple[RunConfig, list[str]]:
    data = yaml.safe_load(LLAMA3_LORA_DPO)
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    t = translate(data, "llama3_lora_dpo.yaml")
    return RunConfig.from_dict(t.config), t.report()


def test_llama3_lora_dpo_is_a_dpo_run():
    cfg, report = _cfg(pref_beta=0.2)
    assert cfg.objective == "dpo"
    assert cfg.objective_settings == {"beta": 0.2, "loss_type": "sigmoid", "label_smoothing": 0.0, "sft_weight": 0.0}
    assert "  pref_beta -> objective_settings.beta = 0.2" in report
    assert "  stage -> objective = 'dpo'" in report


@pytest.mark.parametrize("changes, objective, settings", [
    ({"pref_loss": "ipo"}, "dpo", {"loss_type": "ipo"}),
    ({"pref_loss": "hinge", "pref_ftx": 0.5, "dpo_label_smoothing": 0.1}, "dpo",
     {"loss_type": "hinge", "sft_weight": 0.5, "label_smoothing": 0.1}),
    ({"pref_loss": "orpo", "pref_beta": 0.25}, "orpo", {"beta": 0.25}),
    ({"pref_loss": "simpo", "pref_beta": 2.5, "simpo_gamma": 1.0}, "simpo", {"beta": 2.5, "gamma": 1.0}),
    ({"pref_loss": "simpo"}, "simpo", {"beta": 0.1, "gamma": 0.5}),  # LLaMA-Factory's defaults, not Tunesmith's
    ({"stage": "kto", "pref_loss": None, "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.33}, "kto",
     {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.33}),
    ({"stage": "rm", "pref_beta": None, "pref_loss": None}, "reward", {}),
])
def test_preference_keys_map_to_objectives(changes, objective, settings):
    cfg, _ = _cfg(**changes)
    assert cfg.objective == objective
    for key, want in settings.items():
        assert cfg.objective_settings[key] == want, key
    if objective == "reward":
        assert cfg.objective_settings == {}


def test_keys_for_another_stage_are_said_to_be_unused():
    _, report = _cfg(stage="sft", pref_loss=None, dataset="identity")
    assert "  pref_beta: ignored (not used by stage sft)" in report


@pytest.mark.parametrize("changes, refused", [
    ({"pref_loss": "kto_pair"}, "pref_loss: kto_pair is not supported; use stage: kto"),
    ({"pref_loss": "orpo", "pref_ftx": 1.0}, "pref_ftx: with pref_loss orpo"),
    ({"ref_model": "meta-llama/Llama-3-8B"}, "ref_model: the reference model is the base model"),
])
def test_what_cannot_be_honoured_is_refused(changes, refused):
    with pytest.raises(ConfigError, match=refused):
        _cfg(**changes)
