"""Rotary position embedding on Q and K in one launch, forward and backward.

transformers' rotate-half form, per head vector x = [x1 | x2] of size d:

    out1 = x1 * cos1 - x2 * sin1
    out2 = x2 * cos2 + x1 * sin2          (cos = [cos1 | cos2], sin likewise)

The backward is the transpose of that 2x2 rotation:

    dx1 =  dout1 * cos1 + dout2 * sin2
    dx2 = -dout1 * sin1 + dout2 * cos2

cos/sin are the (batch or 1, seq, d) tensors the model's rotary embedding
makes from position_ids, so any rope type (default, llama3 frequency
scaling, linear, yarn attention scaling) and packed sequences (position ids
restarting inside a row) come for free: each token reads its own cos/sin row.

One program per (batch, token) rotates all query and key heads of that token
(a tile whose rows are (token, head) pairs), so Q and K share one launch and
each token's cos/sin row is read from cache for every head. q and k come
in as the (batch, heads, seq, d) views transformers makes with
`.view(...).transpose(1, 2)`; any strides work as long as d is dense. The
outputs are written (batch, seq, heads, d) in memory and returned transposed,
the same layout the inputs had, so attention kernels see no extra copy.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import empty, next_power_of_2


@triton.jit
def _rope_part(OUT, IN, COS, SIN, pid, n_tokens, seq_len, n_heads, half,
               s_b, s_h, s_s, o_b, o_h, o_s, c_sb, c_ss,
               BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rotate all heads of BLOCK_T tokens; the rows of the tile are (token, head) pairs."""
    r = tl.arange(0, BLOCK_T * BLOCK_H)
    h = r % BLOCK_H
    tok = pid * BLOCK_T + r // BLOCK_H
    b = tok // seq_len
    s = tok % seq_len
    d = tl.arange(0, BLOCK_D)
    mask = ((h < n_heads) & (tok < n_tokens))[:, None] & (d < half)[None, :]
    c_off = (b * c_sb + s * c_ss)[:, None] + d[None, :]
    cos1 = tl.load(COS + c_off, mask=mask, other=0.0).to(tl.float32)
    cos2 = tl.load(COS + c_off + half, mask=mask, other=0.0).to(tl.float32)
    sin1 = tl.load(SIN + c_off, mask=mask, other=0.0).to(tl.float32)
    sin2 = tl.load(SIN + c_off + half, mask=mask, other=0.0).to(tl.float32)
    if BACKWARD:  # the transpose of [[cos1, -sin1], [sin2, cos2]]
        sin1, sin2 = -sin2, -sin1
    src = IN + (b * s_b + s * s_s + h * s_h)[:, None] + d[None, :]
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    dst = OUT + (b * o_b + s * o_s + h * o_h)[:, None] + d[None, :]
    tl.store(dst, (x1 * cos1 - x2 * sin1).to(OUT.dtype.element_ty), mask=mask)
    tl.store(dst + half, (x2 * cos2 + x1 * sin2).to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _rope_qk_kernel(
    QO, KO, Q, K, COS, SIN,
    n_tokens, seq_len, n_qh, n_kh, half,
    q_sb, q_sh, q_ss, k_sb, k_sh, k_ss,
    qo_sb, qo_sh, qo_ss, ko_sb, ko_sh, ko_ss,
    c_sb, c_ss,
    BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_QH: tl.constexpr, BLOCK_KH: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program per BLOCK_T tokens: 1 on the GPU; more under the interpreter, where
    each program costs milliseconds of Python."""
    pid = tl.program_id(0).to(tl.int64)
    _rope_part(QO, Q, COS, SIN, pid, n_tokens, seq_len, n_qh, half, q_sb, q_sh, q_ss, qo_sb, qo_sh, qo_ss,
               c_sb, c_ss, BACKWARD, BLOCK_T, BLOCK_QH, BLOCK_D)
    _rope_part(KO, K, COS, SIN, pid, n_tokens, seq_len, n_kh, half, k_sb, k_sh, k_ss, ko_sb, ko_sh, ko_ss,
               c_sb, c_ss, BACKWARD, BLOCK_T, BLOCK_KH, BLOCK_D)


def _rope_launch(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool):
    assert q.dim() == 4 and k.dim() == 4, "q and k must be (batch, heads, seq, head_dim)"
    b, n_qh, s, d = q.shape
    _, n_kh, _, _ = k.shape
    assert k.shape[0] == b and k.shape[2] == s and k.shape[3] == d and d % 2 == 0
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    if cos.dim() == 2:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    assert cos.shape[-2:] == (s, d) and cos.shape[0] in (1, b), f"cos {tuple(cos.shape)} vs q {tuple(q.shape)}"
    cos, sin = cos.contiguous(), sin.contiguous()
    qo = empty((b, s, n_qh, d), q.dtype, q.device).transpose(1, 2)
    ko = empty((b, s, n_kh, d), k.dtype, k.device).transpose(1, 2)
    c_sb = 0 if cos.shape[0] == 1 else cos.stride(0)
    half = d // 2
    n_tokens = b * s
    block_t = 1 if q.is_cuda else 16
    if n_tokens:
        _rope_qk_kernel[(triton.cdiv(n_tokens, block_t),)](
            qo, ko, q, k, cos, sin, n_tokens, s, n_qh, n_kh, half,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            qo.stride(0), qo.stride(1), qo.stride(2), ko.stride(0), ko.stride(1), ko.stride(2),
            c_sb, cos.stride(1),
            BACKWARD=backward, BLOCK_T=block_t, BLOCK_QH=next_power_of_2(n_qh), BLOCK_KH=next_power_of_2(n_kh),
            BLOCK_D=next_power_of_2(half), num_warps=4 if d * n_qh <= 4096 else 8,
        )
    return qo, ko


def rope_forward(q, k, cos, sin):
    return _rope_launch(q, k, cos, sin, backward=False)


def rope_backward(dq, dk, cos, sin):
    return _rope_launch(dq, dk, cos, sin, backward=True)


class RoPEFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        qo, ko = rope_forward(q, k, cos, sin)
        ctx.save_for_backward(cos, sin)
        return qo, ko

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        dq_in, dk_in = rope_backward(dq, dk, cos, sin)
        return dq_in, dk_in, None, None


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               unsqueeze_dim: int = 1):
    """Drop-in for transformers' apply_rotary_pos_emb(q, k, cos, sin) with (b, h, s, d) q/k."""
    assert unsqueeze_dim == 1, "only the (batch, heads, seq, head_dim) layout is supported"
    return RoPEFunction.apply(q, k, cos, sin)


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_reference(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Plain PyTorch, as transformers' apply_rotary_pos_emb."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def rope_cos_sin_reference(position_ids: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float = 1.0,
                           dtype: torch.dtype = torch.float32):
    """cos, sin of shape (batch, seq, d) from (batch, seq) position ids, as the rotary embeddings do."""
    freqs = position_ids[..., None].float() * inv_freq.float()
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * attention_scaling).to(dtype), (emb.sin() * attention_scaling).to(dtype)
