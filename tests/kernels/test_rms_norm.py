import pytest
import torch
from kernel_testutils import BF16, DEVICE, FP16, FP32, assert_close, assert_close_norm, gpu_param, leaf

from tunesmith.kernels.rms_norm import rms_norm, rms_norm_reference


@pytest.mark.parametrize("shape", [(3, 64), (2, 5, 96), (7, 33), gpu_param((4, 2048, 4096))])
@pytest.mark.parametrize("dtype,atol,rtol", [FP32, BF16, gpu_param(*FP16)])
@pytest.mark.parametrize("offset,casting", [(0.0, "llama"), (1.0, "gemma")], ids=["llama", "gemma"])
def test_rms_norm_matches_reference(shape, dtype, atol, rtol, offset, casting):
    n = shape[-1]
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    w = (torch.randn(n, device=DEVICE) * 0.1 + (0.0 if offset else 1.0)).to(dtype)
    dy = torch.randn(shape, device=DEVICE, dtype=dtype)

    x1, w1 = leaf(x), leaf(w)
    y1 = rms_norm(x1, w1, 1e-6, offset, casting)
    y1.backward(dy)
    # fp32 reference for the gradients; the forward is also compared in dtype.
    x2, w2 = leaf(x.float()), leaf(w.float())
    y2 = rms_norm_reference(x2, w2, 1e-6, offset, casting)
    y2.backward(dy.float())

    assert y1.dtype == rms_norm_reference(x, w, 1e-6, offset, casting).dtype
    assert_close(y1, y2, atol, rtol, "y")
    assert_close(x1.grad, x2.grad, atol, rtol, "dx")
    # dw sums over all rows: its error grows with the row count; over thousands of 16-bit rows
    # (and x-hat rounded to 16 bits by the llama rule) compare by norm.
    if x.numel() // n > 1024 and dtype != torch.float32:
        assert_close_norm(w1.grad, w2.grad, 1e-2, "dw")
    else:
        assert_close(w1.grad, w2.grad, atol * 4, rtol * 4, "dw")


def test_rms_norm_bf16_forward_matches_transformers_rounding():
    """In bf16 the forward must round like transformers (cast, then multiply)."""
    x = torch.randn(4, 48, device=DEVICE, dtype=torch.bfloat16)
    w = torch.randn(48, device=DEVICE, dtype=torch.bfloat16)
    y = rms_norm(x, w, 1e-5)
    ref = rms_norm_reference(x, w, 1e-5)
    assert (y.float() - ref.float()).abs().max() <= ref.float().abs().max() * 2**-7


def test_rms_norm_non_contiguous_input():
    x = torch.randn(6, 40, device=DEVICE)[:, :32]
    w = torch.randn(32, device=DEVICE)
    assert_close(rms_norm(x, w), rms_norm_reference(x, w), 1e-5, 1e-5, "y")
