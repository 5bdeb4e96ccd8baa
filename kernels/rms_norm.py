"""RMSNorm forward and backward in Triton, with Gemma's (1 + w) variant.

Forward, one program per row x (length n), in fp32:

    rstd = 1 / sqrt(mean(x^2) + eps)          (saved for backward, one float per row)
    xhat = x * rstd
    y    = (offset + w) * xhat

Two casting rules, matching transformers exactly:
  "llama" (Llama, Mistral, Qwen2/3): xhat is rounded to x's dtype first,
          then multiplied by w:            y = w * xhat.to(x.dtype)
  "gemma" (Gemma 2/3): everything in fp32: y = (xhat * (1 + w.float())).to(x.dtype)
          (see transformers PR #29402 for why Gemma differs).

Backward, with g = offset + w and xh the xhat that was multiplied (rounded
for "llama"):

    dw = sum_rows(dy * xh)
    dx = rstd * (dy*g - xhat * mean(dy*g * xhat))

dw is reduced in two steps: each program accumulates the rows it owns into a
private fp32 row of a (programs, n) buffer, then torch sums the buffer. That
avoids atomics and keeps the result deterministic.

Sources: Zhang & Sennrich 2019 (RMSNorm); the gradient is derived by hand
from the forward above.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .utils import calculate_settings, contiguous_2d, empty

CASTING = {"llama": 0, "gemma": 1}


@triton.jit
def _rms_norm_forward_kernel(
    Y, Y_row_stride, X, X_row_stride, W, RSTD, n_rows, n_cols, eps, offset,
    CASTING: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    """ROWS rows per program: 1 on the GPU, more under the interpreter (fewer Python-level programs)."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    rmask = rows < n_rows
    mask = rmask[:, None] & (cols < n_cols)[None, :]
    x_raw = tl.load(X + rows[:, None] * X_row_stride + cols[None, :], mask=mask, other=0.0)
    x = x_raw.to(tl.float32)
    w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    tl.store(RSTD + rows, rstd, mask=rmask)
    xhat = x * rstd[:, None]
    if CASTING == 0:
        xhat = xhat.to(x_raw.dtype).to(tl.float32)
    y = xhat * (w + offset)[None, :]
    tl.store(Y + rows[:, None] * Y_row_stride + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_backward_kernel(
    DX, DX_row_stride, DY, DY_row_stride, X, X_row_stride, W, RSTD, DW_PARTIAL,
    n_rows, n_cols, offset, rows_per_program,
    CASTING: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    cmask = cols < n_cols
    g = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32) + offset
    dw = tl.zeros([ROWS, BLOCK], dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    for i in range(0, rows_per_program, ROWS):
        rows = row_start + i + tl.arange(0, ROWS)
        rmask = (rows < n_rows) & (rows < row_start + rows_per_program)
        mask = rmask[:, None] & cmask[None, :]
        x_raw = tl.load(X + rows[:, None] * X_row_stride + cols[None, :], mask=mask, other=0.0)
        x = x_raw.to(tl.float32)
        dy = tl.load(DY + rows[:, None] * DY_row_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=rmask, other=0.0)
        xhat = x * rstd[:, None]
        if CASTING == 0:
            dw += dy * xhat.to(x_raw.dtype).to(tl.float32)
        else:
            dw += dy * xhat
        dyg = dy * g[None, :]
        dx = rstd[:, None] * (dyg - xhat * (tl.sum(dyg * xhat, axis=1) / n_cols)[:, None])
        tl.store(DX + rows[:, None] * DX_row_stride + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW_PARTIAL + pid * n_cols + cols, tl.sum(dw, axis=0), mask=cmask)


def _rows_per_tile(x: torch.Tensor) -> int:
    return 1 if x.is_cuda else 16


def _num_programs(n_rows: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, 4 * sms))
    return max(1, min(n_rows, 4))  # interpreter: few programs, long loops are cheaper


def rms_norm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float = 0.0,
                     casting: str = "llama") -> tuple[torch.Tensor, torch.Tensor]:
    """y, rstd for x of shape (..., n) and weight (n,)."""
    shape = x.shape
    n = shape[-1]
    assert weight.shape == (n,), f"weight {tuple(weight.shape)} does not match hidden size {n}"
    x2 = contiguous_2d(x)
    rows = x2.shape[0]
    out_dtype = x.dtype if casting == "gemma" else torch.promote_types(x.dtype, weight.dtype)
    # allocated in x's shape, not returned as a view: FSDP2 warns on a unit's output that is a view
    # (an in-place op on it would drop its pre-backward hook), and the decoder returns this norm's
    y = empty((*shape[:-1], n), out_dtype, x.device)
    y2 = y.view(rows, n)
    rstd = empty((rows,), torch.float32, x.device)
    block, warps = calculate_settings(n)
    if rows:
        tile = _rows_per_tile(x2)
        _rms_norm_forward_kernel[(triton.cdiv(rows, tile),)](
            y2, y2.stride(0), x2, x2.stride(0), weight, rstd, rows, n, eps, offset,
            CASTING=CASTING[casting], ROWS=tile, BLOCK=block, num_warps=warps,
        )
    return y, rstd


def rms_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                      offset: float = 0.0, casting: str = "llama",
                      weight_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    shape = x.shape
    n = shape[-1]
    x2 = contiguous_2d(x)
    dy2 = contiguous_2d(dy)
    rows = x2.shape[0]
    dx = empty((rows, n), x.dtype, x.device)
    programs = _num_programs(rows, x.device)
    rows_per_program = math.ceil(rows / programs) if rows else 0
    dw_partial = empty((programs, n), torch.float32, x.device)
    block, warps = calculate_settings(n)
    if rows:
        _rms_norm_backward_kernel[(programs,)](
            dx, dx.stride(0), dy2, dy2.stride(0), x2, x2.stride(0), weight, rstd, dw_partial,
            rows, n, offset, rows_per_program,
            CASTING=CASTING[casting], ROWS=_rows_per_tile(x2), BLOCK=block, num_warps=warps,
        )
        dw = dw_partial.sum(0).to(weight.dtype) if weight_grad else None
    else:
        dw = torch.zeros_like(weight) if weight_grad else None
    return dx.view(shape), dw


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, offset=0.0, casting="llama"):
        y, rstd = rms_norm_forward(x, weight, eps, offset, casting)
        ctx.save_for_backward(x, weight, rstd)
        ctx.offset, ctx.casting = offset, casting
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_backward(dy, x, weight, rstd, ctx.offset, ctx.casting,
                                   weight_grad=ctx.needs_input_grad[1])
        return dx, dw, None, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0,
             casting: str = "llama") -> torch.Tensor:
    return RMSNormFunction.apply(x, weight, eps, offset, casting)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, offset: float = 0.0,
                       casting: str = "llama") -> torch.Tensor:
    """Plain PyTorch, written the way transformers writes LlamaRMSNorm / Gemma2RMSNorm."""
    xf = x.float()
    xhat = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if casting == "gemma":
        return (xhat * (offset + weight.float())).to(x.dtype)
    w = weight if offset == 0.0 else weight + offset
    return w * xhat.to(x.dtype)


__all__ = ["rms_norm", "rms_norm_reference", "RMSNormFunction", "rms_norm_forward", "rms_norm_backward"]
