"""Hidden states and the token loss of a causal LM, without the logits where possible.

    lm = CausalLM(model, fused=True)
    h = lm.hidden(batch)                                   # (B, T, H) from the decoder body
    loss, loss_sum, correct = lm.token_loss(h, batch["targets"], denom)

`token_loss` returns this pass's share of the step loss (sum of token losses / denom), and,
detached for the metrics, the sum of token losses and how many targets were the argmax.
With `fused` (Tunesmith's kernels applied, CUDA) it is kernels/fused_linear_ce.py: the LM head
and the loss in chunks, the logits never held in full, the gradient made in forward, token
accuracy from the same pass. Otherwise a plain chunked cross-entropy in PyTorch (the CPU and
stock path); chunks are recomputed in backward when the full logits would be large.

Models whose head is not a plain Linear (a LoRA on the head, logit scaling, multimodal
wrappers) go through model(...).logits instead: correct, just not logit-free.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from .batching import IGNORE

_LOGIT_SCALES = ("logit_scale", "logits_scaling", "output_multiplier")
# Above this many logits in one pass the plain path recomputes each chunk in backward.
_CHECKPOINT_LOGITS = 64 * 1024**2


def _unwrap(model):
    try:
        from tunesmith.kernels import unwrap_model

        return unwrap_model(model)
    except ImportError:  # kernels need triton; the CPU path does not
        inner = getattr(model, "base_model", model)
        return getattr(inner, "model", inner)


class CausalLM:
    def __init__(self, model: torch.nn.Module, fused: bool = False, chunk_rows: int = 2048, varlen: bool = False):
        self.model = model
        self.varlen = varlen  # attention reads cu_seq_lens (engine/training/attention.py)
        inner = _unwrap(model)
        self.inner = inner
        self.config = inner.config
        self.decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
        self.head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        self.softcap = getattr(self.config, "final_logit_softcapping", None)
        self.direct = (
            isinstance(self.decoder, torch.nn.Module) and self.decoder is not inner
            and type(self.head) is torch.nn.Linear
            and all(getattr(self.config, a, None) in (None, 1, 1.0) for a in _LOGIT_SCALES)
        )
        self.fused = fused and self.direct
        self.chunk_rows = chunk_rows

    def describe(self) -> str:
        if self.fused:
            return "fused linear + cross-entropy (no logits)"
        if self.direct:
            return "chunked cross-entropy"
        return "full logits (head is not a plain Linear)"

    def _inputs(self, batch: dict) -> dict:
        kw = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
        if "attention_mask" in batch:
            kw["attention_mask"] = batch["attention_mask"]
        if self.varlen and "cu_seq_lens" in batch:
            cu, m = batch["cu_seq_lens"], int(batch["max_length"])
            kw.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=m, max_length_k=m)
        return kw

    def hidden(self, batch: dict) -> torch.Tensor:
        """Last hidden states (B, T, H); for models without a direct path, the logits."""
        if self.direct:
            return self.decoder(**self._inputs(batch)).last_hidden_state
        return self.model(**self._inputs(batch)).logits

    def token_loss(self, hidden: torch.Tensor, tgt: torch.Tensor, denom: float,
                   track_correct: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(loss = sum of token losses / denom, detached sum of token losses, detached count of
        targets that were the argmax or None)."""
        tgt = tgt.reshape(-1)
        if self.fused:
            from tunesmith.kernels.fused_linear_ce import fused_linear_cross_entropy

            from tunesmith.kernels import settings_of

            correct = torch.empty(tgt.shape[0], dtype=torch.float32, device=tgt.device) if track_correct else None
            loss = fused_linear_cross_entropy(hidden, self.head.weight, tgt, self.head.bias, ignore_index=IGNORE,
                                              softcap=self.softcap, num_items_in_batch=float(denom),
                                              chunk_bytes=settings_of(self.model).ce_chunk_bytes, correct=correct)
            return loss, loss.detach() * denom, correct.sum() if correct is not None else None
        if not self.direct:  # `hidden` holds logits
            z = hidden.reshape(-1, hidden.shape[-1]).float()
            total = F.cross_entropy(z, tgt, ignore_index=IGNORE, reduction="sum")
            right = ((z.detach().argmax(-1) == tgt) & (tgt != IGNORE)).sum() if track_correct else None
            return total / denom, total.detach(), right
        h = hidden.reshape(-1, hidden.shape[-1])
        w, b = self.head.weight, self.head.bias
        recompute = h.shape[0] * w.shape[0] > _CHECKPOINT_LOGITS and torch.is_grad_enabled()
        total, right = None, None
        for s in range(0, h.shape[0], self.chunk_rows):
            hc, yc = h[s:s + self.chunk_rows], tgt[s:s + self.chunk_rows]
            if recompute:
                from torch.utils.checkpoint import checkpoint

                ls, rc = checkpoint(_chunk_ce, hc, w, b, yc, self.softcap, use_reentrant=False)
            else:
                ls, rc = _chunk_ce(hc, w, b, yc, self.softcap)
            total = ls if total is None else total + ls
            right = rc if right is None else right + rc
        return total / denom, total.detach(), right if track_correct else None


def _chunk_ce(h, w, b, y, softcap):
    z = F.linear(h, w, b).float()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, y, ignore_index=IGNORE, reduction="sum")
    right = ((z.detach().argmax(-1) == y) & (y != IGNORE)).sum()
    return loss, right


class StepContext:
    """What an objective's loss gets: the model, the LM helper, a reference model and generation."""

    def __init__(self, model: torch.nn.Module, lm: CausalLM, device: torch.device, autocast):
        self.model = model
        self.lm = lm
        self.device = device
        self._autocast = autocast
        self._adapter_layers: list[torch.nn.Module] | None = None  # PEFT layers, found on first reference()

    def autocast(self):
        return self._autocast()

    @contextlib.contextmanager
    def reference(self):
        """The frozen base model: the adapter switched off for the duration (LoRA/QLoRA), no grad.

        PEFT's own switch (`disable_adapter()`) also toggles requires_grad on every adapter tensor,
        both ways: ~0.3 ms per LoRA layer of host time (30 ms a step on a 1B model with 112 of
        them, while the GPU waits). Under no_grad only the layers' flag matters, so that alone is
        flipped and put back."""
        if getattr(self.model, "disable_adapter", None) is None:
            raise RuntimeError("a reference model needs a LoRA/QLoRA run (method full keeps no frozen copy)")
        if self._adapter_layers is None:
            self._adapter_layers = [m for m in self.model.modules() if "_disable_adapters" in m.__dict__]
        was = [m.__dict__["_disable_adapters"] for m in self._adapter_layers]
        try:
            for m in self._adapter_layers:
                m.__dict__["_disable_adapters"] = True
            with torch.no_grad():
                yield self.model
        finally:
            for m, w in zip(self._adapter_layers, was):
                m.__dict__["_disable_adapters"] = w

    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Sampling for on-policy objectives; the model is put in eval mode for the call."""
        was = self.model.training
        cfg = self.lm.inner.config
        attn = getattr(cfg, "_attn_implementation", None)
        self.model.eval()
        try:
            if self.lm.varlen:  # varlen attention needs cu_seq_lens; generation (with padding) needs masks
                cfg._attn_implementation = "sdpa"
            with torch.no_grad():
                return self.model.generate(input_ids=input_ids, use_cache=True, **kwargs)
        finally:
            cfg._attn_implementation = attn
            self.model.train(was)
