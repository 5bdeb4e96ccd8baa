"""Per-architecture facts: HF config -> GGUF hyperparameters, HF tensor names -> GGUF names.

One small table keyed by `config.model_type` (STYLE: one walker plus a per-arch table). For each
architecture we record only what differs from Llama:

- llama, mistral -> GGUF "llama". HF stores Q/K rows in "rotate half" order; llama.cpp's llama
  graph ropes adjacent pairs, so Q and K rows are permuted per head (`_permute_qk`). Llama 3.1+
  rope scaling becomes a `rope_freqs` tensor of per-frequency divisors.
- qwen2 (Qwen 2 / 2.5), qwen3 (q/k norms) -> "qwen2" / "qwen3"; NEOX rope, no permutation.
- gemma, gemma2, gemma3_text (and the text half of gemma3) -> "gemma" / "gemma2" / "gemma3".
  HF's Gemma RMSNorm multiplies by (1 + w); llama.cpp by w, so every norm weight gets +1.
  Gemma 2 adds logit soft-capping, Gemma 2/3 a per-layer sliding-window pattern, Gemma 3 a
  separate rope base for local layers and linear scaling on global ones.

Tied embeddings: no `output.weight` is written; llama.cpp reuses `token_embd`.

What it does not know: MoE variants, vision towers (skipped for gemma3), rope scalings other than
linear / llama3 / yarn, attention implementations llama.cpp lacks (checked, ExportError).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tunesmith.engine.errors import ExportError

# HF per-layer module -> GGUF per-layer tensor (for "model.layers.{i}.<module>.weight|bias").
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# Gemma 2/3 have four norms per layer; "post_attention_layernorm" means something else there.
_GEMMA2_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


@dataclass(frozen=True)
class ArchSpec:
    gguf_arch: str
    layer_names: dict[str, str]
    permute_qk: bool = False  # HF rotate-half rows -> llama.cpp adjacent-pair rope
    norm_plus_one: bool = False  # Gemma RMSNorm stores w, computes x * (1 + w)
    activation: str = "silu"
    sliding_window: bool = False  # per-layer SWA pattern that llama.cpp implements


ARCHS: dict[str, ArchSpec] = {
    "llama": ArchSpec("llama", _LAYER_NAMES, permute_qk=True),
    "mistral": ArchSpec("llama", _LAYER_NAMES, permute_qk=True),
    "qwen2": ArchSpec("qwen2", _LAYER_NAMES),
    "qwen3": ArchSpec("qwen3", _LAYER_NAMES),
    "gemma": ArchSpec("gemma", _LAYER_NAMES, norm_plus_one=True, activation="gelu_pytorch_tanh"),
    "gemma2": ArchSpec("gemma2", _GEMMA2_LAYER_NAMES, norm_plus_one=True, activation="gelu_pytorch_tanh", sliding_window=True),
    "gemma3_text": ArchSpec("gemma3", _GEMMA2_LAYER_NAMES, norm_plus_one=True, activation="gelu_pytorch_tanh", sliding_window=True),
}
# Multimodal Gemma 3 checkpoints: the text half is exported, the vision tower skipped.
_ALIASES = {"gemma3": "gemma3_text"}
_SKIP_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
_TEXT_PREFIXES = (("language_model.model.", "model."), ("model.language_model.", "model."), ("language_model.lm_head.", "lm_head."))

SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
             "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration (text)")


# --------------------------------------------------------------------------- safetensors index

_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


@dataclass
class SourceTensor:
    name: str
    file: Path
    shape: tuple[int, ...]
    dtype: str
    offset: int  # position of the data in its file, to read shards front to back

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_safetensors_index(model_dir: Path) -> list[SourceTensor]:
    """Names, shapes and dtypes of every tensor, from the shard headers only (no data read)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        hint = " (found pytorch_model.bin: re-save with safe_serialization=True)" if any(model_dir.glob("*.bin")) else ""
        raise ExportError(f"No *.safetensors weights in {model_dir}{hint}. GGUF export reads a merged safetensors model.")
    out = []
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            out.append(SourceTensor(name, f, tuple(info["shape"]), info["dtype"], info["data_offsets"][0]))
    return out


# --------------------------------------------------------------------------- plan


@dataclass
class TensorPlan:
    gguf_name: str
    shape: tuple[int, ...]  # torch order: (rows, cols) for matrices
    source: SourceTensor | None  # None: generated (rope_freqs)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    generated: torch.Tensor | None = None

    @property
    def is_matrix(self) -> bool:
        return len(self.shape) >= 2

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def load(self) -> torch.Tensor:
        """The tensor as llama.cpp wants it (one tensor in memory at a time)."""
        if self.generated is not None:
            return self.generated
        from safetensors import safe_open

        assert self.source is not None
        with safe_open(str(self.source.file), framework="pt") as f:
            t = f.get_tensor(self.source.name)
        return self.transform(t) if self.transform is not None else t


@dataclass
class ModelPlan:
    """What to write: hyperparameters (as gguf writer calls) and tensors, in read order."""

    model_type: str
    spec: ArchSpec
    config: Any  # transformers PretrainedConfig (text part)
    tensors: list[TensorPlan]
    n_vocab: int
    context_length: int
    source_dtype: torch.dtype
    hparams: list[tuple[str, Any]] = field(default_factory=list)  # (GGUFWriter method, value)
    notes: list[str] = field(default_factory=list)

    @property
    def gguf_arch(self) -> str:
        return self.spec.gguf_arch

    @property
    def n_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    def write_hparams(self, w: Any) -> None:
        for method, value in self.hparams:
            getattr(w, method)(value)


def _permute_qk(n_head: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows of each head [x0..x(d/2-1), y0..y(d/2-1)] -> [x0, y0, x1, y1, ...]."""

    def f(t: torch.Tensor) -> torch.Tensor:
        rows = t.shape[0]
        rest = t.shape[1:]
        return t.reshape(n_head, 2, rows // n_head // 2, *rest).transpose(1, 2).reshape(rows, *rest).contiguous()

    return f


def _plus_one(t: torch.Tensor) -> torch.Tensor:
    return t.float() + 1.0


def _compose(*fs: Callable | None) -> Callable | None:
    fs = tuple(f for f in fs if f is not None)
    if not fs:
        return None

    def g(t: torch.Tensor) -> torch.Tensor:
        for f in fs:
            t = f(t)
        return t

    return g


def llama3_rope_factors(rope: dict, head_dim: int) -> torch.Tensor:
    """Per-frequency divisors that turn plain rope into Llama 3.1's scaled rope (n_rot/2 floats).

    HF: low frequencies (wavelength > orig_ctx/low_freq_factor) are divided by `factor`, high ones
    kept, the band between interpolated smoothly; llama.cpp divides theta by these factors.
    """
    base = float(rope["rope_theta"])
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    orig = float(rope.get("original_max_position_embeddings", 8192))
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    wavelen = 2 * math.pi / inv
    smooth = (orig / wavelen - low) / (high - low)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    out = torch.where(wavelen < orig / high, torch.ones_like(inv), torch.where(wavelen > orig / low, torch.full_like(inv, factor), mid))
    return out.float()


def _rope_hparams(cfg: Any, spec: ArchSpec, head_dim: int, notes: list[str]) -> tuple[list[tuple[str, Any]], torch.Tensor | None]:
    """Rope base / scaling keys, and the rope_freqs tensor for llama3 scaling."""
    rp = getattr(cfg, "rope_parameters", None) or {}
    out: list[tuple[str, Any]] = []
    if "full_attention" in rp:  # Gemma 3: global and local layers have their own rope
        local = rp.get("sliding_attention", {})
        if local.get("rope_type", "default") != "default":
            raise ExportError(f"Rope scaling on sliding-window layers ({local.get('rope_type')}) is not supported by llama.cpp.")
        if "rope_theta" in local:
            out.append(("add_rope_freq_base_swa", float(local["rope_theta"])))
        rp = rp["full_attention"]
    kind = rp.get("rope_type", "default")
    if "rope_theta" in rp:
        out.append(("add_rope_freq_base", float(rp["rope_theta"])))
    freqs = None
    if kind == "default":
        pass
    elif kind == "linear":
        out += [("add_rope_scaling_type", _scaling("LINEAR")), ("add_rope_scaling_factor", float(rp["factor"]))]
    elif kind == "llama3" and spec.gguf_arch == "llama":
        freqs = llama3_rope_factors(rp, head_dim)
    elif kind == "yarn":
        out += [("add_rope_scaling_type", _scaling("YARN")), ("add_rope_scaling_factor", float(rp["factor"]))]
        if rp.get("original_max_position_embeddings"):
            out.append(("add_rope_scaling_orig_ctx_len", int(rp["original_max_position_embeddings"])))
        notes.append("yarn rope scaling: only short contexts are checked by the fidelity test")
    else:
        raise ExportError(f"Rope scaling type {kind!r} is not supported for GGUF export of {cfg.model_type}.")
    return out, freqs


def _scaling(name: str):
    import gguf

    return getattr(gguf.RopeScalingType, name)


def _text_name(name: str, model_type: str) -> str | None:
    """Map a multimodal Gemma 3 name to its text-model name; None = skip."""
    if model_type != "gemma3":
        return name
    if name.startswith(_SKIP_PREFIXES):
        return None
    for old, new in _TEXT_PREFIXES:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def load_config(model_dir: Path) -> tuple[str, Any]:
    """(model_type key into ARCHS, text config) from model_dir/config.json."""
    path = model_dir / "config.json"
    if not path.exists():
        raise ExportError(f"No config.json in {model_dir}; GGUF export needs a merged Hugging Face model folder.")
    raw = json.loads(path.read_text(encoding="utf-8"))
    model_type = raw.get("model_type", "")
    key = _ALIASES.get(model_type, model_type)
    if key not in ARCHS:
        archs = ", ".join(raw.get("architectures") or [model_type or "unknown"])
        raise ExportError(
            f"Unsupported architecture for GGUF export: {archs} (model_type {model_type!r}). "
            f"Supported: {', '.join(SUPPORTED)}. Export as adapter or merged model instead."
        )
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(model_dir))
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return model_type, cfg


def _check_supported(cfg: Any, key: str, spec: ArchSpec, n_layer: int, head_dim: int, notes: list[str]) -> None:
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
    if act and act != spec.activation and not (spec.activation.startswith("gelu") and act.startswith("gelu")):
        raise ExportError(f"{key} with activation {act!r}: llama.cpp's {spec.gguf_arch} graph uses {spec.activation}.")
    layer_types = getattr(cfg, "layer_types", None) or []
    window = getattr(cfg, "sliding_window", None)
    if key == "mistral" and window:
        # Mistral 7B v0.1: every layer attends to the last 4096 tokens; llama.cpp's llama graph attends to all
        notes.append(f"sliding window ({window}) is not applied by llama.cpp; identical up to {window} tokens")
    elif not spec.sliding_window and "sliding_attention" in layer_types:
        raise ExportError(
            f"{key} with sliding-window attention on some layers: llama.cpp's {spec.gguf_arch} does not implement it."
        )
    if key in ("gemma2", "gemma3_text"):
        # llama.cpp scales queries by 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the 27B models.
        scalar = getattr(cfg, "query_pre_attn_scalar", head_dim)
        big = n_layer == (46 if key == "gemma2" else 62)
        expected = cfg.hidden_size // cfg.num_attention_heads if big else head_dim
        if scalar != expected:
            raise ExportError(
                f"{key}: query_pre_attn_scalar={scalar} but llama.cpp scales queries by 1/sqrt({expected}) "
                "for this model size; the GGUF would compute different attention."
            )
    if key == "gemma3_text" and getattr(cfg, "attn_logit_softcapping", None):
        raise ExportError("gemma3 with attention soft-capping: llama.cpp's gemma3 graph does not apply it.")


def plan_model(model_dir: Path) -> ModelPlan:
    """Read config.json and the shard headers; decide every GGUF key and tensor. Reads no weights."""
    model_dir = Path(model_dir)
    model_type, cfg = load_config(model_dir)
    key = _ALIASES.get(model_type, model_type)
    spec = ARCHS[key]
    notes: list[str] = []

    n_layer = cfg.num_hidden_layers
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    _check_supported(cfg, key, spec, n_layer, head_dim, notes)

    source = read_safetensors_index(model_dir)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    names = spec.layer_names
    tensors: list[TensorPlan] = []
    unknown: list[str] = []
    dtypes: dict[str, int] = {}
    for st in sorted(source, key=lambda s: (s.file.name, s.offset)):
        name = _text_name(st.name, model_type)
        if name is None or name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when there is no output tensor
        stem, _, suffix = name.rpartition(".")
        gguf_name: str | None = None
        if stem in _TOP_NAMES:
            gguf_name = f"{_TOP_NAMES[stem]}.{suffix}"
        elif stem.startswith("model.layers."):
            _, _, rest = stem.partition("model.layers.")
            idx, _, module = rest.partition(".")
            if module in names and idx.isdigit():
                gguf_name = f"blk.{idx}.{names[module]}.{suffix}"
        if gguf_name is None or suffix not in ("weight", "bias"):
            unknown.append(st.name)
            continue
        if st.dtype not in _ST_DTYPES:
            raise ExportError(f"Tensor {st.name} in {st.file.name} has dtype {st.dtype}; expected a 16/32-bit float model.")
        dtypes[st.dtype] = dtypes.get(st.dtype, 0) + st.numel
        transform = None
        if spec.permute_qk and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
            transform = _permute_qk(n_head if ".attn_q." in gguf_name else n_kv)
        if spec.norm_plus_one and gguf_name.endswith("norm.weight"):
            transform = _compose(transform, _plus_one)
        tensors.append(TensorPlan(gguf_name, st.shape, st, transform))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ExportError(f"Tensors that a {key} GGUF has no place for: {shown}. Is this a merged {key} checkpoint?")

    by_name = {t.gguf_name: t for t in tensors}
    if "token_embd.weight" not in by_name:
        raise ExportError(f"No model.embed_tokens.weight in {model_dir}; the checkpoint is incomplete.")
    if not tied and "output.weight" not in by_name:
        raise ExportError(f"No lm_head.weight in {model_dir} and tie_word_embeddings is false; the checkpoint is incomplete.")
    n_vocab = by_name["token_embd.weight"].shape[0]

    ctx = int(getattr(cfg, "max_position_embeddings", 0) or 4096)
    hp: list[tuple[str, Any]] = [
        ("add_context_length", ctx),
        ("add_embedding_length", cfg.hidden_size),
        ("add_block_count", n_layer),
        ("add_feed_forward_length", cfg.intermediate_size),
        ("add_head_count", n_head),
        ("add_head_count_kv", n_kv),
        ("add_layer_norm_rms_eps", float(cfg.rms_norm_eps)),
        ("add_vocab_size", n_vocab),
        ("add_key_length", head_dim),
        ("add_value_length", head_dim),
        ("add_rope_dimension_count", head_dim),
    ]
    rope_hp, freqs = _rope_hparams(cfg, spec, head_dim, notes)
    hp += rope_hp
    if freqs is not None:
        tensors.insert(0, TensorPlan("rope_freqs.weight", tuple(freqs.shape), None, generated=freqs))
    if spec.sliding_window:
        if getattr(cfg, "sliding_window", None):
            hp.append(("add_sliding_window", int(cfg.sliding_window)))
        layer_types = getattr(cfg, "layer_types", None)
        if layer_types:
            hp.append(("add_sliding_window_pattern", [t == "sliding_attention" for t in layer_types]))
    for attr, method in (("attn_logit_softcapping", "add_attn_logit_softcapping"), ("final_logit_softcapping", "add_final_logit_softcapping")):
        value = getattr(cfg, attr, None)
        if value:
            hp.append((method, float(value)))

    source_dtype = _ST_DTYPES[max(dtypes, key=dtypes.get)]
    return ModelPlan(key, spec, cfg, tensors, n_vocab, ctx, source_dtype, hp, notes)
