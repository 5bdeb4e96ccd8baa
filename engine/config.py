"""RunConfig: the one schema for a fine-tuning run.

The studio form, `tunesmith train CONFIG.yaml` and the YAML saved in every run
directory all build this same pydantic model; nothing below the engine sees
raw UI values or argv. Every field carries a one-line help text (`description`)
that the studio shows next to its widget.

    cfg = RunConfig.from_yaml("run.yaml", overrides=["training.max_steps=20"])
    cfg.to_yaml()

What it does not know: whether a model or dataset exists. The engine checks
those where they are used (engine.models, engine.data) and raises errors that
name the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .errors import ConfigError

DEMO_MODEL = "tunesmith/demo"  # the embedded demo model in assets/demo-model
MAX_CONFIG_BYTES = 1 << 20  # a run config is a few hundred bytes; a bigger file is not one
MAX_YAML_DEPTH = 8  # sections are two levels deep; deeper nesting is a mistake (or an attack on the parser)
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _Section(BaseModel):
    # Unknown keys are mistakes (a typo in YAML would otherwise be ignored); .inf / .nan
    # are never a meaningful learning rate, epoch count or fraction.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)


class ModelConfig(_Section):
    name_or_path: str = Field(
        DEMO_MODEL,
        description="Hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct), a local folder, or tunesmith/demo for the offline demo model.",
    )
    revision: str | None = Field(None, description="Hub branch, tag or commit to load; empty means the default branch.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Only turn on for repositories you trust."
    )
    chat_template: str | None = Field(
        None,
        description="Chat template name (chatml, llama3, qwen, ...); empty uses the tokenizer's own template.",
    )
    # ---- loading options (issue 15) ----
    rope_scaling: Literal["none", "linear", "dynamic", "yarn"] = Field(
        "none", description="Stretch RoPE past the model's trained context: linear interpolates positions, dynamic (NTK) "
        "scales only past the trained length, yarn mixes both; none = as trained.",
    )
    rope_factor: float = Field(2.0, gt=1.0, le=64.0, description="With rope_scaling: new context length / the trained one.")
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention code: auto = the library's default (sdpa); flash_attention_2 needs the flash-attn package.",
    )


class QuantizationConfig(_Section):
    bits: Literal[4, 8, 16] = Field(4, description="Weight bits for the frozen base model under QLoRA (4 = NF4).")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type; NF4 is the QLoRA standard.")
    double_quant: bool = Field(True, description="Also quantize the quantization constants (saves ~0.4 bit/param).")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Dtype for the matmuls; auto = bf16 where the hardware has it, else fp32 on CPU / fp16 on old GPUs."
    )


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank: capacity of the adapter. 8-64 is typical.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r). Often equal to r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input; 0 is fastest and usually fine.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Layers that get adapters: all-linear, or names like q_proj,v_proj."
    )

    # ---- LoRA variants (issue 15) ----
    use_dora: bool = Field(False, description="DoRA: learn each weight's magnitude apart from its direction (more parameters, slower, often better at low rank).")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r, which keeps high ranks stable.")
    init: Literal["default", "gaussian", "pissa", "loftq"] = Field(
        "default", description="Adapter start: default (B = 0), gaussian (A ~ N(0, 1/r)), pissa (the weights' top "
        "singular vectors: faster start), or loftq (QLoRA 4-bit only: starts by correcting the 4-bit rounding; "
        "exports merge into the 4-bit base).",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="What the adapter's own weights are kept and updated in: fp32 keeps small updates "
        "(default); bf16 halves the adapter's memory and is what TRL does for QLoRA (the QLoRA paper's choice), "
        "but updates smaller than bf16's step round away, so its loss falls a little slower.",
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all-linear":
            return [s.strip() for s in v.split(",") if s.strip()]
        return v


class FreezeConfig(_Section):
    trainable_layers: int = Field(2, ge=1, description="method freeze: train only the last N transformer layers; the rest stays frozen.")
    trainable_modules: list[str] | Literal["all"] = Field(
        "all", description="Inside those layers, train only modules whose name contains one of these (e.g. mlp,self_attn); all = whole layers.",
    )
    extra_modules: list[str] = Field(
        default_factory=list, description="Also train these non-layer modules by name (e.g. embed_tokens, lm_head, norm).",
    )

    @field_validator("trainable_modules", "extra_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "all":
            return [s.strip() for s in v.split(",") if s.strip()]
        return v


class DataConfig(_Section):
    datasets: list[str] = Field(
        default_factory=lambda: ["identity"],
        description="Bundled dataset names (see data/dataset_info.json), file paths or hub ids; several are mixed.",
    )
    format: Literal["auto", "alpaca", "sharegpt", "openai", "text", "preference"] = Field(
        "auto", description="Dataset layout; auto detects it from the keys of the rows."
    )
    val_size: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of rows held out for eval loss (0 = none).")
    val_file: str | None = Field(None, description="A separate validation file instead of a split.")
    max_samples: int | None = Field(None, ge=1, description="Use at most this many rows per dataset (for quick trials).")
    cutoff_len: int = Field(1024, ge=16, description="Max tokens per example; longer examples are truncated.")
    train_on_responses_only: bool = Field(
        True, description="Learn only the assistant's replies (prompts are masked from the loss)."
    )
    packing: bool = Field(False, description="Pack several short examples into one sequence (kept apart by attention).")
    drop_invalid: bool = Field(False, description="Skip rows with problems instead of stopping with a report.")

    mix: list[float] | None = Field(
        None, description="Mixing weights, one per dataset in order (e.g. [0.7, 0.3]); empty = all rows of each dataset, concatenated.",
    )

    @field_validator("datasets", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("mix", mode="before")
    @classmethod
    def _mix_text(cls, v: Any) -> Any:
        if isinstance(v, str):  # "0.7, 0.3" from a text box or --set
            v = v.strip().strip("[]")
            return [float(x) for x in v.split(",") if x.strip()] if v else None
        return v

    @field_validator("mix")
    @classmethod
    def _mix_weights(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(w < 0 for w in v) or sum(v) <= 0):
            raise ValueError("mixing weights must be >= 0 with a positive sum, one per dataset")
        return v

    @model_validator(mode="after")
    def _mix_matches(self) -> "DataConfig":
        if self.mix is not None and len(self.mix) != len(self.datasets):
            raise ValueError(f"data.mix has {len(self.mix)} weights for {len(self.datasets)} datasets: give one per dataset")
        return self

    @field_validator("datasets")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("pick at least one dataset")
        return v


class TrainingConfig(_Section):
    num_epochs: float = Field(3.0, gt=0, description="Passes over the data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps; overrides epochs.")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak learning rate; 2e-4 suits LoRA, 1e-5 suits full.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="How the learning rate decays after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Fraction of steps spent ramping the learning rate up.")
    batch_size: int = Field(2, ge=1, description="Examples per device per forward pass.")
    gradient_accumulation: int = Field(4, ge=1, description="Forward passes summed per optimizer step (effective batch = batch x this).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm (0 = off).")
    optimizer: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"] = Field(
        "adamw_torch", description="Optimizer; adamw_8bit saves memory on GPUs."
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward to save memory (stock path; with kernels, memory_mode decides)."
    )
    memory_mode: Literal["auto", "speed", "memory"] = Field(
        "auto",
        description="With Tunesmith kernels on a GPU: auto/speed = fastest settings that fit free GPU memory; "
        "memory = least memory (every layer checkpointed, offloaded to CPU RAM).",
    )
    seed: int = Field(42, ge=0, lt=2**32, description="Random seed for data order and adapter init (0 to 2^32-1).")
    logging_steps: int = Field(1, ge=1, description="Write a metrics point every N optimizer steps.")
    save_steps: int = Field(100, ge=1, description="Save a checkpoint every N optimizer steps.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (default: at each save).")
    early_stopping_patience: int | None = Field(
        None, ge=1,
        description="Stop when the eval loss has not improved for this many evaluations in a row, and keep the "
        "best adapter (needs a validation set: data.val_size or data.val_file). Empty = train to the end.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Training precision; auto = bf16 on GPUs that support it, fp32 on CPU."
    )
    padding_free: bool = Field(
        True, description="Lay the examples of a forward pass end to end, no padding (kept apart by attention; "
        "models whose attention cannot do that are padded)."
    )
    group_by_length: bool = Field(
        False, description="Order rows so similar lengths train together (fewer forward passes; less random order)."
    )
    tokens_per_forward: int | None = Field(
        None, ge=16, description="Most tokens in one forward pass; empty = chosen from memory_mode (auto: a whole "
        "optimizer step when it fits; memory: cutoff_len)."
    )
    # ---- issue 15 ----
    neftune_alpha: float | None = Field(
        None, ge=0.0, le=100.0, description="NEFTune: add uniform noise of this scale to input embeddings while training (5 is common; empty = off).",
    )
    report_to: list[Literal["none", "tensorboard", "wandb", "mlflow", "trackio", "swanlab"]] = Field(
        default_factory=list, description="Experiment trackers that also get the metrics (tensorboard, wandb, mlflow, trackio, swanlab; several allowed).",
    )

    extra: dict[str, Any] = Field(
        default_factory=dict, description="More options for the optimizer and schedule, by their own names (e.g. "
        "betas: [0.9, 0.95], eps: 1e-6, num_cycles: 0.5, warmup_steps: 10); unknown names are refused.",
    )

    @field_validator("extra", mode="before")
    @classmethod
    def _extra_text(cls, v: Any) -> Any:
        if v is None:
            return {}
        if isinstance(v, str):  # the studio's "extra arguments" box holds YAML text
            try:
                v = yaml.safe_load(v) if v.strip() else {}
            except yaml.YAMLError:
                raise ValueError("write one option a line, as YAML: name: value (e.g. eps: 1e-6)") from None
            if v is None:
                return {}
            if not isinstance(v, dict):
                raise ValueError("write one option a line, as YAML: name: value (e.g. eps: 1e-6)")
        if isinstance(v, dict):
            from .training.extra import numbers

            v = {k: numbers(x) for k, x in v.items()}
        return v

    @field_validator("extra")
    @classmethod
    def _extra_known(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        d = info.data
        if v and {"optimizer", "lr_scheduler", "learning_rate"} <= d.keys():
            from .training.extra import check  # imports torch: only when there is something to check

            check(v, d["optimizer"], d["lr_scheduler"], d["learning_rate"])
        return v

    @field_validator("report_to", mode="before")
    @classmethod
    def _split_trackers(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        return [x for x in v if x != "none"] if isinstance(v, list) else v


class ResourcesConfig(_Section):
    gpus: Literal["auto"] | int | list[int] = Field(
        "auto",
        description="GPUs to train on: auto (one free GPU), a count (2: any two free GPUs, one process each), "
        "or indices like [0, 1] or [1]. The run waits in the queue until they are free.",
    )
    processes: int | None = Field(
        None, ge=1, le=64,
        description="Training processes (default: one per GPU). On a machine without GPUs, 2+ runs data-parallel "
        "CPU processes over gloo: slow, for trying the multi-GPU path.",
    )
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="Several GPUs: ddp gives each GPU the whole model (fastest); fsdp shards weights, adapter and "
        "optimizer across them (LoRA/QLoRA, for models one GPU cannot hold); auto picks fsdp only when the fit "
        "check says one GPU is too small.",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        # "0,1" (CLI --gpus, a studio textbox) and "2" arrive as strings
        # "0,1", "[1]" and "1," are indices; "2" is a count.
        if isinstance(v, str):
            v = v.strip()
            listed = v.startswith("[") or "," in v
            v = v.strip("[]").strip()
            if v in ("", "auto"):
                return "auto"
            parts = [s.strip() for s in v.split(",") if s.strip()]
            if not parts or not all(s.isdigit() for s in parts):
                raise ValueError("use auto, a count like 2, or GPU indices like 0,1 (GPU 1 alone: [1] or 1,)")
            return [int(s) for s in parts] if listed else int(parts[0])
        return v

    @field_validator("gpus")
    @classmethod
    def _check(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("use auto, a count like 2, or GPU indices like 0,1")
        if isinstance(v, int) and v < 1:
            raise ValueError("a GPU count must be at least 1 (auto picks one)")
        if isinstance(v, list):
            if not v or any(i < 0 for i in v) or len(set(v)) != len(v):
                raise ValueError("list each GPU index (0, 1, ...) once")
        return v


class OutputConfig(_Section):
    run_name: str | None = Field(None, max_length=80, description="A name for this run; empty picks one from model and data.")

    @field_validator("run_name")
    @classmethod
    def _clean(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if _CONTROL_CHARS.search(v):
            raise ValueError("control characters (such as terminal escape codes) are not allowed in a run name")
        return v or None


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="What to fine-tune.")
    objective: str = Field(
        "sft", description="What to learn: sft (replies to prompts), pretrain (every token of the text), dpo / orpo / "
        "simpo / kto (preferences), reward (a reward model), grpo (rewarded answers)."
    )
    objective_settings: dict[str, Any] = Field(
        default_factory=dict, description="Options of the chosen objective (e.g. beta for a preference loss)."
    )
    method: Literal["qlora", "lora", "full", "freeze"] = Field(
        "qlora", description="qlora = 4-bit base + LoRA (least memory); lora = 16-bit base + LoRA; full = all weights; "
        "freeze = only the last layers (see freeze).",
    )
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig, description="QLoRA quantization.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter shape.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Which weights method freeze trains.")
    data: DataConfig = Field(default_factory=DataConfig, description="Training data.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimization.")
    kernels: Literal["auto", "on", "off"] = Field(
        "auto", description="Tunesmith's Triton kernels: auto uses them where they apply, off runs stock code."
    )
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Which GPUs the run uses.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where results go.")

    @model_validator(mode="after")
    def _fsdp_method(self) -> "RunConfig":
        if self.resources.strategy == "fsdp" and self.method not in ("lora", "qlora"):
            raise ValueError(f"resources.strategy: fsdp shards LoRA and QLoRA runs only; method {self.method} "
                             "needs strategy ddp (or auto)")
        if self.resources.strategy == "fsdp" and self.objective == "grpo":
            raise ValueError("resources.strategy: fsdp cannot shard grpo (each process generates answers of its own "
                             "length); use strategy ddp")
        if self.resources.strategy == "fsdp" and self.method == "qlora" and self.quantization.bits == 8:
            raise ValueError("resources.strategy: fsdp shards 4-bit QLoRA, not 8-bit; set quantization.bits 4 "
                             "or strategy ddp")
        return self

    @model_validator(mode="after")
    def _loftq_needs_4bit(self) -> "RunConfig":
        # LoftQ fits the adapter to the 4-bit base's rounding error. A 16-bit base (method lora) has none:
        # PEFT's in-memory LoftQ would swap that base for its 4-bit rounding, costing 16-bit memory for
        # 4-bit quality, and every later use would need that rewritten base. qlora gets the same start
        # in a quarter of the memory, so lora is refused with that pointer rather than half-supported.
        if self.lora.init != "loftq" or self.method not in ("lora", "qlora"):
            return self
        if self.method != "qlora" or self.quantization.bits != 4:
            raise ValueError("lora.init: loftq corrects the rounding of a 4-bit base; use method qlora with "
                             "quantization.bits 4 (or init pissa for a 16-bit base)")
        if self.lora.use_dora:
            raise ValueError("lora.init: loftq with lora.use_dora is not supported (DoRA's magnitudes would "
                             "start from the uncorrected 4-bit weights); turn one of them off")
        return self

    @model_validator(mode="after")
    def _known_objective(self) -> "RunConfig":
        from .objectives import names, parse_settings

        if self.objective not in names():
            raise ValueError(f"objective {self.objective!r} is not one of: {', '.join(names())}")
        try:
            parse_settings(self.objective, self.objective_settings)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
            raise ValueError(f"objective_settings for {self.objective}: {bad}") from None
        return self

    # ---- YAML round trip -------------------------------------------------

    def to_yaml(self) -> str:
        """The exact YAML `tunesmith train` accepts for this config."""
        header = "# Tunesmith run config. Launch with: tunesmith train THIS_FILE.yaml\n"
        return header + yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_explain(e, source)) from None

    @classmethod
    def from_yaml_text(cls, text: str, overrides: list[str] | None = None, source: str = "config") -> "RunConfig":
        data = parse_config_text(text, source)
        for item in overrides or []:
            apply_override(data, item)
        return cls.from_dict(data, source)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "RunConfig":
        return cls.from_yaml_text(read_config_text(path), overrides, source=str(Path(path)))

    def with_overrides(self, overrides: list[str]) -> "RunConfig":
        data = self.model_dump(mode="json")
        for item in overrides:
            apply_override(data, item)
        return RunConfig.from_dict(data, "--set")


def read_config_text(path: str | Path) -> str:
    """A config file's text; ConfigError for a missing, oversized or binary file.
    (engine.compat reads LLaMA-Factory files through this too.)"""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file. Write one with the studio's Show YAML, or see README.md.")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}: {p.stat().st_size} bytes is too big for a run config (at most "
                          f"{MAX_CONFIG_BYTES} bytes); is it a dataset? Datasets go in data.datasets.")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: this is a binary file, not a YAML config (not UTF-8 text). Write one with "
                          "the studio's Show YAML, or see README.md.") from None
    return text


def parse_config_text(text: str, source: str = "config") -> dict[str, Any]:
    """YAML text -> the mapping it holds; ConfigError for binary, invalid, empty, non-mapping or too deeply
    nested text (checked before the parser recurses)."""
    if "\x00" in text:
        raise ConfigError(f"{source}: this is a binary file, not a YAML config. Write one with the studio's "
                          "Show YAML, or see README.md.")
    if _nesting(text) > MAX_YAML_DEPTH * 4:
        raise ConfigError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep; a run config has sections "
                          "(model:, data:, training: ...) holding plain values.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{source}: not valid YAML{at} ({problem}). Check indentation and quotes.") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a run config.") from None
    if data is None:
        # An empty file would silently train every default; that is never what was meant.
        raise ConfigError(f"{source}: the config is empty. Give at least model: and data: sections "
                          "(the studio's Show YAML writes a complete one).")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model:, data:, training: ...), got {type(data).__name__}.")
    if _depth(data) > MAX_YAML_DEPTH:
        raise ConfigError(f"{source}: nested more than {MAX_YAML_DEPTH} levels deep; a run config has sections "
                          "(model:, data:, training: ...) holding plain values.")
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `section.key=value` override (value parsed as YAML) in place."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.max_steps=20.")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {part} is not a section.")
        node = nxt
    node[parts[-1]] = value


def _nesting(text: str) -> int:
    """The deepest run of open brackets in flow-style YAML, found before the parser recurses."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _depth(x: Any, level: int = 0, seen: set[int] | None = None) -> int:
    """How deep `x` nests; a node reached twice (a YAML alias) is walked once, so alias bombs stay cheap."""
    seen = set() if seen is None else seen
    if level > MAX_YAML_DEPTH or not isinstance(x, (dict, list)) or id(x) in seen:
        return level
    seen.add(id(x))
    children = x.values() if isinstance(x, dict) else x
    return max([_depth(v, level + 1, seen) for v in children], default=level + 1)


def _explain(e: ValidationError, source: str) -> str:
    """All of a config's problems, on one line: each names its field and what it got."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown field. Remove it or check its spelling")
        else:
            got = err.get("input")
            got_s = "" if isinstance(got, (dict, list)) else f" (got {_short(got)})"
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}{got_s}")
    return f"{source}: invalid config: " + "; ".join(parts) + "."


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def field_help(path: str) -> str:
    """The one-line help for a dotted field path, e.g. 'training.learning_rate'."""
    model: type[BaseModel] = RunConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        info = model.model_fields[part]
        if i == len(parts) - 1:
            return info.description or ""
        ann = info.annotation
        # sections are plain BaseModel subclasses, or Optional[section] (model.rope_scaling)
        model = next((a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    return ""
