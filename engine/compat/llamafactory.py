"""LLaMA-Factory training YAML -> RunConfig.

    if is_llamafactory(data):
        t = translate(data, source="llama3_lora_sft.yaml")
        cfg = RunConfig.from_dict(t.config); print("\\n".join(t.report()))

A LLaMA-Factory file is flat (`model_name_or_path`, `stage`, `finetuning_type`,
`lora_target`, `dataset`, `per_device_train_batch_size`, ...); a Tunesmith one
has sections (`model:`, `data:`, `training:`). Every key of the file ends up in
exactly one place of the report:

    mapped     key -> RunConfig field, with the value
    ignored    keys that change nothing Tunesmith trains (worker counts, plot_loss, ...): one line each
    refused    keys whose meaning Tunesmith cannot honour (dpo stage, deepspeed offload, ...):
               translate() raises ConfigError listing each with what to do

Keys the file leaves out get LLaMA-Factory's (and the HF Trainer's) defaults,
not Tunesmith's, so the run is the one the file describes (learning rate 5e-5,
batch 8, lora_rank 8 with lora_alpha = 2 x rank, ...); the report lists them.

What it does not know: LLaMA-Factory's inference, export and evaluation
configs (`export_dir`, `infer_backend`, ...) are not training runs and are refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig
from ..errors import ConfigError

# Keys that mark a file as LLaMA-Factory's (none of them is a Tunesmith section).
_MARKERS = {"model_name_or_path", "stage", "finetuning_type", "lora_target", "per_device_train_batch_size",
            "cutoff_len", "template", "dataset", "adapter_name_or_path"}

# Objectives as LLaMA-Factory names its stages. Only sft and pt train today; the others map onto
# RunConfig.objective once that field exists.
_STAGES = {"sft": "sft", "pt": "pretrain", "dpo": "dpo", "kto": "kto", "rm": "reward", "ppo": "ppo"}

_SCHEDULERS = {"linear", "cosine", "constant", "constant_with_warmup"}
_OPTIMIZERS = {"adamw_torch": "adamw_torch", "adamw_hf": "adamw_torch", "adamw_torch_fused": "adamw_torch",
               "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
               "sgd": "sgd", "adafactor": "adafactor"}
_TEMPLATES = {"llama3": "llama3", "qwen": "qwen", "qwen3": "qwen3", "qwen3_nothink": "qwen3_nothink",
              "chatml": "chatml", "mistral": "mistral", "gemma": "gemma", "alpaca": "alpaca", "vicuna": "vicuna",
              "phi": "phi", "deepseek": "deepseek"}
_ATTN = {"auto": "auto", "sdpa": "sdpa", "disabled": "eager", "eager": "eager", "fa2": "flash_attention_2"}

# LLaMA-Factory / HF TrainingArguments defaults where Tunesmith's differ (applied when the key is absent).
_LF_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5, "num_train_epochs": 3.0, "lr_scheduler_type": "linear", "warmup_ratio": 0.0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "cutoff_len": 2048,
    "logging_steps": 500, "save_steps": 500, "lora_rank": 8, "lora_dropout": 0.0, "lora_target": "all",
    "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 42, "optim": "adamw_torch",
}

# Keys that change nothing Tunesmith trains; the reason is shown once per key.
_IGNORED: dict[str, str] = {
    "do_train": "Tunesmith always trains", "overwrite_cache": "Tunesmith's tokenization cache is keyed by content",
    "overwrite_output_dir": "every run gets a new folder", "preprocessing_num_workers": "tokenization runs in the worker",
    "dataloader_num_workers": "batches come from memory", "plot_loss": "the studio plots loss live",
    "save_only_model": "checkpoints always keep the optimizer for resuming", "ddp_timeout": "no effect here",
    "per_device_eval_batch_size": "eval uses the training batch size", "eval_strategy": "eval runs every eval_steps",
    "evaluation_strategy": "eval runs every eval_steps", "save_strategy": "checkpoints every save_steps",
    "logging_dir": "events.jsonl (and tensorboard/, with report_to) are in the run folder",
    "save_total_limit": "the last two checkpoints are kept", "enable_liger_kernel": "Tunesmith's own kernels (kernels: auto)",
    "use_unsloth": "Tunesmith's own kernels (kernels: auto)", "use_unsloth_gc": "Tunesmith's kernels plan checkpointing",
    "flash_attn_2": "use model.attn_implementation", "use_fast_tokenizer": "the fast tokenizer is always used",
    "print_param_status": "the run log prints trainable parameters", "include_num_input_tokens_seen": "always counted",
    "upcast_layernorm": "Tunesmith's kernels compute norms in fp32", "pissa_convert": "PiSSA adapters are always saved as plain LoRA",
    "pissa_iter": "Tunesmith uses 16 SVD iterations", "ddp_find_unused_parameters": "no effect here",
    "run_name": "the run is named after output_dir",
    "disable_tqdm": "the CLI shows its own progress", "bf16_full_eval": "eval uses the training precision",
    "load_best_model_at_end": "the final adapter is saved", "metric_for_best_model": "the final adapter is saved",
    "remove_unused_columns": "no effect here", "streaming": "datasets are read in full", "buffer_size": "datasets are read in full",
    "tokenized_path": "Tunesmith caches tokenized data itself",
    # sharding changes where weights live, not what trains: Tunesmith plans memory on one GPU itself
    "deepspeed": "DeepSpeed is not used; Tunesmith trains on one GPU with its own memory plan",
    "fsdp": "FSDP is not used; Tunesmith trains on one GPU with its own memory plan",
}

# Keys Tunesmith refuses because ignoring them would train something else: the fix for each.
_REFUSED: dict[str, str] = {
    "mask_history": "training only on the last turn is not supported yet; remove it to train on every reply",
    "loraplus_lr_ratio": "LoRA+ is not supported yet; remove it", "use_galore": "GaLore is not supported; remove it",
    "use_badam": "BAdam is not supported; remove it", "use_apollo": "APOLLO is not supported; remove it",
    "use_llama_pro": "LLaMA Pro is not supported; remove it", "additional_target": "extra adapter modules are not supported; remove it",
    "modules_to_save": "extra trained modules are not supported with LoRA; use method freeze or full",
    "adapter_name_or_path": "continuing from an existing adapter is not supported yet; train from the base model",
    "create_new_adapter": "continuing from an existing adapter is not supported yet",
    "eval_dataset": "give the eval file as data.val_file (one file), or use val_size",
    "image_max_pixels": "image/video/audio training is not supported yet", "video_max_pixels": "image/video/audio training is not supported yet",
    "freeze_vision_tower": "image/video/audio training is not supported yet", "freeze_multi_modal_projector": "image/video/audio training is not supported yet",
    "ref_model": "the reference model is the base model with the adapter switched off; remove it",
    "ref_model_adapters": "the reference model is the base model with the adapter switched off; remove it",
    "ref_model_quantization_bit": "the reference model is the base model with the adapter switched off; remove it",
    "pref_bco_weight": "the BCO term of DPO is not supported; remove it",
    "ld_alpha": "LD-DPO is not supported; remove it",
    "export_dir": "this is an export config; use `tunesmith export RUN --format merged|gguf`",
    "infer_backend": "this is an inference config; use `tunesmith chat` or `tunesmith serve`",
    "do_predict": "prediction runs are not supported; use `tunesmith chat` on the finished run",
    "predict_with_generate": "prediction runs are not supported; use `tunesmith chat` on the finished run",
    "neat_packing": "", "use_reentrant_gc": "",
}


@dataclass
class Translation:
    config: dict[str, Any]
    mapped: list[tuple[str, str, Any]] = field(default_factory=list)  # (LF key, RunConfig field, value)
    defaults: list[tuple[str, str, Any]] = field(default_factory=list)  # LF default applied for an absent key
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (LF key, why)
    notes: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        lines = [f"  {k} -> {f} = {v!r}" for k, f, v in self.mapped]
        if self.defaults:
            lines.append("  not in the file, LLaMA-Factory's default: "
                         + ", ".join(f"{f} = {v!r}" for _, f, v in self.defaults))
        lines += [f"  {k}: ignored ({why})" for k, why in self.ignored]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def is_llamafactory(data: dict[str, Any]) -> bool:
    """A flat file with LLaMA-Factory's keys and none of Tunesmith's sections."""
    if not isinstance(data, dict):
        return False
    sections = {"model", "data", "training", "lora", "quantization", "output"}
    if any(isinstance(data.get(s), dict) for s in sections):
        return False
    return bool(_MARKERS & set(data))


def _as_list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return [str(s).strip() for s in (v or []) if str(s).strip()]


def _set(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def translate(data: dict[str, Any], source: str = "config", base_dir: Path | None = None,
              known_dataset: Callable[[str], bool] | None = None) -> Translation:
    """Translate a LLaMA-Factory training YAML (already parsed) into RunConfig's dict.

    `base_dir` is where relative paths (dataset_dir) are resolved (LLaMA-Factory uses the working
    directory). `known_dataset(name)` says whether Tunesmith already knows a dataset name
    (default: the registry). Raises ConfigError listing every refused key, one line each.
    """
    if known_dataset is None:
        from ..data.registry import get_dataset

        def known_dataset(name: str) -> bool:
            return get_dataset(name) is not None

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    t = Translation(config={})
    refused: list[str] = []
    given = dict(data)
    for key, default in _LF_DEFAULTS.items():
        if key not in given:
            given[key] = default
    absent = {k for k in _LF_DEFAULTS if k not in data}
    cfg = t.config

    def put(key: str, dotted: str, value: Any) -> None:
        _set(cfg, dotted, value)
        (t.defaults if key in absent else t.mapped).append((key, dotted, value))

    handled: set[str] = set()

    def take(key: str) -> Any:
        handled.add(key)
        return given.get(key)

    # --- model
    if "model_name_or_path" not in given:
        refused.append("model_name_or_path: missing; name the base model (a hub id or a local folder)")
    else:
        put("model_name_or_path", "model.name_or_path", str(take("model_name_or_path")))
    for key, dotted in (("model_revision", "model.revision"), ("trust_remote_code", "model.trust_remote_code")):
        if key in given:
            put(key, dotted, take(key))
    if "template" in given:
        name = str(take("template"))
        if name in _TEMPLATES:
            put("template", "model.chat_template", _TEMPLATES[name])
        else:
            t.notes.append(f"template {name!r} has no Tunesmith equivalent: the tokenizer's own chat template is used "
                           f"(or set model.chat_template to one of {', '.join(sorted(set(_TEMPLATES.values())))})")
    if "flash_attn" in given:
        v = str(take("flash_attn"))
        if v not in _ATTN:
            refused.append(f"flash_attn: {v!r} is not one of {', '.join(_ATTN)}")
        else:
            put("flash_attn", "model.attn_implementation", _ATTN[v])
    if given.get("rope_scaling"):
        v = str(take("rope_scaling"))
        if v not in ("linear", "dynamic", "yarn"):
            refused.append(f"rope_scaling: {v!r} is not supported; use linear, dynamic or yarn")
        else:
            factor = _rope_factor(str(given.get("model_name_or_path", "")), int(given["cutoff_len"]))
            put("rope_scaling", "model.rope_scaling", v)
            _set(cfg, "model.rope_factor", factor)
            t.notes.append(f"rope_scaling factor {factor} = cutoff_len / the model's context length, as LLaMA-Factory computes it")
    else:
        handled.add("rope_scaling")

    # --- stage and method
    stage = str(take("stage") or "sft")
    if stage not in _STAGES:
        refused.append(f"stage: {stage!r} is not a LLaMA-Factory stage Tunesmith knows (sft, pt)")
    elif stage == "ppo":
        refused.append("stage: ppo (RLHF with a reward model) is not supported; use sft, pt or a preference objective")
    elif "objective" in RunConfig.model_fields:
        put("stage", "objective", _STAGES[stage])  # RunConfig checks that the objective exists
    elif stage not in ("sft", "pt"):
        refused.append(f"stage: {stage} is not supported yet (Tunesmith trains sft and pt); use stage: sft")
    elif stage == "pt":
        t.mapped.append(("stage", "(data)", "pt"))
        t.notes.append("stage pt: raw-text datasets (a single prompt/text column) train on every token")
    ftype = str(take("finetuning_type") or "lora")
    qbits = take("quantization_bit")
    take("quantization_method")
    qmethod = str(given.get("quantization_method") or "bnb")
    if qbits is not None and qmethod != "bnb":
        refused.append(f"quantization_method: {qmethod} is not supported; Tunesmith quantizes with bitsandbytes (bnb)")
    if ftype == "lora":
        if qbits in (4, 8):
            put("finetuning_type", "method", "qlora")
            put("quantization_bit", "quantization.bits", int(qbits))
            for key, dotted in (("double_quantization", "quantization.double_quant"), ("quantization_type", "quantization.quant_type")):
                if key in given:
                    put(key, dotted, take(key))
            if "double_quantization" not in given:  # LLaMA-Factory's default is on, as is Tunesmith's
                handled.add("double_quantization")
        elif qbits is not None:
            refused.append(f"quantization_bit: {qbits} is not supported; use 4 or 8")
        else:
            put("finetuning_type", "method", "lora")
    elif ftype in ("full", "freeze"):
        put("finetuning_type", "method", ftype)
        if qbits is not None:
            refused.append(f"quantization_bit: {qbits} with finetuning_type {ftype}: quantized weights cannot be trained; "
                           "use finetuning_type lora")
    else:
        refused.append(f"finetuning_type: {ftype!r} is not supported; use lora, freeze or full")
    for key in ("double_quantization", "quantization_type"):
        handled.add(key)

    # --- preference objectives: stage dpo (pref_loss picks dpo / orpo / simpo), kto
    _preference(given, data, take, put, refused, t, stage)

    # --- HF TrainingArguments options without a RunConfig field of their own: training.extra, checked there
    extra: dict[str, Any] = {}
    for key in ("adam_beta1", "adam_beta2", "adam_epsilon", "warmup_steps"):
        if given.get(key) is not None and not (key == "warmup_steps" and not given[key]):
            extra[key] = take(key)
        handled.add(key)
    sched_kwargs = take("lr_scheduler_kwargs")
    if isinstance(sched_kwargs, str):  # LLaMA-Factory passes it as JSON text on the command line
        try:
            sched_kwargs = json.loads(sched_kwargs)
        except ValueError:
            refused.append("lr_scheduler_kwargs: not a JSON mapping")
            sched_kwargs = None
    if isinstance(sched_kwargs, dict):
        extra.update(sched_kwargs)
    if extra:
        put("+".join(sorted(extra)), "training.extra", extra)

    # --- LoRA
    lora_keys = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora", "pissa_init")
    if ftype == "lora":
        rank = int(take("lora_rank"))
        put("lora_rank", "lora.r", rank)
        if "lora_alpha" in given:
            put("lora_alpha", "lora.alpha", int(take("lora_alpha")))
        else:
            _set(cfg, "lora.alpha", rank * 2)
            t.defaults.append(("lora_alpha", "lora.alpha", rank * 2))
        put("lora_dropout", "lora.dropout", float(take("lora_dropout")))
        targets = _as_list(take("lora_target"))
        put("lora_target", "lora.target_modules", "all-linear" if targets in (["all"], []) else targets)
        for key, dotted in (("use_dora", "lora.use_dora"), ("use_rslora", "lora.use_rslora")):
            if key in given:
                put(key, dotted, bool(take(key)))
        if given.get("pissa_init"):
            put("pissa_init", "lora.init", "pissa")
        handled.add("pissa_init")
    else:
        for key in lora_keys:
            handled.add(key)
            if key in data:
                t.ignored.append((key, f"finetuning_type is {ftype}"))
    if ftype == "freeze":
        n = int(take("freeze_trainable_layers") if "freeze_trainable_layers" in given else 2)
        if n < 0:
            refused.append("freeze_trainable_layers: a negative value (the first layers) is not supported; give the number of last layers")
        else:
            put("freeze_trainable_layers", "freeze.trainable_layers", n)
        mods = _as_list(take("freeze_trainable_modules") or "all")
        put("freeze_trainable_modules", "freeze.trainable_modules", "all" if mods == ["all"] else mods)
        if "freeze_extra_modules" in given:
            put("freeze_extra_modules", "freeze.extra_modules", _as_list(take("freeze_extra_modules")))
    else:
        for key in ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules"):
            handled.add(key)
            if key in data:
                t.ignored.append((key, f"finetuning_type is {ftype}"))

    # --- data
    names = _as_list(take("dataset"))
    if not names:
        refused.append("dataset: missing; name at least one dataset")
    dataset_dir = take("dataset_dir")
    info_dir = (base / str(dataset_dir or "data")).resolve()
    unknown = [n for n in names if not known_dataset(n) and not Path(n).expanduser().exists()]
    if unknown:
        info_file = info_dir / "dataset_info.json"
        defined = set(json.loads(info_file.read_text(encoding="utf-8"))) if info_file.is_file() else set()
        if set(unknown) <= defined:
            t.notes.append(f"datasets {', '.join(unknown)} come from {info_file}: register them once with "
                           f"`tunesmith data import-info {info_file}` (tunesmith train does it for you)")
            t.config.setdefault("_import", {"info": str(info_file), "names": unknown})
        else:
            where = f" (not in {info_file})" if info_file.is_file() else ""
            refused.append(f"dataset: {', '.join(sorted(set(unknown) - defined))} unknown to Tunesmith{where}; register it "
                           "with `tunesmith data import-info DIR/dataset_info.json` or give a file path")
    if names:
        put("dataset", "data.datasets", names)
    put("cutoff_len", "data.cutoff_len", int(take("cutoff_len")))
    if "max_samples" in given:
        put("max_samples", "data.max_samples", int(take("max_samples")))
    if "val_size" in given:
        vs = float(take("val_size"))
        if vs >= 1:
            refused.append(f"val_size: {given['val_size']} rows; Tunesmith takes a fraction (e.g. 0.1)")
        else:
            put("val_size", "data.val_size", vs)
    if "train_on_prompt" in given:
        put("train_on_prompt", "data.train_on_responses_only", not bool(take("train_on_prompt")))
    if given.get("packing") or given.get("neat_packing"):
        key = "neat_packing" if given.get("neat_packing") else "packing"
        put(key, "data.packing", True)
        if key == "packing":
            t.notes.append("packing: Tunesmith always keeps packed examples from attending to each other (neat_packing)")
    handled.update({"packing", "neat_packing"})
    strategy = str(take("mix_strategy") or "concat")
    probs = take("interleave_probs")
    if strategy == "interleave_under" and probs is not None:
        put("interleave_probs", "data.mix", [float(p) for p in _as_list(probs)])
    elif strategy == "interleave_over":
        refused.append("mix_strategy: interleave_over (repeating rows) is not supported; use interleave_under")
    elif strategy not in ("concat", "interleave_under"):
        refused.append(f"mix_strategy: {strategy!r} is not supported; use concat or interleave_under")

    # --- training
    simple = (("per_device_train_batch_size", "training.batch_size", int),
              ("gradient_accumulation_steps", "training.gradient_accumulation", int),
              ("learning_rate", "training.learning_rate", float), ("num_train_epochs", "training.num_epochs", float),
              ("warmup_ratio", "training.warmup_ratio", float), ("weight_decay", "training.weight_decay", float),
              ("max_grad_norm", "training.max_grad_norm", float), ("seed", "training.seed", int),
              ("logging_steps", "training.logging_steps", int), ("save_steps", "training.save_steps", int),
              ("eval_steps", "training.eval_steps", int), ("neftune_noise_alpha", "training.neftune_alpha", float))
    for key, dotted, conv in simple:
        if key in given and given[key] is not None:
            put(key, dotted, conv(take(key)))
        handled.add(key)
    steps = take("max_steps")
    if steps is not None and int(steps) > 0:
        put("max_steps", "training.max_steps", int(steps))
    sched = str(take("lr_scheduler_type"))
    if sched in _SCHEDULERS:
        put("lr_scheduler_type", "training.lr_scheduler", sched)
    else:
        refused.append(f"lr_scheduler_type: {sched!r} is not supported; use one of {', '.join(sorted(_SCHEDULERS))}")
    optim = str(take("optim"))
    if optim in _OPTIMIZERS:
        put("optim", "training.optimizer", _OPTIMIZERS[optim])
    else:
        refused.append(f"optim: {optim!r} is not supported; use adamw_torch, adamw_bnb_8bit, paged_adamw_8bit, sgd or adafactor")
    for key, prec in (("bf16", "bf16"), ("pure_bf16", "bf16"), ("fp16", "fp16")):
        if given.get(key):
            put(key, "training.precision", prec)
        handled.add(key)
    if "gradient_checkpointing" in given:
        put("gradient_checkpointing", "training.gradient_checkpointing", bool(take("gradient_checkpointing")))
    if "disable_gradient_checkpointing" in given:
        put("disable_gradient_checkpointing", "training.gradient_checkpointing", not bool(take("disable_gradient_checkpointing")))
    if "report_to" in given:
        trackers = [n for n in _as_list(take("report_to")) if n != "none"]
        if "all" in trackers:
            refused.append("report_to: all; name the trackers (tensorboard, wandb, mlflow, trackio, swanlab)")
        else:
            put("report_to", "training.report_to", trackers)
    if given.get("output_dir"):
        # saves/llama3-8b/lora/sft -> llama3-8b-lora-sft: LLaMA-Factory's folders name model, method and stage
        parts = [x for x in Path(str(take("output_dir"))).parts if x not in ("saves", "output", "outputs", ".", "/")]
        name = "-".join(parts)[-80:] or "llamafactory"
        put("output_dir", "output.run_name", name)
        t.notes.append(f"output_dir: the run is saved under $TUNESMITH_HOME/runs/ and named {name!r}; "
                       "`tunesmith export` writes it where you want")
    handled.add("output_dir")
    handled.add("resume_from_checkpoint")
    if given.get("resume_from_checkpoint"):
        refused.append("resume_from_checkpoint: resume a Tunesmith run with `tunesmith resume RUN_ID` (or the studio)")

    # --- what is left: ignored, refused, or unknown
    for key in data:
        if key in handled:
            continue
        if key in _REFUSED and _REFUSED[key] and data[key] not in (None, False):
            refused.append(f"{key}: {_REFUSED[key]}")
        elif key in _IGNORED or key in _REFUSED:
            why = _IGNORED.get(key) or "no effect here"
            if data[key] not in (None, False) or key in _IGNORED:
                t.ignored.append((key, why))
        else:
            refused.append(f"{key}: a LLaMA-Factory option Tunesmith does not know; remove it "
                           "(or ask for it: it may change what trains)")
    if refused:
        raise ConfigError(f"{source}: LLaMA-Factory config, {len(refused)} key(s) Tunesmith cannot honour:\n  "
                          + ";\n  ".join(refused))  # one per line, or "; " apart when the CLI prints one line
    return t


# LLaMA-Factory's preference keys and their defaults (FinetuningArguments / RLHFArguments).
_PREF_DEFAULTS: dict[str, Any] = {"pref_beta": 0.1, "pref_loss": "sigmoid", "pref_ftx": 0.0, "dpo_label_smoothing": 0.0,
                                  "simpo_gamma": 0.5, "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.0}


def _preference(given: dict, data: dict, take: Callable, put: Callable, refused: list[str], t: Translation,
                stage: str) -> None:
    """pref_* and friends -> objective (dpo / orpo / simpo / kto) and objective_settings, with LLaMA-Factory's
    defaults for absent keys (its DPO runs at pref_beta 0.1 whichever pref_loss)."""
    value = {k: (given[k] if given.get(k) is not None else d) for k, d in _PREF_DEFAULTS.items()}
    for k in _PREF_DEFAULTS:
        take(k)

    def _default(key: str, name: str, conv) -> None:
        if key in data:
            put(key, f"objective_settings.{name}", conv(value[key]))
        else:  # LLaMA-Factory's default, listed as one in the report
            _set(t.config, f"objective_settings.{name}", conv(value[key]))
            t.defaults.append((key, f"objective_settings.{name}", conv(value[key])))

    if stage == "dpo":
        loss = str(value["pref_loss"])
        if loss == "kto_pair":
            refused.append("pref_loss: kto_pair is not supported; use stage: kto (KTO on labelled rows, or on pairs)")
            return
        if loss not in ("sigmoid", "hinge", "ipo", "orpo", "simpo"):
            refused.append(f"pref_loss: {loss!r} is not one of sigmoid, hinge, ipo, orpo, simpo")
            return
        objective = loss if loss in ("orpo", "simpo") else "dpo"
        if objective == "dpo":
            _default("pref_loss", "loss_type", str)
        else:
            put("pref_loss", "objective", objective)
        _default("pref_beta", "beta", float)
        if objective in ("dpo", "simpo"):
            _default("dpo_label_smoothing", "label_smoothing", float)
            _default("pref_ftx", "sft_weight", float)
        elif float(value["pref_ftx"]):
            refused.append("pref_ftx: with pref_loss orpo, ORPO learns the chosen reply by example already; remove it")
        if objective == "simpo":
            _default("simpo_gamma", "gamma", float)
        unused = ("simpo_gamma",) if objective != "simpo" else ()
        unused += ("kto_chosen_weight", "kto_rejected_weight")
    elif stage == "kto":
        _default("pref_beta", "beta", float)
        _default("kto_chosen_weight", "desirable_weight", float)
        _default("kto_rejected_weight", "undesirable_weight", float)
        if float(value["pref_ftx"]):
            refused.append("pref_ftx: an SFT term in KTO is not supported; remove it")
        unused = ("pref_loss", "dpo_label_smoothing", "simpo_gamma")
    else:
        unused = tuple(_PREF_DEFAULTS)
    for k in unused:
        if k in data:
            t.ignored.append((k, f"not used by stage {stage}"))


def _rope_factor(model: str, cutoff_len: int) -> float:
    """cutoff_len / the model's max_position_embeddings (at least 2), from its config when it can be read."""
    try:
        from transformers import AutoConfig

        from ..models import resolve_model_path

        trained = getattr(AutoConfig.from_pretrained(resolve_model_path(model)), "max_position_embeddings", None)
    except Exception:  # offline with an uncached hub id
        trained = None
    if not trained:
        return 2.0
    return float(max(2, math.ceil(cutoff_len / trained)))


def load_run_config(text: str, source: str, overrides: list[str] | None = None, base_dir: Path | None = None,
                    register: bool = False) -> tuple[RunConfig, Translation | None]:
    """A config file's text (Tunesmith or LLaMA-Factory YAML) -> (RunConfig, translation or None).

    With `register`, datasets that the file takes from a LLaMA-Factory dataset_info.json are
    registered first (what `tunesmith train` does; `config convert` and --dry-run do not).
    """
    from ..config import apply_override, parse_config_text

    data = parse_config_text(text, source)  # binary, invalid, empty or too deeply nested text is refused here
    if not is_llamafactory(data):
        return RunConfig.from_yaml_text(text, overrides, source), None
    tr = translate(data, source, base_dir)
    pending = tr.config.pop("_import", None)
    if pending and register:
        from ..data.registry import import_dataset_info

        imported, skipped = import_dataset_info(pending["info"], only=pending["names"])
        bad = {n: why for n, why in skipped.items() if n in pending["names"]}
        if bad:
            raise ConfigError(f"{source}: dataset(s) from {pending['info']} cannot be used: "
                              + "; ".join(f"{n}: {why}" for n, why in bad.items()))
        tr.notes.append(f"registered {', '.join(e.name for e in imported)} from {pending['info']}")
    for item in overrides or []:
        apply_override(tr.config, item)
    return RunConfig.from_dict(tr.config, source), tr
