"""On a GPU: varlen attention and the fused loss give the padded SDPA loss (kernels patched)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine.training.batching import Layout, collate_causal, trained_tokens
from tunesmith.engine.training.lm import CausalLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
                      attn_implementation="sdpa", use_cache=False)
    return LlamaForCausalLM(cfg).to("cuda", torch.bfloat16)


def _rows(n=9):
    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(n):
        k = int(torch.randint(8, 300, (1,), generator=g))
        ids = torch.randint(1, 1000, (k,), generator=g).tolist()
        rows.append({"input_ids": ids, "assistant_masks": [0] * (k // 3) + [1] * (k - k // 3)})
    return rows


def _loss(model, lm, rows, layout):
    model.zero_grad()
    denom = sum(trained_tokens(r) for r in rows)
    b = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in collate_causal(rows, layout).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = lm.hidden(b)
    loss, _, correct = lm.token_loss(h, b["targets"], denom)
    loss.backward()
    g = torch.cat([p.grad.float().reshape(-1) for p in model.parameters() if p.grad is not None])
    return float(loss), float(correct), g


def test_varlen_fused_equals_padded_sdpa():
    from tunesmith.engine.training.attention import install
    from tunesmith.kernels import patch

    rows = _rows()
    ref_model = _model()
    ref = _loss(ref_model, CausalLM(ref_model), rows, Layout(padding_free=False))
    model = _model()
    report = patch(model, mode="on")
    assert install(model, torch.bfloat16) is not None
    lm = CausalLM(model, fused=any(s.startswith("fused_linear_ce") for s in report.swapped), varlen=True)
    assert lm.fused
    for layout in (Layout(padding_free=True), Layout(padding_free=True, pad_to=4096, cu_slots=64)):
        loss, correct, g = _loss(model, lm, rows, layout)
        assert loss == pytest.approx(ref[0], rel=2e-2)
        assert abs(correct - ref[1]) <= 0.02 * sum(trained_tokens(r) for r in rows) + 2
        assert float((g - ref[2]).norm() / ref[2].norm()) < 5e-2
