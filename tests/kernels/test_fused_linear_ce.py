import pytest
import torch
from kernel_testutils import BF16, DEVICE, FP32, assert_close, gpu_param, leaf

from tunesmith.kernels.fused_linear_ce import (
    fused_linear_cross_entropy,
    fused_linear_cross_entropy_reference,
    shift_labels,
)


def _labels(n, v, ignored=0.25):
    y = torch.randint(0, v, (n,), device=DEVICE)
    y[torch.rand(n, device=DEVICE) < ignored] = -100
    return y


@pytest.mark.parametrize("n,h,v,chunk", [(9, 16, 37, 4), (16, 32, 100, None), (5, 24, 1000, 2),
                                         gpu_param(4096, 2048, 128256, None)])
@pytest.mark.parametrize("dtype,atol,rtol", [FP32, (torch.bfloat16, 3e-2, 3e-2)])
@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_ce_matches_reference(n, h, v, chunk, dtype, atol, rtol, softcap, bias):
    x = torch.randn(n, h, device=DEVICE, dtype=dtype)
    w = (torch.randn(v, h, device=DEVICE) / h**0.5).to(dtype)
    b = (torch.randn(v, device=DEVICE) * 0.1).to(dtype) if bias else None
    y = _labels(n, v)
    x1, w1 = leaf(x), leaf(w)
    b1 = leaf(b) if bias else None
    loss = fused_linear_cross_entropy(x1, w1, y, b1, softcap=softcap, chunk_rows=chunk)
    (loss * 1.5).backward()
    x2, w2 = leaf(x.float()), leaf(w.float())
    b2 = leaf(b.float()) if bias else None
    ref = fused_linear_cross_entropy_reference(x2, w2, y, b2, softcap=softcap)
    (ref * 1.5).backward()
    assert loss.dtype == torch.float32
    assert_close(loss, ref, atol, rtol, "loss")
    assert_close(x1.grad, x2.grad, atol, rtol, "dh")
    assert_close(w1.grad, w2.grad, atol, rtol, "dW")
    if bias:
        assert_close(b1.grad, b2.grad, atol, rtol, "db")


def test_grad_accumulation_mean_is_over_all_micro_batches():
    """Two micro-batches with num_items_in_batch = total trained tokens == one big batch."""
    v, h = 50, 16
    w = torch.randn(v, h, device=DEVICE) / 4
    xs = [torch.randn(2, 6, h, device=DEVICE) for _ in range(2)]
    ys = [shift_labels(_labels(12, v, 0.4).view(2, 6)) for _ in range(2)]
    total = sum(int((y != -100).sum()) for y in ys)
    w1 = leaf(w)
    acc = sum(fused_linear_cross_entropy(x, w1, y, num_items_in_batch=torch.tensor(total)) for x, y in zip(xs, ys))
    acc.backward()
    w2 = leaf(w)
    big = fused_linear_cross_entropy_reference(torch.cat(xs), w2, torch.cat(ys))
    big.backward()
    assert_close(acc, big, 1e-5, 1e-5, "loss")
    assert_close(w1.grad, w2.grad, 1e-5, 1e-5, "dW")


def test_frozen_head_and_all_ignored():
    x = leaf(torch.randn(4, 8, device=DEVICE))
    w = torch.randn(11, 8, device=DEVICE)  # frozen, as under LoRA
    y = torch.full((4,), -100, device=DEVICE)
    loss = fused_linear_cross_entropy(x, w, y)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(x.grad == 0)


def test_large_logits_are_stable():
    x = torch.randn(3, 8, device=DEVICE) * 100
    w = torch.randn(20, 8, device=DEVICE) * 10
    y = torch.tensor([1, 5, 19], device=DEVICE)
    assert_close(fused_linear_cross_entropy(x, w, y), fused_linear_cross_entropy_reference(x, w, y), 1e-3, 1e-5,
                 "loss")


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_correct_marks_rows_whose_label_is_the_argmax(softcap):
    """Token accuracy from the same pass as the loss: 1 where the label is the argmax, 0 elsewhere."""
    n, h, v = 12, 16, 40
    x, w = torch.randn(n, h, device=DEVICE), torch.randn(v, h, device=DEVICE) / 4
    y = _labels(n, v, 0.25)
    top = (x @ w.t()).argmax(-1)
    y[:4] = top[:4]  # some rows right for sure
    y[4] = -100
    correct = torch.full((n,), float("nan"), device=DEVICE)
    fused_linear_cross_entropy(x, w, y, softcap=softcap, chunk_rows=5, correct=correct)
    want = ((top == y) & (y != -100)).float()
    assert torch.equal(correct, want)
