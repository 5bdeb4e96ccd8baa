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
def _glu_forward_kernel(H, G, U, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    a, _ = _act_and_grad(g, ACT)
    tl.store(H + offs, (a * u).to(H.dtype.element_ty), mask=mask)


@triton.jit
def _glu_backward_kernel(DG, DU, H, DH, G, U, n, ACT: tl.constexpr, WANT_H: tl.constexpr,
                         BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dh = tl.load(DH + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    a, da = _act_and_grad(g, ACT)
    if WANT_H:
        tl.store(H + offs, (a * u).to(H.dtype.element_ty), mask=mask)
    # DG/DU may alias G/U: every load above happens before these stores.
    tl.store(DG + offs, (dh * u * da).to(DG.dtype.element_ty), mask=mask)
    tl.store(DU + offs, (dh * a).to(DU.dtype.element_ty), mask=mask)


_BLOCK = 1024


def glu_forward(g: torch.Tensor, u: torch.Tensor, act: str = "silu") -> torch.Tensor:
    assert g.shape == u.shape, f"gate {tuple(g.shape)} and up {tuple(u.shape)} differ"
    g, u = g.contiguous(), u.contiguous()
    h = empty(g.shape, g.dtype, g.device)
    n = g.numel()
    if n:
        _glu_forward_kernel[(triton.cdiv(n, _BLOCK),)](h, g, u, n, ACT=ACTS[act], BLOCK=_BLOCK, num_warps=4)
    return h


def glu_backward(dh: torch.Tensor, g: torch.Tensor, u: torch.Tensor, act: str = "silu",
                 want_h: bool = False, inplace: bool = False):
    """(dg, du, h or None). inplace=True writes dg into g and du into u."""
    assert g.is_contiguous() and u.is_contiguous()
    dh = dh.contiguous()
    if inplace:
        dg, du = g, u
    else:
        dg, du = empty(g.shape, g.dtype, g.device), empty(u.shape, u.dtype, u.device)
    h = empty(g.shape, g.dtype, g.device) if want_h else dg  # dummy pointer when unused
    n = g.numel()
    if n:
        _glu_backward_kernel[(triton.cdiv(n, _BLOCK),)](
            dg, du, h, dh, g, u, n, ACT=ACTS[act], WANT_H=want_h, BLOCK=_BLOCK, num_warps=4)
    return dg, du, (h if want_h else None)


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
