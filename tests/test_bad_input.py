"""Bad input gives one clear message naming the problem, and leaves nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import jobs, registry
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError, DataError, ModelError


def _home_is_clean(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())
    assert registry.all_runs() == []


def test_unknown_model_path(fresh_home):
    cfg = RunConfig().with_overrides(["model.name_or_path=/nonexistent/model"])
    with pytest.raises(ModelError, match="no such folder /nonexistent/model"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


def test_model_path_that_is_not_a_model(fresh_home, tmp_path):
    (tmp_path / "notamodel").mkdir()
    cfg = RunConfig().with_overrides([f"model.name_or_path={tmp_path / 'notamodel'}"])
    with pytest.raises(ModelError, match="no config.json"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


@pytest.mark.parametrize("content", ["", "[]", "\n\n"])
def test_empty_dataset(fresh_home, tmp_path, content):
    f = tmp_path / "empty.json"
    f.write_text(content)
    cfg = RunConfig().with_overrides([f"data.datasets=[{f}]"])
    with pytest.raises(DataError) as e:
        jobs.submit(cfg)
    assert "empty.json" in str(e.value)
    _home_is_clean(fresh_home)


def test_unknown_dataset_name(fresh_home):
    cfg = RunConfig().with_overrides(["data.datasets=[no_such_dataset]"])
    with pytest.raises(DataError, match="no_such_dataset"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


def test_wrong_field_type_in_yaml_cli(fresh_home, tmp_path, capsys):
    f = tmp_path / "run.yaml"
    f.write_text("training:\n  learning_rate: fast\n")
    assert main(["train", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training.learning_rate" in err and "Traceback" not in err
    _home_is_clean(fresh_home)


def test_missing_config_file_cli(fresh_home, capsys):
    assert main(["train", "/nope/run.yaml"]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_webui_refuses_public_host_without_auth(fresh_home, monkeypatch):
    monkeypatch.delenv("TUNESMITH_AUTH", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_AUTH"}
    p = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "webui", "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(fresh_home.parent))
    assert p.returncode == 2
    assert "--auth user:password" in p.stderr and "TUNESMITH_AUTH" in p.stderr
    assert "Traceback" not in p.stderr


def test_bad_auth_value():
    from tunesmith.studio.app import parse_auth

    with pytest.raises(ConfigError, match="user:password"):
        parse_auth("justaname")
    assert parse_auth("me:pw:with:colons") == ("me", "pw:with:colons")


def test_unknown_run_id(fresh_home, capsys):
    assert main(["export", "nope", "--format", "adapter"]) == 2
    assert "No run with id 'nope'" in capsys.readouterr().err


# ---- the table: every bad input is one line naming what is wrong, exit 2, nothing written ----------

_DEEP_BLOCK = "".join(" " * i + f"k{i}:\n" for i in range(900)) + " " * 900 + "1\n"
_ALIAS_BOMB = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{c}: &{c} [" + ",".join(["*" + p] * 10) + "]\n" for p, c in zip("abcdefgh", "bcdefghi"))

# Dataset files the table refers to as {NAME}; written into the test's folder.
_FILES: dict[str, str | bytes] = {
    "empty.jsonl": "",
    "bad_rows.jsonl": '{"instruction": "hi", "output": "hello"}\n{"instruction": "x"}\n',
    "not_json.jsonl": "this is not json\n",
    "binary.jsonl": b"\x00\x01\x02\xff\xfe" * 100,
    "wrong_type.json": '{"instruction": "a", "output": "b"}',
    "numbers.jsonl": '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": 6}]}\n',
    "huge_row.jsonl": None,  # built in the test: one row over bounds.MAX_ROW_CHARS
    "notamodel/": None,
}

# (case id, config text or bytes, --set overrides, what the message must name)
BAD_CONFIGS: list[tuple[str, str | bytes, list[str], str]] = [
    # the file itself
    ("empty-yaml", "", [], "the config is empty"),
    ("comments-only", "# nothing here\n\n", [], "the config is empty"),
    ("null-document", "null\n", [], "the config is empty"),
    ("top-level-list", "- model\n- data\n", [], "expected a mapping"),
    ("top-level-string", "just words\n", [], "expected a mapping"),
    ("top-level-number", "42\n", [], "expected a mapping"),
    ("binary-with-nul", b"\x00\x01\x02\x03PK\x03\x04", [], "binary file"),
    ("binary-not-utf8", b"\xff\xfe\xfa\xfb\xfc", [], "binary file"),
    ("deep-flow-nesting", "a: " + "[" * 20000 + "]" * 20000 + "\n", [], "nested"),
    ("deep-block-nesting", _DEEP_BLOCK, [], "nested"),
    ("alias-bomb", _ALIAS_BOMB, [], "unknown field"),
    ("unclosed-bracket", "model: [unclosed\n", [], "not valid YAML"),
    ("tab-indent", "model:\n\tname_or_path: x\n", [], "not valid YAML"),
    ("duplicate-colon", "training:\n  max_steps: 1: 2\n", [], "not valid YAML"),
    # structure
    ("unknown-section", "foo: 1\n", [], "foo: unknown field"),
    ("unknown-field", "training:\n  lr: 1\n", [], "training.lr: unknown field"),
    ("section-not-mapping", "model: 5\n", [], "model:"),
    ("section-is-list", "training: [1, 2]\n", [], "training:"),
    # training numbers
    ("lr-word", "training:\n  learning_rate: fast\n", [], "training.learning_rate"),
    ("lr-zero", "training:\n  learning_rate: 0\n", [], "training.learning_rate"),
    ("lr-negative", "training:\n  learning_rate: -1e-4\n", [], "training.learning_rate"),
    ("lr-too-big", "training:\n  learning_rate: 2.0\n", [], "training.learning_rate"),
    ("lr-nan", "training:\n  learning_rate: .nan\n", [], "training.learning_rate"),
    ("epochs-inf", "training:\n  num_epochs: .inf\n", [], "training.num_epochs"),
    ("epochs-zero", "training:\n  num_epochs: 0\n", [], "training.num_epochs"),
    ("epochs-negative", "training:\n  num_epochs: -2\n", [], "training.num_epochs"),
    ("max-steps-zero", "training:\n  max_steps: 0\n", [], "training.max_steps"),
    ("max-steps-fraction", "training:\n  max_steps: 1.5\n", [], "training.max_steps"),
    ("max-steps-word", "training:\n  max_steps: ten\n", [], "training.max_steps"),
    ("seed-2-32", "training:\n  seed: 4294967296\n", [], "training.seed"),
    ("seed-negative", "training:\n  seed: -1\n", [], "training.seed"),
    ("seed-huge", "training:\n  seed: 1e999\n", [], "training.seed"),
    ("batch-zero", "training:\n  batch_size: 0\n", [], "training.batch_size"),
    ("accumulation-zero", "training:\n  gradient_accumulation: 0\n", [], "training.gradient_accumulation"),
    ("warmup-one", "training:\n  warmup_ratio: 1.0\n", [], "training.warmup_ratio"),
    ("warmup-negative", "training:\n  warmup_ratio: -0.1\n", [], "training.warmup_ratio"),
    ("weight-decay-negative", "training:\n  weight_decay: -1\n", [], "training.weight_decay"),
    ("grad-norm-negative", "training:\n  max_grad_norm: -1\n", [], "training.max_grad_norm"),
    ("grad-norm-inf", "training:\n  max_grad_norm: .inf\n", [], "training.max_grad_norm"),
    ("optimizer-unknown", "training:\n  optimizer: adam9000\n", [], "training.optimizer"),
    ("scheduler-unknown", "training:\n  lr_scheduler: wavy\n", [], "training.lr_scheduler"),
    ("precision-unknown", "training:\n  precision: fp8\n", [], "training.precision"),
    ("memory-mode-unknown", "training:\n  memory_mode: turbo\n", [], "training.memory_mode"),
    ("logging-steps-zero", "training:\n  logging_steps: 0\n", [], "training.logging_steps"),
    ("save-steps-zero", "training:\n  save_steps: 0\n", [], "training.save_steps"),
    ("eval-steps-zero", "training:\n  eval_steps: 0\n", [], "training.eval_steps"),
    ("checkpointing-number", "training:\n  gradient_checkpointing: 7\n", [], "training.gradient_checkpointing"),
    # LoRA, method, quantization, kernels
    ("lora-r-zero", "lora:\n  r: 0\n", [], "lora.r"),
    ("lora-r-huge", "lora:\n  r: 5000\n", [], "lora.r"),
    ("lora-alpha-zero", "lora:\n  alpha: 0\n", [], "lora.alpha"),
    ("lora-dropout-one", "lora:\n  dropout: 1.0\n", [], "lora.dropout"),
    ("lora-dropout-nan", "lora:\n  dropout: .nan\n", [], "lora.dropout"),
    ("lora-unknown-target", "lora:\n  target_modules: [foo_proj]\n", [], "lora.target_modules: foo_proj"),
    ("lora-unknown-target-csv", "lora:\n  target_modules: q_proj,nope_proj\n", [], "lora.target_modules: nope_proj"),
    ("lora-empty-targets", "lora:\n  target_modules: []\n", [], "lora.target_modules"),
    ("method-unknown", "method: dora\n", [], "method"),
    ("quant-bits", "quantization:\n  bits: 3\n", [], "quantization.bits"),
    ("quant-type", "quantization:\n  quant_type: int4\n", [], "quantization.quant_type"),
    ("quant-dtype", "quantization:\n  compute_dtype: float8\n", [], "quantization.compute_dtype"),
    ("kernels-unknown", "kernels: maybe\n", [], "kernels"),
    ("trust-remote-word", "model:\n  trust_remote_code: perhaps\n", [], "model.trust_remote_code"),
    # data section
    ("val-size-one", "data:\n  val_size: 1.0\n", [], "data.val_size"),
    ("val-size-negative", "data:\n  val_size: -0.5\n", [], "data.val_size"),
    ("cutoff-tiny", "data:\n  cutoff_len: 8\n", [], "data.cutoff_len"),
    ("max-samples-zero", "data:\n  max_samples: 0\n", [], "data.max_samples"),
    ("format-unknown", "data:\n  format: csvish\n", [], "data.format"),
    ("datasets-empty", "data:\n  datasets: []\n", [], "data.datasets"),
    ("dataset-unknown-name", "data:\n  datasets: [no_such_dataset_xyz]\n", [], "no_such_dataset_xyz"),
    ("dataset-missing-file", "data:\n  datasets: [/nonexistent/file.jsonl]\n", [], "/nonexistent/file.jsonl"),
    ("dataset-empty-file", "data:\n  datasets: [{empty.jsonl}]\n", [], "empty.jsonl"),
    ("dataset-bad-rows", "data:\n  datasets: [{bad_rows.jsonl}]\n", [], "bad_rows.jsonl line 2"),
    ("dataset-not-json", "data:\n  datasets: [{not_json.jsonl}]\n", [], "not_json.jsonl"),
    ("dataset-binary", "data:\n  datasets: [{binary.jsonl}]\n", [], "binary.jsonl"),
    ("dataset-non-string-content", "data:\n  datasets: [{numbers.jsonl}]\n", [], "numbers.jsonl"),
    ("dataset-huge-row", "data:\n  datasets: [{huge_row.jsonl}]\n", [], "row_too_large"),
    ("val-file-missing", "data:\n  val_file: /nonexistent/val.jsonl\n", [], "/nonexistent/val.jsonl"),
    # model
    ("model-missing-folder", "model:\n  name_or_path: /nonexistent/model\n", [], "model.name_or_path"),
    ("model-empty-name", "model:\n  name_or_path: ''\n", [], "model.name_or_path"),
    ("model-not-a-model", "model:\n  name_or_path: {notamodel/}\n", [], "model.name_or_path"),
    # output
    ("run-name-escape-codes", 'output:\n  run_name: "evil\\e[2J\\e]0;x\\a"\n', [], "output.run_name"),
    ("run-name-too-long", "output:\n  run_name: " + "n" * 81 + "\n", [], "output.run_name"),
    # --set overrides
    ("set-without-equals", "training:\n  max_steps: 2\n", ["training.max_steps"], "--set"),
    ("set-into-a-value", "training:\n  max_steps: 2\n", ["training.max_steps.x=1"], "--set"),
    ("set-seed-too-big", "training:\n  max_steps: 2\n", ["training.seed=99999999999"], "training.seed"),
    ("set-unknown-field", "training:\n  max_steps: 2\n", ["training.speed=9"], "training.speed"),
    ("set-inf", "training:\n  max_steps: 2\n", ["training.num_epochs=.inf"], "training.num_epochs"),
]


def _write_files(folder: Path, config: str) -> dict[str, str]:
    """The files `config` refers to, written into `folder`."""
    from tunesmith.engine.data.bounds import MAX_ROW_CHARS

    out = {}
    for name, content in _FILES.items():
        if "{" + name + "}" not in config:
            continue
        p = folder / name
        if name.endswith("/"):
            p.mkdir(exist_ok=True)
        elif name == "huge_row.jsonl":
            with open(p, "w") as f:
                f.write('{"text": "' + "x" * (MAX_ROW_CHARS + 10) + '"}\n')
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        out[name] = str(p)
    return out


@pytest.mark.parametrize("case, config, overrides, expect", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_input_table(fresh_home, tmp_path, capsys, case, config, overrides, expect):
    if isinstance(config, str):
        for name, path in _write_files(tmp_path, config).items():
            config = config.replace("{" + name + "}", path)
    f = tmp_path / "run.yaml"
    if isinstance(config, bytes):
        f.write_bytes(config)
    else:
        # A base that passes on its own (the demo model): the case's lines are the only fault.
        base = "" if config.strip() in ("", "null") or config.startswith(("#", "-", "just", "42")) else \
            "model:\n  name_or_path: tunesmith/demo\n"
        if config.startswith(("model:", "a:", "k0:")) or "name_or_path" in config:
            base = ""
        f.write_text(base + config)
    args = ["train", str(f)] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert "Traceback" not in err and "\x1b" not in err
    assert expect in err, err
    _home_is_clean(fresh_home)


def test_the_table_covers_the_reported_failures():
    """Issue 11's list: deep YAML, binary config, seed >= 2^32, num_epochs .inf, unknown LoRA
    target modules, empty YAML, run names with escape codes (and 68 cases at least)."""
    ids = {c[0] for c in BAD_CONFIGS}
    assert {"deep-flow-nesting", "deep-block-nesting", "binary-with-nul", "binary-not-utf8", "seed-2-32",
            "epochs-inf", "lora-unknown-target", "empty-yaml", "run-name-escape-codes"} <= ids
    assert len(BAD_CONFIGS) >= 68


@pytest.mark.parametrize("case, config, overrides, expect",
                         [c for c in BAD_CONFIGS if isinstance(c[1], str) and not c[2]],
                         ids=[c[0] for c in BAD_CONFIGS if isinstance(c[1], str) and not c[2]])
def test_bad_input_table_in_the_studio(fresh_home, tmp_path, case, config, overrides, expect):
    """The same inputs through the studio's error path: a one-line toast naming the field."""
    import gradio as gr

    from tunesmith.studio.context import user_errors

    for name, path in _write_files(tmp_path, config).items():
        config = config.replace("{" + name + "}", path)

    @user_errors
    def start(text: str) -> str:
        return jobs.submit(RunConfig.from_yaml_text(text, source="config"), dedupe=True)

    with pytest.raises(gr.Error) as e:
        start(config)
    msg = e.value.message
    assert "\n" not in msg and "Traceback" not in msg and "\x1b" not in msg
    # the studio names a field by its widget's label once the studio is built (i18n.plain), else by its path
    from tunesmith.studio.i18n import FIELD_LABELS

    assert expect in msg or (expect in FIELD_LABELS and FIELD_LABELS[expect] in msg), msg
    _home_is_clean(fresh_home)


@pytest.mark.parametrize("name, offline, says", [
    ("NO_SUCH_RUN", False, "No run or local model is named 'NO_SUCH_RUN'"),
    ("./no/such/folder", False, "No run or local model is named './no/such/folder'"),
    ("nobody/no-such-model-xyz", True, "not in the local hub cache either (HF_HUB_OFFLINE is set)"),
    ("nobody/no-such-model-xyz", False, "No run or local model is named 'nobody/no-such-model-xyz'"),
])
def test_chat_with_an_unknown_name_answers_in_seconds(fresh_home, monkeypatch, capsys, name, offline, says):
    import time

    from tunesmith.engine.lookup import HUB_LOOKUP_TIMEOUT_S

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.time()
    assert main(["chat", name, "-m", "hi"]) == 2
    took = time.time() - t0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    assert took < HUB_LOOKUP_TIMEOUT_S + 5, took  # not transformers' minute of hub retries


def test_bf16_adapters_are_refused_on_a_gpu_without_bf16():
    """A T4-class GPU computes in fp16 and has no bf16 GEMMs: one line naming the field, not a cuBLAS error."""
    from tunesmith.engine.models import Hardware
    from tunesmith.engine.trainer import Recipe

    recipe = Recipe.__new__(Recipe)  # only what _wrap reads before it touches the model
    recipe.cfg = RunConfig().with_overrides(["method=qlora", "lora.precision=bf16"])
    recipe.hw = Hardware("cuda", False, "Tesla T4")
    with pytest.raises(ConfigError, match=r"lora.precision: bf16 needs a GPU with bf16 .*Tesla T4.*use lora.precision fp32") as e:
        recipe._wrap(None)
    assert "\n" not in str(e.value)
