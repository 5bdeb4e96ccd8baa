"""Gated MLP activation, SwiGLU and GeGLU, forward and backward in Triton.

    h = act(g) * u        g = gate_proj(x), u = up_proj(x)

act = "silu" (SwiGLU: Llama, Mistral, Qwen2/3) or "gelu_tanh" (GeGLU with
the tanh approximation: Gemma 2/3, transformers' gelu_pytorch_tanh).

Gradients, elementwise, computed in fp32:

    silu(g)  = g * s,  s = sigmoid(g)            silu'(g) = s * (1 + g * (1 - s))
    gelu(g)  = 0.5 g (1 + t),  t = tanh(c (g + 0.044715 g^3)),  c = sqrt(2/pi)
    gelu'(g) = 0.5 (1 + t) + 0.5 g (1 - t^2) c (1 + 3 * 0.044715 g^2)
    dg = dh * u * act'(g)         du = dh * act(g)

Backward recomputes act(g) from g instead of saving h (saves one
(tokens, intermediate) tensor per layer). It can also hand back h itself
(`want_h`), which the LoRA-fused MLP needs for the down projection's weight
gradients, and can write dg/du over g/u (`inplace`) when the caller owns
those buffers: then backward allocates nothing.

tanh is written as 2*sigmoid(2z) - 1: triton 3.x has no portable tl.tanh,
and this form is exact to fp32 rounding for all z (no overflow: sigmoid
saturates).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import empty

ACTS = {"silu": 0, "gelu_tanh": 1}
_SQRT_2_OVER_PI = 0.7978845608028654


@triton.jit
def _act_and_grad(g, ACT: tl.constexpr):
    """(act(g), act'(g)) in fp32."""
    if ACT == 0:
        s = tl.sigmoid(g)
        a = g * s
        da = s * (1.0 + g * (1.0 - s))
    else:
        c: tl.constexpr = 0.7978845608028654
        z = c * (g + 0.044715 * g * g * g)
        t = 2.0 * tl.sigmoid(2.0 * z) - 1.0
        a = 0.5 * g * (1.0 + t)
        da = 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * g * g)
    return a, da


@triton.jit
def _glu_forward_kernel(H, G, U, n_cols, sh, sg, su, ACT: tl.constexpr, BLOCK: tl.constexpr):
    """Program (row, column block); each tensor has its own row stride (views into wider buffers)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(G + row * sg + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * su + cols, mask=mask, other=0.0).to(tl.float32)
    a, _ = _act_and_grad(g, ACT)
    tl.store(H + row * sh + cols, (a * u).to(H.dtype.element_ty), mask=mask)


@triton.jit
def _glu_backward_kernel(DG, DU, H, DH, G, U, n_cols, sdg, sdu, sh, sdh, sg, su,
                         ACT: tl.constexpr, WANT_H: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    dh = tl.load(DH + row * sdh + cols, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + row * sg + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + row * su + cols, mask=mask, other=0.0).to(tl.float32)
    a, da = _act_and_grad(g, ACT)
    if WANT_H:
        tl.store(H + row * sh + cols, (a * u).to(H.dtype.element_ty), mask=mask)
    # DG/DU may alias G/U and H may alias DH: every load above happens before these stores.
    tl.store(DG + row * sdg + cols, (dh * u * da).to(DG.dtype.element_ty), mask=mask)
    tl.store(DU + row * sdu + cols, (dh * a).to(DU.dtype.element_ty), mask=mask)


_BLOCK = 1024


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t as (rows, cols) with unit column stride, without copying when it already is one."""
    t2 = t if t.dim() == 2 else t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _grid(rows: int, cols: int):
    return (rows, triton.cdiv(cols, _BLOCK))


def glu_forward(g: torch.Tensor, u: torch.Tensor, act: str = "silu", out: torch.Tensor | None = None) -> torch.Tensor:
    """act(g) * u. g, u (and out) may be row-strided 2-D views of wider buffers; out, when given,
    receives h (its shape is g's) and is returned."""
    assert g.shape == u.shape, f"gate {tuple(g.shape)} and up {tuple(u.shape)} differ"
    g2, u2 = _rows(g), _rows(u)
    h = empty(g.shape, g.dtype, g.device) if out is None else out
    h2 = h if h.dim() == 2 else h.view(-1, h.shape[-1])
    assert h2.stride(-1) == 1 and h2.shape == g2.shape
    rows, cols = g2.shape
    if rows and cols:
        _glu_forward_kernel[_grid(rows, cols)](h2, g2, u2, cols, h2.stride(0), g2.stride(0), u2.stride(0),
                                               ACT=ACTS[act], BLOCK=_BLOCK, num_warps=4)
    return h


def glu_backward(dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor, act: str = "silu",
                 want_h: bool = False, inplace: bool = False, h_out: torch.Tensor | None = None):
    """(dg, du, h or None). inplace=True writes dg into g and du into u (which may be row-strided
    2-D views); otherwise g and u must be contiguous. h_out (with want_h): where h goes, dh itself
    allowed (each element of dh is read before h is written over it), saving one activation-sized
    buffer."""
    if not inplace:
        assert g.is_contiguous() and u.is_contiguous()
    g2, u2, dh2 = _rows(g), _rows(u), _rows(dh)
    if inplace:
        assert g2.data_ptr() == g.data_ptr() or g.dim() != 2, "inplace needs g, u with unit column stride"
        dg, du = g, u
        dg2, du2 = g2, u2
    else:
        dg, du = empty(g.shape, g.dtype, g.device), empty(u.shape, u.dtype, u.device)
        dg2, du2 = dg.view(g2.shape), du.view(u2.shape)
    if want_h and h_out is not None:
        h = _rows(h_out)
        assert h.shape == g2.shape and h.data_ptr() == h_out.data_ptr(), "h_out must be (rows, cols) with unit column stride"
    else:
        h = empty(g2.shape, g.dtype, g.device) if want_h else None
    h2 = h if want_h else dg2  # dummy pointer when unused
    rows, cols = g2.shape
    if rows and cols:
        _glu_backward_kernel[_grid(rows, cols)](
            dg2, du2, h2, dh2, g2, u2, cols, dg2.stride(0), du2.stride(0), h2.stride(0), dh2.stride(0),
            g2.stride(0), u2.stride(0), ACT=ACTS[act], WANT_H=want_h, BLOCK=_BLOCK, num_warps=4)
    if want_h and g.dim() != 2:
        h = h.view(g.shape)
    return dg, du, h


class GLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u, act="silu"):
        g, u = g.contiguous(), u.contiguous()
        ctx.save_for_backward(g, u)
        ctx.act = act
        return glu_forward(g, u, act)

    @staticmethod
    def backward(ctx, dh):
        g, u = ctx.saved_tensors
        dg, du, _ = glu_backward(dh, g, u, ctx.act)
        return dg, du, None


def swiglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return GLUFunction.apply(g, u, "silu")


def geglu(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return GLUFunction.apply(g, u, "gelu_tanh")


def glu(g: torch.Tensor, u: torch.Tensor, act: str = "silu") -> torch.Tensor:
    return GLUFunction.apply(g, u, act)


def glu_reference(g: torch.Tensor, u: torch.Tensor, act: str = "silu") -> torch.Tensor:
    """Plain PyTorch: transformers' ACT2FN["silu"] / ACT2FN["gelu_pytorch_tanh"]."""
    if act == "silu":
        return torch.nn.functional.silu(g) * u
    return torch.nn.functional.gelu(g, approximate="tanh") * u


swiglu_reference = glu_reference
