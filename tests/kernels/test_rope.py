import pytest
import torch
from kernel_testutils import BF16, DEVICE, FP16, FP32, assert_close, gpu_param, leaf

from tunesmith.kernels.rope import apply_rope, rope_cos_sin_reference, rope_reference


def _inv_freq(d, base=10000.0):
    return 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32, device=DEVICE) / d))


def _qk(b, hq, hk, s, d, dtype):
    # The (b, s, h, d) -> (b, h, s, d) transposed views the attention modules make.
    q = torch.randn(b, s, hq, d, device=DEVICE, dtype=dtype).transpose(1, 2)
    k = torch.randn(b, s, hk, d, device=DEVICE, dtype=dtype).transpose(1, 2)
    return q, k


@pytest.mark.parametrize("b,hq,hk,s,d", [(1, 2, 1, 5, 8), (2, 4, 2, 7, 16), (2, 3, 3, 6, 24),
                                         gpu_param(2, 32, 8, 2048, 128)])
@pytest.mark.parametrize("dtype,atol,rtol", [FP32, BF16, gpu_param(*FP16)])
def test_rope_matches_reference(b, hq, hk, s, d, dtype, atol, rtol):
    q, k = _qk(b, hq, hk, s, d, dtype)
    pos = torch.arange(s, device=DEVICE).expand(b, s)
    cos, sin = rope_cos_sin_reference(pos, _inv_freq(d), dtype=dtype)
    dq, dk = torch.randn_like(q), torch.randn_like(k)

    q1, k1 = leaf(q), leaf(k)
    qo, ko = apply_rope(q1, k1, cos, sin)
    torch.autograd.backward((qo, ko), (dq, dk))
    q2, k2 = leaf(q.float()), leaf(k.float())
    qr, kr = rope_reference(q2, k2, cos.float(), sin.float())
    torch.autograd.backward((qr, kr), (dq.float(), dk.float()))
    assert_close(qo, qr, atol, rtol, "q")
    assert_close(ko, kr, atol, rtol, "k")
    assert_close(q1.grad, q2.grad, atol, rtol, "dq")
    assert_close(k1.grad, k2.grad, atol, rtol, "dk")


def test_rope_packed_position_ids_and_llama3_scaling():
    """Two sequences packed in one row (positions restart) under llama3 frequency scaling."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    rotary = LlamaRotaryEmbedding(cfg).to(DEVICE)
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3], [0, 1, 2, 0, 1, 2, 3, 4, 5]], device=DEVICE)
    q, k = _qk(2, 4, 2, 9, 16, torch.float32)
    cos, sin = rotary(q, pos)
    qo, ko = apply_rope(q, k, cos, sin)
    qr, kr = rope_reference(q, k, cos, sin)
    assert_close(qo, qr, 1e-5, 1e-5, "q")
    assert_close(ko, kr, 1e-5, 1e-5, "k")
    # token 5 of row 0 restarts at position 0: it must be left unrotated.
    assert_close(qo[0, :, 5], q[0, :, 5], 1e-6, 1e-6, "restart")


def test_rope_broadcast_cos_and_contiguous_inputs():
    q = torch.randn(2, 3, 5, 8, device=DEVICE)
    k = torch.randn(2, 1, 5, 8, device=DEVICE)
    cos, sin = rope_cos_sin_reference(torch.arange(5, device=DEVICE)[None], _inv_freq(8))
    qo, ko = apply_rope(q, k, cos, sin)
    qr, kr = rope_reference(q, k, cos, sin)
    assert_close(qo, qr, 1e-5, 1e-5, "q")
    assert_close(ko, kr, 1e-5, 1e-5, "k")
