"""training.extra: the optimizer's and schedule's own options, checked by name and value, reach the run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunesmith.cli.main import main
from tunesmith.engine import jobs
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.engine.training.extra import apply, optimizer_options
from tunesmith.engine.training.optim import build_optimizer, build_scheduler


def _cfg(*overrides: str) -> RunConfig:
    return RunConfig().with_overrides(list(overrides))


def test_options_come_from_the_classes_themselves():
    assert optimizer_options(torch.optim.AdamW) == ["amsgrad", "betas", "eps"]
    assert optimizer_options(torch.optim.SGD) == ["dampening", "momentum", "nesterov"]


def test_a_typo_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError) as e:
        _cfg("training.extra={betaz: [0.9, 0.95]}")
    msg = str(e.value)
    assert "training.extra: betaz is not an option of AdamW" in msg and "did you mean betas?" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("extra, says", [
    ("{lr: 0.1}", "set training.learning_rate instead"),                   # RunConfig names it
    ("{fused: true}", "Tunesmith sets this itself"),
    ("{eps: .inf}", "not a finite number"),
    ("{betas: [1.5, 0.9]}", "Invalid beta parameter at index 0: 1.5"),      # torch's own check
    ("{num_cycles: 2}", "did you mean"),                                    # cosine's, not linear's
    ("{warmup_steps: -1}", "warmup_steps: a whole number of steps"),
    ("{adam_beta2: 0.95, betas: [0.9, 0.99]}", "give betas or adam_beta2, not both"),
])
def test_refusals_name_the_key(extra, says):
    with pytest.raises(ConfigError, match="training.extra") as e:
        _cfg(f"training.extra={extra}")
    assert says in str(e.value)


def test_the_studio_box_text_and_the_schedule_and_optimizer_choice():
    cfg = _cfg("training.extra=betas: [0.9, 0.95]\neps: 1e-6")  # the box's YAML text; 1e-6 is a string to YAML 1.1
    assert cfg.training.extra == {"betas": [0.9, 0.95], "eps": 1e-6}
    assert _cfg("training.extra=").training.extra == {}
    assert _cfg("training.lr_scheduler=cosine", "training.extra={num_cycles: 2}").training.extra == {"num_cycles": 2}
    assert _cfg("training.optimizer=sgd", "training.extra={momentum: 0.9, nesterov: true}").training.extra
    with pytest.raises(ConfigError, match="Nesterov momentum requires a momentum"):
        _cfg("training.optimizer=sgd", "training.extra={nesterov: true}")
    # the saved YAML reads back the same
    assert RunConfig.from_yaml_text(cfg.to_yaml()).training.extra == cfg.training.extra


def test_apply_sets_every_param_group_and_rebuilds_the_schedule():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    t = _cfg("training.weight_decay=0.1", "training.learning_rate=0.01",
             "training.extra={adam_beta2: 0.95, eps: 1.0e-5, warmup_steps: 4}").training
    opt, _ = build_optimizer(model, t, "cpu")
    sched = apply(opt, build_scheduler(opt, t, 10), t, 10)
    assert len(opt.param_groups) == 2  # decay and no-decay groups both get the options
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-5 for g in opt.param_groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.0025, 0.005, 0.0075, 0.01])  # four warmup steps, not ceil(0.03 x 10) = 1


def test_cli_refuses_a_typo_with_exit_2(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"training": {"extra": {"beta": [0.9, 0.95]}}}))
    assert main(["train", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "training.extra: beta is not an option" in err and "did you mean betas?" in err
    assert len(err.splitlines()) == 1


def test_llamafactory_adam_options_land_in_extra():
    from tunesmith.engine.compat.llamafactory import translate

    t = translate({"model_name_or_path": "tunesmith/demo", "stage": "sft", "finetuning_type": "lora",
                   "dataset": "identity", "template": "qwen", "adam_beta2": 0.95, "warmup_steps": 3,
                   "lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {"num_cycles": 1.0}})
    assert RunConfig.from_dict(t.config).training.extra == {"adam_beta2": 0.95, "warmup_steps": 3, "num_cycles": 1.0}


@pytest.mark.slow
def test_extra_changes_the_real_run(tunesmith_home):
    """The worker trains with the options: they are in the optimizer's saved state, and the warmup
    they ask for shows in the logged learning rate."""
    cfg = _cfg("data.datasets=[identity]", "data.max_samples=8", "data.cutoff_len=96", "training.max_steps=3",
               "training.batch_size=2", "training.gradient_accumulation=1", "training.save_steps=3",
               "training.learning_rate=0.001", "method=lora", "output.run_name=extra-args",
               "training.extra={betas: [0.8, 0.9], eps: 1.0e-5, warmup_steps: 2}")
    run = jobs.wait(jobs.submit(cfg), timeout=900)
    assert run.status == "completed", run.error
    state = torch.load(run.run_dir / "checkpoints" / "checkpoint-3" / "optimizer.pt", weights_only=False)
    assert {(tuple(g["betas"]), g["eps"]) for g in state["param_groups"]} == {((0.8, 0.9), 1e-5)}
    lrs = [e["lr"] for e in map(json.loads, (run.run_dir / "events.jsonl").read_text().splitlines())
           if e.get("type") == "train"]
    assert lrs == pytest.approx([0.0, 0.0005, 0.001])  # two warmup steps (warmup_ratio alone gives one)


def test_the_studio_box_round_trips_and_refuses_a_typo():
    from tunesmith.studio.context import config_from_form, form_value

    cfg = config_from_form({"training.extra": "betas: [0.9, 0.95]\neps: 1.0e-6\n"})
    assert cfg.training.extra == {"betas": [0.9, 0.95], "eps": 1e-6}
    shown = form_value("training.extra", cfg.training.extra)
    assert config_from_form({"training.extra": shown}).training.extra == cfg.training.extra
    assert form_value("training.extra", {}) == ""
    with pytest.raises(ConfigError, match="did you mean betas"):
        config_from_form({"training.extra": "beta: 0.9"})
