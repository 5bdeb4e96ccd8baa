"""LLaMA-Factory training YAML: recognised, translated into RunConfig, refused key by key, trained."""

from __future__ import annotations

import json

import pytest
import yaml

from tunesmith.engine.compat import is_llamafactory, load_run_config, read_config, translate
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError

# The shape of LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml (model and data swapped
# for ones that work offline).
LLAMA3_LORA_SFT = """\
### model
model_name_or_path: tunesmith/demo
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: identity,instruct_en_zh
template: llama3
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: saves/llama3-8b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
# eval_dataset: alpaca_en_demo
# val_size: 0.1
# per_device_eval_batch_size: 1
# eval_strategy: steps
# eval_steps: 500
"""


def _lf(text: str = LLAMA3_LORA_SFT, **changes) -> dict:
    data = yaml.safe_load(text)
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return data


def test_llama3_lora_sft_translates_field_by_field():
    data = _lf()
    assert is_llamafactory(data) and not is_llamafactory(RunConfig().model_dump(mode="json"))
    t = translate(data, "llama3_lora_sft.yaml")
    cfg = RunConfig.from_dict(t.config)
    assert cfg.model.name_or_path == "tunesmith/demo" and cfg.model.trust_remote_code
    assert cfg.model.chat_template == "llama3"
    assert cfg.method == "lora" and cfg.lora.r == 8 and cfg.lora.target_modules == "all-linear"
    assert cfg.lora.alpha == 16  # LLaMA-Factory's default: 2 x lora_rank
    assert cfg.data.datasets == ["identity", "instruct_en_zh"] and cfg.data.cutoff_len == 2048
    assert cfg.data.max_samples == 1000
    t_ = cfg.training
    assert (t_.batch_size, t_.gradient_accumulation, t_.learning_rate, t_.num_epochs) == (1, 8, 1e-4, 3.0)
    assert (t_.lr_scheduler, t_.warmup_ratio, t_.precision) == ("cosine", 0.1, "bf16")
    assert (t_.logging_steps, t_.save_steps, t_.report_to) == (10, 500, [])
    assert cfg.output.run_name == "llama3-8b-lora-sft"
    report = "\n".join(t.report())
    assert "lora_rank -> lora.r = 8" in report and "lora_target -> lora.target_modules = 'all-linear'" in report
    # every ignored key gets one line with its reason; nothing says "unknown field"
    for key in ("do_train", "overwrite_cache", "preprocessing_num_workers", "plot_loss", "ddp_timeout"):
        assert sum(line.strip().startswith(f"{key}: ignored (") for line in t.report()) == 1
    assert "unknown field" not in report


def test_defaults_are_llamafactorys_not_tunesmiths():
    """A key the file leaves out means LLaMA-Factory's default, which the report lists."""
    t = translate(_lf(learning_rate=None, per_device_train_batch_size=None, lora_rank=None), "x.yaml")
    cfg = RunConfig.from_dict(t.config)
    assert cfg.training.learning_rate == 5e-5 and cfg.training.batch_size == 8
    assert cfg.lora.r == 8 and cfg.lora.alpha == 16
    assert "LLaMA-Factory's default" in "\n".join(t.report())


@pytest.mark.parametrize("changes, expect", [
    ({"quantization_bit": 4}, {"method": "qlora", "quantization.bits": 4}),
    ({"finetuning_type": "full", "lora_rank": None, "lora_target": None}, {"method": "full"}),
    ({"finetuning_type": "freeze", "freeze_trainable_layers": 1, "freeze_trainable_modules": "mlp"},
     {"method": "freeze", "freeze.trainable_layers": 1, "freeze.trainable_modules": ["mlp"]}),
    ({"use_dora": True, "use_rslora": True, "pissa_init": True},
     {"lora.use_dora": True, "lora.use_rslora": True, "lora.init": "pissa"}),
    ({"neftune_noise_alpha": 5, "flash_attn": "sdpa", "train_on_prompt": True, "val_size": 0.1},
     {"training.neftune_alpha": 5.0, "model.attn_implementation": "sdpa", "data.train_on_responses_only": False,
      "data.val_size": 0.1}),
    ({"mix_strategy": "interleave_under", "interleave_probs": "0.8,0.2"}, {"data.mix": [0.8, 0.2]}),
    ({"report_to": "tensorboard,wandb"}, {"training.report_to": ["tensorboard", "wandb"]}),
    # the demo model was trained on 1024 tokens: 4096 needs a factor of 4
    ({"rope_scaling": "linear", "cutoff_len": 4096}, {"model.rope_scaling": "linear", "model.rope_factor": 4.0}),
])
def test_example_variants_map(changes, expect):
    cfg = RunConfig.from_dict(translate(_lf(**changes), "x.yaml").config).model_dump(mode="json")
    for dotted, want in expect.items():
        node = cfg
        for part in dotted.split("."):
            node = node[part]
        assert node == want, dotted


def test_full_sft_example_with_deepspeed():
    """llama3_full_sft.yaml's shape: full fine-tuning under a DeepSpeed ZeRO-3 config."""
    data = _lf(finetuning_type="full", lora_rank=None, lora_target=None, deepspeed="examples/deepspeed/ds_z3_config.json",
               learning_rate=1.0e-5)
    t = translate(data, "llama3_full_sft.yaml")
    cfg = RunConfig.from_dict(t.config)
    assert cfg.method == "full" and cfg.training.learning_rate == 1e-5
    assert any(line.startswith("  deepspeed: ignored (DeepSpeed is not used") for line in t.report())
    assert not any("lora." in line for line in t.report())  # LoRA defaults do not apply to a full run


def test_refusals_name_each_key_once():
    data = _lf(stage="ppo", loraplus_lr_ratio=16.0, lr_scheduler_type="cosine_with_restarts",
               my_custom_flag=1, mask_history=True)
    with pytest.raises(ConfigError) as e:
        translate(data, "llama3_lora_dpo.yaml")
    msg = str(e.value)
    lines = msg.splitlines()
    assert lines[0].startswith("llama3_lora_dpo.yaml: LLaMA-Factory config, 5 key(s)")
    for key in ("stage: ppo", "loraplus_lr_ratio:", "lr_scheduler_type:", "my_custom_flag:", "mask_history:"):
        assert sum(key in line for line in lines) == 1, key
    assert len(lines) == 6  # one line per refused key, no more


def test_dataset_from_a_llamafactory_dataset_dir_is_registered_on_train(fresh_home, tmp_path):
    lf_data = tmp_path / "LLaMA-Factory" / "data"
    lf_data.mkdir(parents=True)
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(6)]
    (lf_data / "my_alpaca.json").write_text(json.dumps(rows))
    (lf_data / "dataset_info.json").write_text(json.dumps({"my_alpaca": {"file_name": "my_alpaca.json"}}))
    text = LLAMA3_LORA_SFT.replace("dataset: identity,instruct_en_zh", "dataset: my_alpaca")
    cfg, t = load_run_config(text, "lf.yaml", base_dir=tmp_path / "LLaMA-Factory", register=False)
    assert "tunesmith data import-info" in "\n".join(t.report())
    from tunesmith.engine.data import get_dataset

    assert get_dataset("my_alpaca") is None  # dry runs register nothing
    cfg, t = load_run_config(text, "lf.yaml", base_dir=tmp_path / "LLaMA-Factory", register=True)
    assert cfg.data.datasets == ["my_alpaca"] and get_dataset("my_alpaca") is not None
    with pytest.raises(ConfigError, match="nope.*unknown to Tunesmith"):
        load_run_config(text.replace("my_alpaca", "nope"), "lf.yaml", base_dir=tmp_path / "LLaMA-Factory")


def test_cli_dry_run_and_convert(tmp_path, capsys):
    from tunesmith.cli.main import main

    lf = tmp_path / "llama3_lora_sft.yaml"
    lf.write_text(LLAMA3_LORA_SFT)
    assert main(["train", str(lf), "--dry-run", "--set", "training.max_steps=3"]) == 0
    out = capsys.readouterr()
    cfg = RunConfig.from_yaml_text(out.out)
    assert cfg.training.max_steps == 3 and cfg.lora.r == 8
    assert "lora_rank -> lora.r = 8" in out.err
    dest = tmp_path / "run.yaml"
    assert main(["config", "convert", str(lf), "-o", str(dest)]) == 0
    assert RunConfig.from_yaml(dest).training.lr_scheduler == "cosine"
    capsys.readouterr()
    bad = tmp_path / "bad.yaml"
    bad.write_text(LLAMA3_LORA_SFT + "stage_two_magic: true\n")
    assert main(["train", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "stage_two_magic: a LLaMA-Factory option Tunesmith does not know" in err and len(err.splitlines()) == 1


def test_tunesmith_yaml_still_reads_as_before(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(RunConfig().to_yaml())
    cfg, t = read_config(p)
    assert t is None and cfg == RunConfig()


@pytest.mark.slow
def test_translated_yaml_trains_on_the_demo_model(tunesmith_home, tmp_path):
    """LLaMA-Factory's sft lora example, as a file, through `tunesmith train` to a saved adapter,
    with report_to: tensorboard writing readable event files into the run folder."""
    from tunesmith.cli.main import main
    from tunesmith.engine import jobs

    text = (LLAMA3_LORA_SFT.replace("dataset: identity,instruct_en_zh", "dataset: identity")
            .replace("bf16: true", "bf16: false").replace("report_to: none", "report_to: tensorboard")
            .replace("template: llama3", "template: chatml").replace("logging_steps: 10", "logging_steps: 1"))
    lf = tmp_path / "llama3_lora_sft.yaml"
    lf.write_text(text + "max_steps: 3\nuse_rslora: true\n")
    # (cutoff and accumulation cut down so the CPU run stays short)
    assert main(["train", str(lf), "--set", "data.cutoff_len=128", "--set", "training.gradient_accumulation=1"]) == 0
    run = [r for r in jobs.list_runs() if r.name == "llama3-8b-lora-sft"][-1]
    assert run.status == "completed" and run.has_adapter
    acfg = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert acfg["r"] == 8 and acfg["lora_alpha"] == 16 and acfg["use_rslora"] is True
    assert acfg["base_model_name_or_path"] == "tunesmith/demo"  # portable, not this machine's path
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.run_dir / "tensorboard"))
    acc.Reload()
    losses = acc.Scalars("train/loss")
    assert [s.step for s in losses] == [1, 2, 3] and all(s.value > 0 for s in losses)


# The shapes of LLaMA-Factory's examples/train_qlora/llama3_lora_sft_bnb_npu.yaml (4-bit),
# train_full/llama3_full_sft.yaml and train_lora/llama3_lora_dpo.yaml, over the sft example.
EXAMPLES = {
    "qlora": {"quantization_bit": 4, "quantization_method": "bnb", "double_quantization": False},
    "full": {"finetuning_type": "full", "lora_rank": None, "lora_target": None, "learning_rate": 1.0e-5},
    "dpo": {"stage": "dpo", "pref_beta": 0.1, "pref_loss": "sigmoid", "dataset": "preference_pairs",
            "learning_rate": 5.0e-6},
}


def test_preference_keys_map_to_the_objective_and_its_settings():
    def objective(**changes):
        cfg = RunConfig.from_dict(translate(_lf(**{**EXAMPLES["dpo"], **changes}), "dpo.yaml").config)
        return cfg.objective, cfg.objective_settings

    lf_dpo = {"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "sft_weight": 0.0}  # LLaMA-Factory's defaults
    assert objective() == ("dpo", lf_dpo)
    assert objective(pref_loss="ipo", pref_ftx=0.5) == ("dpo", {**lf_dpo, "loss_type": "ipo", "sft_weight": 0.5})
    assert objective(pref_loss="orpo", pref_beta=0.2) == ("orpo", {"beta": 0.2})
    assert objective(pref_loss="simpo", pref_beta=None, simpo_gamma=0.7) == (
        "simpo", {"beta": 0.1, "label_smoothing": 0.0, "sft_weight": 0.0, "gamma": 0.7})
    with pytest.raises(ConfigError, match="pref_ftx: with pref_loss orpo"):
        objective(pref_loss="orpo", pref_ftx=1.0)
    with pytest.raises(ConfigError, match="pref_loss: kto_pair is not supported"):
        objective(pref_loss="kto_pair")


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_llamafactory_examples_train_on_the_demo_model(tunesmith_home, example):
    from tunesmith.engine import jobs

    data = _lf(**{"dataset": "identity", **EXAMPLES[example]}, output_dir=f"saves/demo/{example}", template="chatml",
               bf16=False)
    cfg = RunConfig.from_dict(translate(data, f"{example}.yaml").config).with_overrides(
        ["training.max_steps=2", "data.cutoff_len=128", "training.gradient_accumulation=1", "training.batch_size=2",
         "data.max_samples=8"])
    assert cfg.method == {"qlora": "qlora", "full": "full"}.get(example, "lora")
    assert cfg.objective == ("dpo" if example == "dpo" else "sft")
    run = jobs.wait(jobs.submit(cfg), timeout=900)
    assert run.status == "completed", run.error
    assert run.has_full_model if example == "full" else run.has_adapter
    losses = [e["loss"] for e in map(json.loads, (run.run_dir / "events.jsonl").read_text().splitlines())
              if e.get("type") == "train"]
    assert len(losses) == 2 and all(x > 0 for x in losses)
