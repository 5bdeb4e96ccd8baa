"""Swap Tunesmith's Triton kernels into a live Hugging Face model.

    from tunesmith.kernels import patch
    model = peft.get_peft_model(model, lora_config)   # patch AFTER PEFT wrapping
    report = patch(model, mode="auto")                # auto | on | off
    log.info(report.summary())

The kernels' options (KernelSettings: NF4 grouping, the NF4 weight cache, the
LM-head chunk size) travel with the model: patch(..., settings=...) or
set_settings(model, settings) attach them to its patched modules, and the
patched forwards pass them to the kernels as arguments. A memory plan
(kernels/memory_plan.py) picks them for a run.

`patch` is called on the finished training model: after quantized loading and
after `peft.get_peft_model`. It unwraps a PeftModel (and its LoraModel) to find
the transformers model inside, so it may also be called on a bare model. It
never replaces modules or classes: it rebinds `forward` on the modules of that
one instance, so other models in the process stay stock.

Dispatch is a small table keyed by `config.model_type`. An unknown
architecture, mode "off", or (mode "auto") a machine without CUDA is a logged
no-op; the report says what was swapped and what was skipped and why.

What it does not know: it does not check that a checkpoint's weights are
sane, and it patches only the module types named in the table; anything else
runs stock.
"""
from __future__ import annotations

import copy
import inspect
import logging
import types
from dataclasses import dataclass, field

import torch

from .model_parts import decoder_layers, is_sharded_tensor, unwrap_model
from .settings import KernelSettings
from .utils import interpreting

log = logging.getLogger("tunesmith.kernels")

MODES = ("auto", "on", "off")


@dataclass
class PatchReport:
    """What `patch` did to one model.

    swapped: "<kernel>: <n> modules" entries; skipped: (what, why) pairs.
    """

    model_type: str | None
    mode: str
    swapped: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.swapped)

    def summary(self) -> str:
        arch = self.model_type or "unknown"
        head = f"kernels[{self.mode}] {arch}: "
        parts = []
        if self.swapped:
            parts.append("swapped " + ", ".join(self.swapped))
        if self.skipped:
            parts.append("skipped " + "; ".join(f"{w} ({why})" for w, why in self.skipped))
        return head + ("; ".join(parts) if parts else "nothing to do")


# --- the architecture table ---------------------------------------------------
# model_type -> how its modules compute. rms: "llama" (x-hat rounded to the
# input dtype, then times w) or "gemma" ((1 + w) in fp32). Activations are
# probed on the live module, not trusted from here.
ARCHS: dict[str, dict] = {
    "llama": dict(rms="llama"),
    "mistral": dict(rms="llama"),
    "qwen2": dict(rms="llama"),
    "qwen3": dict(rms="llama"),
    "gemma2": dict(rms="gemma"),
    "gemma3": dict(rms="gemma"),       # Gemma3ForConditionalGeneration: the language model is patched
    "gemma3_text": dict(rms="gemma"),  # Gemma3ForCausalLM
}

# Kernels patch() knows, in the order they are applied; each can be turned off by keyword.
KERNELS = ("rms_norm", "mlp", "attention", "fused_linear_ce")


def patch(model: torch.nn.Module, mode: str = "auto", *, settings: KernelSettings | None = None,
          rms_norm: bool = True, mlp: bool = True, attention: bool = True, fused_linear_ce: bool = True,
          lora_fused: bool = True) -> PatchReport:
    """Rebind forwards on `model`'s modules to Tunesmith's Triton kernels.

    Call it AFTER `peft.get_peft_model(model, ...)`, on the PeftModel (a
    PeftModel is unwrapped to the transformers model inside). Calling it on a
    bare model before PEFT wrapping also works: the patched forwards look up
    q_proj/gate_proj/... at call time, so LoRA layers added later are seen.

    mode:
      "off"  patch nothing; undo an earlier patch of this model.
      "auto" patch what applies when CUDA is available; on a CPU-only machine
             patch nothing (the kernels need CUDA; CPU training stays stock).
      "on"   patch what applies even without CUDA. Without CUDA the kernels
             only run under the Triton interpreter (TRITON_INTERPRET=1, set
             before triton is imported): for tests, slow.

    settings: the kernels' options for this model (a memory plan's plan.settings); None keeps
    what the model was given before (set_settings, kernels.apply_memory_plan), else the
    defaults (KernelSettings()). They belong to this model alone.

    Keyword flags turn single kernels off. lora_fused=False keeps PEFT's own
    LoRA layers (the MLP then uses only the SwiGLU/GeGLU kernel, attention
    only RoPE).

    What is patched, per model_type in ARCHS:
      rms_norm         every *RMSNorm module (Gemma: the 1 + w variant)
      mlp              gate/up/down MLPs: LoRA-fused MLP when its three
                       projections are LoRA or frozen Linear (16-bit or NF4),
                       else the stock projections around the GLU kernel
      attention        RoPE on Q and K in one launch; LoRA-fused Q/K/V and O
      fused_linear_ce  *ForCausalLM forward when training with labels: chunked
                       LM head + loss, no full logits (outputs.logits is None)

    Returns a PatchReport; `report.summary()` is one log line. Never raises for
    an unsupported model: anything it cannot patch runs stock and is listed in
    `report.skipped` with the reason.
    """
    if mode not in MODES:
        raise ValueError(f"kernels mode must be one of {MODES}, got {mode!r}")
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    model_type = getattr(config, "model_type", None)
    report = PatchReport(model_type=model_type, mode=mode)

    if mode == "off":
        n = unpatch(inner)
        report.skipped.append(("all kernels", "kernels: off" + (f" (restored {n} stock forwards)" if n else "")))
    elif model_type not in ARCHS:
        report.skipped.append(("all kernels", f"architecture {model_type!r} is not in the kernel table"))
    elif mode == "auto" and not torch.cuda.is_available():
        report.skipped.append(("all kernels", "kernels need CUDA; running stock on CPU"))
    elif not torch.cuda.is_available() and not interpreting():
        report.skipped.append(("all kernels", "no CUDA and TRITON_INTERPRET is not set"))
    else:
        flags = dict(rms_norm=rms_norm, mlp=mlp, attention=attention, fused_linear_ce=fused_linear_ce)
        _apply(inner, ARCHS[model_type], flags, lora_fused, report)
        set_settings(inner, settings if settings is not None else settings_of(inner))

    log.info(report.summary())
    return report


def _apply(model: torch.nn.Module, spec: dict, flags: dict, lora_fused: bool, report: PatchReport) -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        report.skipped.append(("all kernels", "triton is not installed"))
        return
    for name in KERNELS:
        if not flags[name]:
            report.skipped.append((name, "turned off"))
            continue
        try:
            n, why = _PATCHERS[name](model, spec, lora_fused)
        except Exception as exc:  # a patcher must never break training: run stock
            log.warning("kernel %s not applied: %s", name, exc)
            report.skipped.append((name, f"error: {exc}"))
            continue
        if n:
            report.swapped.append(f"{name} x{n}" + (f" ({why})" if why else ""))
        else:
            report.skipped.append((name, why or "no matching modules"))


def _rebind(module: torch.nn.Module, fn) -> None:
    """Set module.forward to fn bound to module; the class forward stays untouched."""
    if not hasattr(module, "_tunesmith_patched"):
        module._tunesmith_patched = True
    module.forward = types.MethodType(fn, module)


def unpatch(model: torch.nn.Module) -> int:
    """Restore stock forwards on every module patch() touched (dropping the kept NF4 weights);
    returns how many."""
    n = 0
    for m in unwrap_model(model).modules():
        if getattr(m, "_tunesmith_patched", False):
            m.__dict__.pop("forward", None)
            m.__dict__.pop("_tunesmith_cache", None)
            del m._tunesmith_patched
            n += 1
    return n


def settings_of(model: torch.nn.Module) -> KernelSettings:
    """The KernelSettings `model` was last given (set_settings), else the defaults."""
    return unwrap_model(model).__dict__.get("_tunesmith_settings") or KernelSettings()


def set_settings(model: torch.nn.Module, settings: KernelSettings) -> None:
    """Give `model` these kernel settings: its patched modules' forwards pass them to the kernels,
    and with cache_nf4_weights a WeightCache of its own (any earlier one is dropped). Modules
    patched later with settings=None take them too. Other models are not touched."""
    if not isinstance(settings, KernelSettings):
        raise TypeError(f"settings must be a KernelSettings, not {type(settings).__name__}")
    inner = unwrap_model(model)
    cache = None
    if settings.cache_nf4_weights:
        from .lora import WeightCache  # imports triton: only when there are kernels to feed

        cache = WeightCache()
    inner._tunesmith_settings = settings
    for m in inner.modules():
        if getattr(m, "_tunesmith_patched", False):
            m._tunesmith_settings = settings
            m._tunesmith_cache = cache


def release_weight_cache(model: torch.nn.Module) -> None:
    """Free the NF4 weights `model` keeps dequantized (they are rebuilt on the next step)."""
    for m in unwrap_model(model).modules():
        cache = m.__dict__.get("_tunesmith_cache")
        if cache is not None:
            cache.clear()


def _stock_forward(module: torch.nn.Module):
    return types.MethodType(type(module).forward, module)


# --- RMSNorm -------------------------------------------------------------------


def _rms_forward(self, hidden_states):
    from .rms_norm import rms_norm

    eps, offset, casting = self._tunesmith_rms
    return rms_norm(hidden_states, self.weight, eps, offset, casting)


def _patch_rms_norm(model, spec, lora_fused):
    from .rms_norm import rms_norm_reference

    casting = spec["rms"]
    offset = 1.0 if casting == "gemma" else 0.0
    n, bad = 0, set()
    for m in model.modules():
        w = getattr(m, "weight", None)
        if not type(m).__name__.endswith("RMSNorm") or not isinstance(w, torch.Tensor) or w.dim() != 1:
            continue
        eps = getattr(m, "variance_epsilon", getattr(m, "eps", None))
        if eps is None or (w.device.type != "meta" and not _probe_rms(m, float(eps), offset, casting,
                                                                     rms_norm_reference)):
            bad.add(type(m).__name__)
            continue
        m._tunesmith_rms = (float(eps), offset, casting)
        _rebind(m, _rms_forward)
        n += 1
    why = f"{', '.join(sorted(bad))} computed differently than expected: left stock" if bad else ""
    if bad:
        log.warning("rms_norm: %s", why)
    return n, why


def _probe_rms(m, eps, offset, casting, reference) -> bool:
    """Does the stock forward compute what our kernel computes? (two random rows, no grad)

    A weight sharded by FSDP2 (a DTensor, whole only inside its unit's forward) is probed through a
    stand-in: a shallow copy of the module holding a random weight of the whole shape, so patching
    after fully_shard reads no shard and needs no collective."""
    w = m.weight
    if is_sharded_tensor(w):
        m = copy.copy(m)
        m._parameters = dict(m._parameters)
        m._parameters["weight"] = torch.nn.Parameter(
            1 + 0.1 * torch.randn(w.shape, device=w.device, dtype=w.dtype), requires_grad=False)
        w = m.weight
    with torch.no_grad():
        x = torch.randn(2, w.shape[0], device=w.device, dtype=w.dtype)
        stock = _stock_forward(m)(x)
        ours = reference(x, w, eps, offset, casting)
    return stock.shape == ours.shape and torch.allclose(stock.float(), ours.float(), atol=1e-2, rtol=1e-2)


# --- MLP -------------------------------------------------------------------------


def _probe_act(act_fn, device) -> str | None:
    """Which of our activations act_fn computes (checked numerically), or None."""
    x = torch.linspace(-6, 6, 97, device=device)
    with torch.no_grad():
        y = act_fn(x)
        if torch.allclose(y, torch.nn.functional.silu(x), atol=1e-5):
            return "silu"
        if torch.allclose(y, torch.nn.functional.gelu(x, approximate="tanh"), atol=1e-5):
            return "gelu_tanh"
    return None


def _mlp_forward(self, x):
    from .lora import lora_projection
    from .lora_mlp import lora_mlp
    from .swiglu import glu

    act = self._tunesmith_act
    if self._tunesmith_lora_fused:
        pg, Ag, Bg, _ = lora_projection(self.gate_proj)
        pu, Au, Bu, _ = lora_projection(self.up_proj)
        pd, Ad, Bd, _ = lora_projection(self.down_proj)
        if pg is not None and pu is not None and pd is not None:
            return lora_mlp(x, pg, pu, pd, act, Ag, Bg, Au, Bu, Ad, Bd,
                            skip_tail=getattr(self, "_tunesmith_skip_tail", False),
                            group_nf4=self._tunesmith_settings.group_nf4, cache=self._tunesmith_cache)
    return self.down_proj(glu(self.gate_proj(x), self.up_proj(x), act))


def _patch_mlp(model, spec, lora_fused):
    from .lora import lora_projection

    n, fused, reasons = 0, 0, set()
    for m in model.modules():
        if not all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            continue
        act = _probe_act(m.act_fn, m.down_proj.weight.device if hasattr(m.down_proj, "weight") else "cpu")
        if act is None:
            reasons.add(f"activation {type(m.act_fn).__name__} not supported")
            continue
        src = _source(type(m).forward)
        if "self.act_fn(self.gate_proj(x)) * self.up_proj(x)" not in src.replace("hidden_state", "x"):
            reasons.add(f"{type(m).__name__}.forward is not down(act(gate(x)) * up(x))")
            continue
        m._tunesmith_act = act
        m._tunesmith_lora_fused = lora_fused
        _rebind(m, _mlp_forward)
        n += 1
        if lora_fused:
            why = [lora_projection(getattr(m, a))[3] for a in ("gate_proj", "up_proj", "down_proj")]
            why = [w for w in why if w]
            if why:
                reasons.add("LoRA-fused path off: " + why[0])
            else:
                fused += 1
    _mark_residual_tails(model)
    note = f"{fused} LoRA-fused" if fused else ""
    if reasons:
        note = "; ".join(filter(None, [note, *sorted(reasons)]))
    return n, note


_RESIDUAL_TAIL = "hidden_states=self.mlp(hidden_states)hidden_states=residual+hidden_states"


def _mark_residual_tails(model) -> None:
    """MLPs whose output goes straight into the residual add (Llama, Mistral, Qwen; not Gemma's
    post-feedforward norm, which reads it) may skip their tail in a checkpoint's recompute."""
    for layer in decoder_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is not None and _RESIDUAL_TAIL in "".join(_source(type(layer).forward).split()):
            mlp._tunesmith_skip_tail = True


def _source(fn) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        return ""


# --- attention --------------------------------------------------------------------


def _attn_forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None,
                  **kwargs):
    """transformers 5.x attention (Llama/Mistral/Qwen2/Qwen3/Gemma2/Gemma3) with fused RoPE and LoRA."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from .lora import lora_linear, lora_projection
    from .lora_qkv import lora_qkv
    from .rope import apply_rope

    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, self.head_dim)
    projs = None
    if self._tunesmith_lora_fused:
        projs = [lora_projection(getattr(self, a)) for a in ("q_proj", "k_proj", "v_proj")]
        if any(p[0] is None for p in projs):
            projs = None
    if projs is not None:
        q, k, v = lora_qkv(hidden_states, *[p[0] for p in projs], *[t for p in projs for t in p[1:3]],
                           cache=self._tunesmith_cache)
    else:
        q, k, v = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states)
    q, k, v = q.view(hidden_shape), k.view(hidden_shape), v.view(hidden_shape)
    if getattr(self, "q_norm", None) is not None:  # Qwen3, Gemma3: per-head RMSNorm before RoPE
        q, k = self.q_norm(q), self.k_norm(k)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    cos, sin = position_embeddings
    q, k = apply_rope(q, k, cos, sin)
    if past_key_values is not None:
        k, v = past_key_values.update(k, v, self.layer_idx)

    attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                self._tunesmith_eager)
    extra = {}
    if hasattr(self, "sliding_window"):
        extra["sliding_window"] = self.sliding_window
    elif getattr(self.config, "sliding_window", None) is not None:  # Mistral reads it from the config
        extra["sliding_window"] = self.config.sliding_window
    if hasattr(self, "attn_logit_softcapping"):  # Gemma 2
        extra["softcap"] = self.attn_logit_softcapping
    attn_output, attn_weights = attention_interface(
        self, q, k, v, attention_mask,
        dropout=0.0 if not self.training else self.attention_dropout,
        scaling=self.scaling, **extra, **kwargs,
    )
    attn_output = attn_output.reshape(*input_shape, -1).contiguous()
    po, Ao, Bo, _ = lora_projection(self.o_proj) if self._tunesmith_lora_fused else (None, None, None, "")
    if po is not None:
        out = lora_linear(attn_output, po, Ao, Bo, self._tunesmith_cache)
    else:
        out = self.o_proj(attn_output)
    return out, attn_weights


_ATTN_MARKERS = ("apply_rotary_pos_emb(query_states, key_states, cos, sin)", "attention_interface(",
                 "self.o_proj(attn_output)")


def _patch_attention(model, spec, lora_fused):
    import sys

    from .lora import lora_projection

    n, fused, reasons = 0, 0, set()
    for m in model.modules():
        if not all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")):
            continue
        src = _source(type(m).forward)
        if not all(marker in src for marker in _ATTN_MARKERS):
            reasons.add(f"{type(m).__name__}.forward differs from the transformers 5.x layout")
            continue
        eager = getattr(sys.modules.get(type(m).__module__), "eager_attention_forward", None)
        if eager is None:
            reasons.add(f"no eager_attention_forward next to {type(m).__name__}")
            continue
        m._tunesmith_eager = eager
        m._tunesmith_lora_fused = lora_fused
        _rebind(m, _attn_forward)
        n += 1
        if lora_fused:
            why = [lora_projection(getattr(m, a))[3] for a in ("q_proj", "k_proj", "v_proj", "o_proj")]
            why = [w for w in why if w]
            if why:
                reasons.add("LoRA-fused path off: " + why[0])
            else:
                fused += 1
    note = "RoPE" + (f", {fused} LoRA-fused QKV/O" if fused else "")
    if reasons:
        note = "; ".join([note, *sorted(reasons)])
    return n, note if n else "; ".join(sorted(reasons))


# --- causal LM head + loss ---------------------------------------------------------


def _causal_lm_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                       inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, **kwargs):
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from .fused_linear_ce import fused_linear_cross_entropy, shift_labels

    shifted = kwargs.get("shift_labels")
    if not self.training or (labels is None and shifted is None):
        return _stock_forward(self)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                    use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
    num_items = kwargs.pop("num_items_in_batch", None)
    kwargs.pop("shift_labels", None)
    ignore_index = kwargs.pop("ignore_index", -100)
    outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)
    hidden = outputs.last_hidden_state
    target = shifted if shifted is not None else shift_labels(labels, ignore_index)
    loss = fused_linear_cross_entropy(
        hidden, self.lm_head.weight, target.to(hidden.device), self.lm_head.bias, ignore_index=ignore_index,
        softcap=getattr(self.config, "final_logit_softcapping", None), num_items_in_batch=num_items,
        chunk_bytes=self._tunesmith_settings.ce_chunk_bytes)
    return CausalLMOutputWithPast(loss=loss, logits=None, past_key_values=outputs.past_key_values,
                                  hidden_states=outputs.hidden_states, attentions=outputs.attentions)


def _patch_fused_linear_ce(model, spec, lora_fused):
    name = type(model).__name__
    if not name.endswith("ForCausalLM"):
        return 0, f"{name} is not a *ForCausalLM (multimodal and other heads run stock)"
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Linear) or head.weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return 0, "lm_head is not a plain 16/32-bit Linear"
    if hasattr(head, "base_layer"):
        return 0, "lm_head carries a LoRA adapter"
    src = _source(type(model).forward)
    if "self.lm_head(" not in src or "self.loss_function(" not in src:
        return 0, f"{name}.forward differs from the transformers 5.x layout"
    for attr in ("logit_scale", "logits_scaling", "output_multiplier"):
        if getattr(model.config, attr, None) not in (None, 1, 1.0):
            return 0, f"config.{attr} scales the logits"
    _rebind(model, _causal_lm_forward)
    return 1, name


_PATCHERS = {
    "rms_norm": _patch_rms_norm,
    "mlp": _patch_mlp,
    "attention": _patch_attention,
    "fused_linear_ce": _patch_fused_linear_ce,
}
