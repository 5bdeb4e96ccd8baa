"""Variable-length attention for padding-free batches on CUDA.

A padding-free forward pass is one sequence of T tokens holding many examples. With SDPA,
transformers keeps them apart with a (T x T) block-diagonal mask, and SDPA then computes the
whole T x T product (the masked blocks too) with its memory-efficient kernel: at 16k tokens
of ~400-token examples that is ~40x the attention work the examples need, plus a 256 MB mask.
Here attention runs per example instead, through PyTorch's flash-attention varlen kernel
(torch.nn.attention.varlen.varlen_attn) driven by cumulative sequence lengths
(`cu_seq_lens_q`, int32 on the device, passed down from the trainer as transformers'
FlashAttentionKwargs): work proportional to sum(L_i^2), no mask.

    desc = install(model)     # registers "tunesmith_varlen" and switches the model to it
    model.model(input_ids, position_ids=..., cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                max_length_q=m, max_length_k=m)

`install` probes the kernel once (forward and backward against per-example SDPA on random
data, grouped-query heads included) and returns None, changing nothing, where it is missing
or wrong; the caller then keeps SDPA with transformers' block-diagonal mask (correct, slower).
Calls without cu_seq_lens (generation, padded batches) go to SDPA unchanged.

What it does not know: softcapped or sliding-window attention (Gemma 2/3, Mistral with a
window): `install` refuses those models.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger("tunesmith.trainer")

NAME = "tunesmith_varlen"
_KW: dict | None = None  # extra keyword arguments the installed varlen_attn takes
_DTYPE: torch.dtype = torch.bfloat16  # the 16-bit dtype the probe checked (flash takes no fp32)


def _varlen_fn():
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn


def _call(q, k, v, cu, max_len: int, scale: float | None) -> torch.Tensor:
    """q (T, H, D), k/v (T, Hkv, D) -> (T, H, D), causal within each segment of cu."""
    kw = dict(_KW or {})
    dtype = q.dtype
    if dtype != _DTYPE:  # fp32 weights (full fine-tuning) under autocast: RoPE's fp32 cos/sin promote q and k;
        q, k, v = q.to(_DTYPE), k.to(_DTYPE), v.to(_DTYPE)  # SDPA would run in the autocast dtype here too
    if k.shape[1] != q.shape[1] and not kw.pop("gqa_native", False):
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    kw.pop("gqa_native", None)
    return _varlen_fn()(q, k, v, cu, cu, max_len, max_len, scale=scale, **kw).to(dtype)


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """transformers attention interface: query (1, H, T, D), key/value (1, Hkv, T, D) -> (1, T, H, D)."""
    if cu_seq_lens_q is None or query.shape[0] != 1:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        for k in ("cu_seq_lens_k", "max_length_k"):
            kwargs.pop(k, None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q = query[0].transpose(0, 1)
    k = key[0].transpose(0, 1)
    v = value[0].transpose(0, 1)
    out = _call(q, k, v, cu_seq_lens_q, int(max_length_q), scaling)
    return out.unsqueeze(0), None


def _reference(q, k, v, lens, scale):
    outs, s = [], 0
    rep = q.shape[1] // k.shape[1]
    for n in lens:
        if n == 0:
            continue
        qs = q[s:s + n].transpose(0, 1)[None]
        ks = k[s:s + n].transpose(0, 1)[None].repeat_interleave(rep, dim=1)
        vs = v[s:s + n].transpose(0, 1)[None].repeat_interleave(rep, dim=1)
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)[0].transpose(0, 1))
        s += n
    return torch.cat(outs)


def _probe(dtype: torch.dtype) -> dict | None:
    """The keyword arguments under which varlen_attn matches per-example SDPA (forward and
    backward, GQA heads), or None."""
    global _KW, _DTYPE
    try:
        params = inspect.signature(_varlen_fn()).parameters
    except (ImportError, AttributeError, ValueError) as e:
        log.info("varlen attention unavailable: %s", e)
        return None
    base: dict = {}
    if "is_causal" in params:
        base["is_causal"] = True
    elif "window_size" in params:
        base["window_size"] = (-1, 0)
    else:
        return None
    tries = []
    if "enable_gqa" in params:
        tries.append({**base, "enable_gqa": True, "gqa_native": True})
    tries += [{**base, "gqa_native": True}, dict(base)]
    g = torch.Generator(device="cuda").manual_seed(0)
    lens = [37, 5, 90, 1, 64, 0, 0]  # trailing empty segments: the fixed-size cu_seq_lens of CUDA graphs
    T, H, Hkv, D = sum(lens), 8, 2, 64
    cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))], dtype=torch.int32, device="cuda")
    for kw in tries:
        _KW, _DTYPE = kw, dtype
        try:
            q, k, v = (torch.randn(T, h, D, device="cuda", dtype=dtype, generator=g).requires_grad_()
                       for h in (H, Hkv, Hkv))
            out = _call(q, k, v, cu, max(lens), D**-0.5)
            dout = torch.randn_like(out)
            gq, gk, gv = torch.autograd.grad(out, (q, k, v), dout)
            ref = _reference(q.float(), k.float(), v.float(), lens, D**-0.5)
            rq, rk, rv = torch.autograd.grad(ref, (q, k, v), dout.float())
            errs = [float((a.float() - b).norm() / b.norm()) for a, b in ((out, ref), (gq, rq), (gk, rk), (gv, rv))]
            if max(errs) < 2e-2:
                return kw
            log.info("varlen attention %s differs from SDPA (relative errors %s)", kw, errs)
        except Exception as e:  # noqa: BLE001 - any failure means: keep SDPA
            log.info("varlen attention %s failed: %s", kw, str(e).splitlines()[0] if str(e) else type(e).__name__)
    _KW = None
    return None


def install(model, dtype: torch.dtype) -> str | None:
    """Switch `model` (a PeftModel or a transformers model) to varlen attention; None if it cannot."""
    global _KW, _DTYPE
    if not torch.cuda.is_available():
        return None
    from transformers import AttentionInterface

    from .lm import _unwrap

    inner = _unwrap(model)
    cfg = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    if getattr(cfg, "attn_logit_softcapping", None) or getattr(cfg, "sliding_window", None) or \
            getattr(cfg, "use_sliding_window", False):
        return None
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", None):
        return None  # e.g. flash_attention_2 already handles cu_seq_lens itself
    kw = _probe(dtype)
    if kw is None:
        return None
    _KW, _DTYPE = kw, dtype
    AttentionInterface.register(NAME, varlen_attention)
    from transformers import masking_utils

    try:
        early_exit = "_global_mapping" in inspect.getsource(masking_utils._preprocess_mask_arguments)
    except (OSError, TypeError, AttributeError):
        early_exit = False
    if not early_exit:  # older transformers look every implementation up: no mask is needed here
        masking_utils.AttentionMaskInterface.register(NAME, lambda *a, **k: None)
    try:
        inner.set_attn_implementation(NAME)
    except Exception:  # noqa: BLE001 - older transformers: set the config field directly
        for c in {id(inner.config): inner.config, id(cfg): cfg}.values():
            c._attn_implementation = NAME
    return "flash varlen (torch.nn.attention.varlen)"
