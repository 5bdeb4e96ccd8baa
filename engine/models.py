"""Load models and tokenizers: the embedded demo model, local folders, hub ids.

    model, tok = load_for_training(cfg)    # qlora: 4-bit NF4 base; lora: 16-bit base; full
    model, tok = load_for_inference(path)  # 16-bit (fp32 on CPU), eval mode

Hardware is picked here: CUDA when present (bf16 where supported), else the CPU
in fp32. What it does not know: whether a hub id exists when there is no
network; that surfaces as a ModelError when loading.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import paths
from .config import DEMO_MODEL, ModelConfig, RunConfig
from .errors import ModelError

log = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str) -> str:
    """The demo id maps to the bundled folder; anything else is returned as given."""
    if name_or_path == DEMO_MODEL:
        return str(paths.demo_model_dir())
    return os.path.expanduser(name_or_path)


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.count("/") > 1 or os.sep == "\\" and "\\" in s


def check_model_source(mc: ModelConfig) -> None:
    """Fail fast on a local model path that is not a model folder. Hub ids are checked at load."""
    src = resolve_model_path(mc.name_or_path)
    if not src.strip():
        raise ModelError("model.name_or_path is empty: pick a model (tunesmith/demo works offline).")
    p = Path(src)
    if p.exists():
        if not p.is_dir() or not (p / "config.json").exists():
            raise ModelError(f"model.name_or_path: {src} is not a model folder (no config.json in it).")
        return
    if _looks_like_path(mc.name_or_path):
        raise ModelError(
            f"model.name_or_path: no such folder {src}. Give a local model folder, a hub id like "
            "Qwen/Qwen2.5-0.5B-Instruct, or tunesmith/demo."
        )


PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Hardware:
    device: str  # "cuda" or "cpu"
    bf16: bool
    name: str

    @property
    def compute_dtype(self) -> torch.dtype:
        if self.device == "cuda":
            return torch.bfloat16 if self.bf16 else torch.float16
        return torch.float32


def detect_hardware() -> Hardware:
    if torch.cuda.is_available():
        return Hardware("cuda", torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))
    return Hardware("cpu", False, f"CPU ({os.cpu_count()} cores)")


def _hub_kwargs(mc: ModelConfig) -> dict:
    kw: dict = {"trust_remote_code": mc.trust_remote_code}
    if mc.revision:
        kw["revision"] = mc.revision
    return kw


def _model_kwargs(src: str, mc: ModelConfig) -> dict:
    """from_pretrained kwargs for the model itself: hub options, attention implementation, RoPE scaling.

    Training and inference both use this, so a model trained with RoPE scaling is chatted with
    (and served) with the same positions."""
    kw = _hub_kwargs(mc)
    if mc.attn_implementation != "auto":
        if mc.attn_implementation == "flash_attention_2" and not torch.cuda.is_available():
            raise ModelError("model.attn_implementation=flash_attention_2 needs a CUDA GPU; use auto or sdpa.")
        kw["attn_implementation"] = mc.attn_implementation
    if mc.rope_scaling != "none":
        kw["config"] = rope_scaled_config(src, mc)
    return kw


def rope_scaled_config(src: str, mc: ModelConfig):
    """The model's config with model.rope_scaling / rope_factor applied (the trained length is
    kept as original_max_position_embeddings, which yarn and dynamic need)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(src, **_hub_kwargs(mc))
    except Exception as e:
        raise _wrap_load_error("config", mc.name_or_path, e) from e
    kind, factor = mc.rope_scaling, mc.rope_factor
    current = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if current.get("rope_type", current.get("type")) == kind and float(current.get("factor", 0)) == factor:
        return config  # a model saved by a run with this scaling (full / freeze) already has it
    trained = getattr(config, "max_position_embeddings", None)
    if not trained:
        raise ModelError(f"model.rope_scaling: {mc.name_or_path} has no max_position_embeddings to scale; set rope_scaling: none.")
    # transformers >= 5 keeps RoPE settings in rope_parameters (with rope_theta); 4.x in rope_scaling
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.update({"rope_type": kind, "factor": float(factor), "original_max_position_embeddings": trained})
    if hasattr(config, "rope_parameters"):
        params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
        config.rope_parameters = params
    else:
        config.rope_scaling = params
    config.max_position_embeddings = int(trained * factor)
    log.info("RoPE %s scaling x%s: context %d -> %d tokens", kind, factor, trained, config.max_position_embeddings)
    return config


def _wrap_load_error(what: str, mc_name: str, e: Exception) -> ModelError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = ""
    low = msg.lower()
    if any(s in low for s in ("connection", "offline", "resolve", "couldn't connect", "not a local folder", "cannot find")):
        hint = " There is no network or the id is wrong: use a local folder or tunesmith/demo."
    if "trust_remote_code" in low:
        hint = " This model ships its own code: turn on model.trust_remote_code if you trust it."
    return ModelError(f"Could not load the {what} for {mc_name!r}: {msg}.{hint}")


def load_tokenizer(mc: ModelConfig, source: str | None = None):
    from transformers import AutoTokenizer

    src = source or resolve_model_path(mc.name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(src, **_hub_kwargs(mc))
    except Exception as e:  # transformers raises OSError/ValueError/HTTP errors alike
        raise _wrap_load_error("tokenizer", mc.name_or_path, e) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _config_dtype(src: str, mc: ModelConfig) -> torch.dtype | None:
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(src, **_hub_kwargs(mc))
    except Exception as e:
        raise _wrap_load_error("config", mc.name_or_path, e) from e
    return getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)


def load_for_training(cfg: RunConfig, fsdp: bool = False):
    """Load (model, tokenizer, hardware) ready for PEFT/TRL, per cfg.method. `fsdp`: the model will be
    sharded (engine/training/fsdp.py): NF4 bytes stored as the compute dtype, 16-bit weights on the CPU."""
    from transformers import BitsAndBytesConfig

    mc = cfg.model
    hw = detect_hardware()
    src = resolve_model_path(mc.name_or_path)
    tok = load_tokenizer(mc, src)
    kwargs = _model_kwargs(src, mc)
    compute = hw.compute_dtype
    if cfg.training.precision != "auto":
        compute = PRECISION_DTYPES[cfg.training.precision]
    if cfg.method == "qlora" and cfg.quantization.compute_dtype != "auto":
        compute = getattr(torch, cfg.quantization.compute_dtype)
    if cfg.method == "qlora" and cfg.quantization.bits in (4, 8):
        q = cfg.quantization
        if q.bits == 4:
            bnb = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute if fsdp else torch.uint8,
            )
        else:
            bnb = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["quantization_config"] = bnb
        kwargs["device_map"] = {"": _cuda_index()} if hw.device == "cuda" else {"": "cpu"}
        kwargs["dtype"] = compute
    else:
        # Full fine-tuning keeps fp32 master weights (autocast does bf16 math);
        # LoRA keeps the frozen base in the compute dtype and PEFT puts adapters in fp32.
        # freeze trains whole layers like full: fp32 master weights for them too
        kwargs["dtype"] = torch.float32 if cfg.method in ("full", "freeze") else compute
        if hw.device == "cuda" and not fsdp:  # FSDP moves each rank's shard to its GPU
            kwargs["device_map"] = {"": _cuda_index()}
    model = _from_pretrained(src, mc, kwargs)
    model.config.use_cache = False
    return model, tok, hw


def _cuda_index() -> int:
    """This training process's GPU among the visible ones: torchrun's LOCAL_RANK (0 alone)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def _from_pretrained(src: str, mc: ModelConfig, kwargs: dict):
    from transformers import AutoModelForCausalLM

    if os.environ.get("TUNESMITH_QUIET_LOADING") == "1":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    try:
        return AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except Exception as e:
        raise _wrap_load_error("model", mc.name_or_path, e) from e


def load_for_inference(source: str, mc: ModelConfig | None = None):
    """Load a 16-bit model (fp32 on CPU) for generation, from a folder or hub id."""
    mc = mc or ModelConfig(name_or_path=source)
    hw = detect_hardware()
    src = resolve_model_path(source)
    tok = load_tokenizer(mc, src)
    kwargs = _model_kwargs(src, mc)
    kwargs["dtype"] = hw.compute_dtype
    if hw.device == "cuda":
        kwargs["device_map"] = {"": 0}
    model = _from_pretrained(src, mc, kwargs)
    model.eval()
    return model, tok
