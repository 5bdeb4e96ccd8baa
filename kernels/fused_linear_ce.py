"""Chunked fused linear + cross-entropy: the LM head and its loss without full logits.

For hidden states h (N, H), head weight W (V, H) and labels y (N,):

    z_i    = softcap(h_i W^T + b)            softcap(z) = c * tanh(z / c), or identity
    loss_i = logsumexp(z_i) - z_i[y_i]       (0 where y_i == ignore_index)
    loss   = sum_i loss_i / D

D is `num_items_in_batch` when given (transformers passes the number of
trained tokens of the whole accumulated batch, so that the mean is right
under gradient accumulation) and otherwise the number of non-ignored labels
here. Gradient of one row, with p = softmax(z_i):

    dz_i = (p - onehot(y_i)) / D             dz/dlogit = 1 - tanh^2 under softcap
    dh_i = dz_i W            dW += dz_i^T h_i            db += dz_i

The logits are never held in full: rows are taken in chunks of `chunk_rows`
(default: what fits in `chunk_bytes`, KernelSettings.ce_chunk_bytes); each chunk's logits are made with one
GEMM in the input dtype (as the stock head does), a Triton kernel reduces
each row to its loss with an fp32 online log-sum-exp and overwrites the
logits with dz in place, and two more GEMMs turn dz into dh (and dW when W is
trainable, accumulated in fp32). All of it happens in forward; backward only
scales the stored dh by the incoming gradient. The extra memory is one chunk
of logits plus dh (N, H), instead of (N, V) logits in bf16 and fp32 and their
gradient.

Matches transformers' ForCausalLMLoss (shift, ignore_index = -100, mean or
sum / num_items_in_batch) up to fp32 summation order. A batch where every
label is ignored gives loss 0 and zero gradients (stock gives NaN).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .settings import KernelSettings
from .utils import compute_dtype, empty, no_autocast

CHUNK_BYTES = KernelSettings().ce_chunk_bytes  # the default logits of one chunk (256 MiB)


@triton.jit
def _ce_rows_kernel(
    Z, z_row_stride, LABELS, LOSS, CORRECT, INV_D, n_vocab, ignore_index, softcap,
    SOFTCAP: tl.constexpr, TRACK_CORRECT: tl.constexpr, BLOCK: tl.constexpr,
):
    """Row-wise: LOSS[row] = lse - z[label]; Z[row] <- dloss/dlogits (already / D);
    CORRECT[row] = 1 when the label's logit is the row's maximum (token accuracy, TRACK_CORRECT)."""
    row = tl.program_id(0).to(tl.int64)
    z_ptr = Z + row * z_row_stride
    label = tl.load(LABELS + row).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    if label == ignore_index:
        for start in range(0, n_vocab, BLOCK):
            offs = start + cols
            tl.store(z_ptr + offs, tl.zeros([BLOCK], dtype=tl.float32).to(Z.dtype.element_ty), mask=offs < n_vocab)
        tl.store(LOSS + row, 0.0)
        if TRACK_CORRECT:
            tl.store(CORRECT + row, 0.0)
    else:
        inv_d = tl.load(INV_D).to(tl.float32)
        # pass 1: online max and sum of exp, in fp32
        m = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, n_vocab, BLOCK):
            offs = start + cols
            mask = offs < n_vocab
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if SOFTCAP:
                z = softcap * (2.0 * tl.sigmoid(2.0 * z / softcap) - 1.0)
            z = tl.where(mask, z, float("-inf"))
            m_new = tl.maximum(m, z)
            # a lane that has only seen padding stays at -inf with acc 0
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            acc = acc * tl.exp(m - m_safe) + tl.exp(z - m_safe)
            m = m_new
        m_row = tl.max(m, axis=0)
        lse = m_row + tl.log(tl.sum(acc * tl.exp(m - m_row), axis=0))
        z_label = tl.load(z_ptr + label).to(tl.float32)
        if SOFTCAP:
            z_label = softcap * (2.0 * tl.sigmoid(2.0 * z_label / softcap) - 1.0)
        tl.store(LOSS + row, lse - z_label)
        if TRACK_CORRECT:
            # the same fp32 value the maximum was taken over, so equality is exact (ties count as right)
            tl.store(CORRECT + row, (z_label >= m_row).to(tl.float32))
        # pass 2: dz = (softmax - onehot) / D, written over the logits
        for start in range(0, n_vocab, BLOCK):
            offs = start + cols
            mask = offs < n_vocab
            raw = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if SOFTCAP:
                t = 2.0 * tl.sigmoid(2.0 * raw / softcap) - 1.0
                z = softcap * t
            else:
                z = raw
            dz = tl.exp(z - lse) - tl.where(offs == label, 1.0, 0.0)
            if SOFTCAP:
                dz = dz * (1.0 - t * t)
            tl.store(z_ptr + offs, (dz * inv_d).to(Z.dtype.element_ty), mask=mask)


def _chunk_rows(n_rows: int, n_vocab: int, elem: int, chunk_rows: int | None, chunk_bytes: int) -> int:
    if chunk_rows is None:
        chunk_rows = max(1, chunk_bytes // max(1, n_vocab * elem))
    return max(1, min(n_rows, chunk_rows))


def fused_linear_ce_forward(h, weight, labels, bias=None, ignore_index=-100, softcap=None,
                            num_items_in_batch=None, chunk_rows=None, need_dw=True, need_db=True,
                            cdt=None, chunk_bytes: int = CHUNK_BYTES, correct=None):
    """(loss, dh, dW or None, db or None) for h (N, H), weight (V, H), labels (N,).

    `correct`, when given, is an fp32 (N,) tensor that receives 1.0 for each row whose label is
    the argmax of its logits (0.0 elsewhere and for ignored rows): token accuracy without logits."""
    assert h.dim() == 2 and weight.dim() == 2 and h.shape[1] == weight.shape[1], \
        f"hidden {tuple(h.shape)} and head weight {tuple(weight.shape)} do not match"
    assert labels.shape == (h.shape[0],), f"labels {tuple(labels.shape)} vs {h.shape[0]} rows"
    n, _ = h.shape
    v = weight.shape[0]
    in_dtype = h.dtype
    h = h.to(cdt).contiguous() if cdt is not None else h.contiguous()
    labels = labels.contiguous()
    device = h.device
    if num_items_in_batch is None:
        denom = (labels != ignore_index).sum().to(torch.float32).clamp_min(1.0)
    else:
        denom = torch.as_tensor(num_items_in_batch, device=device).to(torch.float32)
    inv_d = (1.0 / denom).reshape(1).contiguous()

    loss_rows = empty((n,), torch.float32, device)
    dh = empty(h.shape, h.dtype, device)
    dw = torch.zeros(weight.shape, dtype=torch.float32, device=device) if need_dw else None
    db = torch.zeros((v,), dtype=torch.float32, device=device) if (bias is not None and need_db) else None
    w = weight if weight.dtype == h.dtype else weight.to(h.dtype)
    step = _chunk_rows(n, v, h.element_size(), chunk_rows, chunk_bytes)
    block = min(triton.next_power_of_2(v), 4096 if device.type == "cuda" else 1024)
    for start in range(0, n, step):
        end = min(n, start + step)
        hc = h[start:end]
        z = hc @ w.t()
        if bias is not None:
            z += bias.to(z.dtype)
        _ce_rows_kernel[(end - start,)](
            z, z.stride(0), labels[start:end], loss_rows[start:end],
            correct[start:end] if correct is not None else loss_rows[start:end], inv_d, v, ignore_index,
            float(softcap or 1.0), SOFTCAP=softcap is not None, TRACK_CORRECT=correct is not None, BLOCK=block,
            num_warps=8 if block >= 2048 else 4,
        )
        torch.matmul(z, w, out=dh[start:end])
        if dw is not None:
            dw += (z.t() @ hc).float()  # 16-bit GEMM, fp32 accumulation across chunks
        if db is not None:
            db += z.float().sum(0)
    loss = loss_rows.sum() * inv_d[0]
    return loss, dh.to(in_dtype), dw, db


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, labels, bias=None, ignore_index=-100, softcap=None, num_items_in_batch=None,
                chunk_rows=None, chunk_bytes=CHUNK_BYTES, correct=None):
        with no_autocast(h):  # GEMMs in autocast's dtype when it is on, like the stock head
            loss, dh, dw, db = fused_linear_ce_forward(
                h, weight, labels, bias, ignore_index, softcap, num_items_in_batch, chunk_rows,
                need_dw=weight.requires_grad, need_db=bias is not None and bias.requires_grad,
                cdt=compute_dtype(h), chunk_bytes=chunk_bytes, correct=correct)
        ctx.save_for_backward(dh, dw, db)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        return loss

    @staticmethod
    def backward(ctx, dloss):
        dh, dw, db = ctx.saved_tensors
        wdt, bdt = ctx.dtypes
        # dh was made in forward and is ours alone: scale it in place (exact when dloss is 1).
        dh = dh.mul_(dloss.to(dh.dtype))
        dw = None if dw is None else (dw * dloss).to(wdt)
        db = None if db is None else (db * dloss).to(bdt)
        return dh, dw, None, db, None, None, None, None, None, None


def fused_linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, bias=None,
                               ignore_index: int = -100, softcap: float | None = None,
                               num_items_in_batch=None, chunk_rows: int | None = None,
                               chunk_bytes: int = CHUNK_BYTES,
                               correct: torch.Tensor | None = None) -> torch.Tensor:
    """Mean token loss of the LM head on h (..., H) against labels (...), never forming all logits.
    Rows go in chunks of `chunk_rows`, or of as many rows as `chunk_bytes` of logits hold.

    `correct`: optional fp32 tensor with one element per label, filled with 1.0 where the label is
    the argmax (token accuracy, computed in the same pass; no gradient flows through it)."""
    hidden = h.shape[-1]
    return FusedLinearCrossEntropyFunction.apply(
        h.reshape(-1, hidden), weight, labels.reshape(-1), bias, ignore_index, softcap, num_items_in_batch,
        chunk_rows, chunk_bytes, correct)


def fused_linear_cross_entropy_reference(h, weight, labels, bias=None, ignore_index=-100, softcap=None,
                                         num_items_in_batch=None):
    """Plain PyTorch: full logits, then transformers' fixed_cross_entropy."""
    z = torch.nn.functional.linear(h.reshape(-1, h.shape[-1]), weight, bias).float()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = torch.nn.functional.cross_entropy(z, labels.reshape(-1), ignore_index=ignore_index, reduction=reduction)
    return loss / num_items_in_batch if num_items_in_batch is not None else loss


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """transformers' causal shift: position t is trained to predict labels[t + 1]."""
    return torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:].contiguous()
