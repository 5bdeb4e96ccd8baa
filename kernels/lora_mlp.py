"""LoRA-fused gated MLP: gate/up projections, SwiGLU/GeGLU, down projection, one autograd node.

    g = lora(x; Wg, Ag, Bg)    u = lora(x; Wu, Au, Bu)
    h = act(g) * u             out = lora(h; Wd, Ad, Bd)          (lora(): kernels/lora.py)

Saved for backward: x, g, u and three (N, r) intermediates. h = act(g) * u
is NOT saved; backward recomputes it in the same Triton pass that produces
the activation gradients (kernels/swiglu.py, want_h=True), and that pass
writes dg and du over g and u (we made them in forward and nothing else holds
them), so backward allocates only h and dx at full width. Backward:

    dh  = dout Wd + s_d (dout Bd) Ad          dBd = s_d dout^T (h Ad^T)
    dg, du, h = glu_backward(dh, g, u)        dAd = s_d (dout Bd)^T h
    dx  = dg Wg + du Wu + rank-r terms        (one buffer, accumulating GEMMs)

Stock PEFT on the same MLP keeps x, g, u, act(g), h and per-projection dx
buffers; see bench/bench_qlora.py for the measured difference.
"""
from __future__ import annotations

import torch

from .lora import Proj, _once, _scaled_mm, _to, group_weights, cast_adapter, compute_dtype, no_autocast, proj_backward, proj_forward
from .swiglu import glu_backward, glu_forward


class LoRAMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pg: Proj, pu: Proj, pd: Proj, act: str, Ag, Bg, Au, Bu, Ad, Bd):
        shape, cdt = x.shape, compute_dtype(x)
        with no_autocast(x):
            x2 = _to(x.reshape(-1, shape[-1]), cdt)
            Agc, Bgc, mg = cast_adapter(Ag, Bg, cdt)
            Auc, Buc, mu = cast_adapter(Au, Bu, cdt)
            Adc, Bdc, md = cast_adapter(Ad, Bd, cdt)
            wg, wu = group_weights((pg, pu), cdt) or (None, None)
            g, xag = proj_forward(x2, pg, Agc, Bgc, w=wg)
            u, xau = proj_forward(x2, pu, Auc, Buc, w=wu)
            h = glu_forward(g, u, act)
            out, had = proj_forward(h, pd, Adc, Bdc)
            del h
        ctx.save_for_backward(x2, g, u, xag, xau, had, Agc, Bgc, Auc, Buc, Adc, Bdc)
        ctx.projs, ctx.act, ctx.shape, ctx.in_dtype = (pg, pu, pd), act, shape, x.dtype
        ctx.metas = (mg, mu, md)
        return out.view(*shape[:-1], pd.out_features)

    @staticmethod
    def backward(ctx, dout):
        _once(ctx)
        x2, g, u, xag, xau, had, Ag, Bg, Au, Bu, Ad, Bd = ctx.saved_tensors
        pg, pu, pd = ctx.projs
        mg, mu, md = ctx.metas
        d2 = _to(dout.reshape(-1, dout.shape[-1]), x2.dtype)
        dh = torch.empty_like(g)
        # down projection: dh and the rank-r grads that only need dout (dAd needs h, below)
        dAd = dBd = doutB = None
        if Ad is not None:
            doutB = d2 @ Bd
            if md[2]:
                dBd = _to(_scaled_mm(d2.t(), had, pd.scale), md[3])
        torch.matmul(d2, pd.base_weight(d2.dtype), out=dh)
        if doutB is not None:
            dh.addmm_(doutB, Ad, alpha=pd.scale)
        # activation: recompute h; dg, du overwrite g, u
        want_h = Ad is not None and md[0]
        dg, du, h = glu_backward(dh, g, u, ctx.act, want_h=want_h, inplace=True)
        del dh
        if h is not None:
            dAd = _to(_scaled_mm(doutB.t(), h, pd.scale), md[1])
            del h
        dx = torch.empty_like(x2) if ctx.needs_input_grad[0] else None
        wg, wu = (group_weights((pg, pu), x2.dtype) if dx is not None else None) or (None, None)
        dAg, dBg = proj_backward(dg, x2, xag, pg, Ag, Bg, mg, dx, accumulate=False, w=wg)
        dAu, dBu = proj_backward(du, x2, xau, pu, Au, Bu, mu, dx, accumulate=True, w=wu)
        return ((None if dx is None else _to(dx.view(ctx.shape), ctx.in_dtype)), None, None, None, None,
                dAg, dBg, dAu, dBu, dAd, dBd)


def lora_mlp(x, pg: Proj, pu: Proj, pd: Proj, act: str = "silu",
             Ag=None, Bg=None, Au=None, Bu=None, Ad=None, Bd=None) -> torch.Tensor:
    return LoRAMLPFunction.apply(x, pg, pu, pd, act, Ag, Bg, Au, Bu, Ad, Bd)


def lora_mlp_reference(x, gate, up, down, act: str = "silu"):
    """Plain PyTorch. gate/up/down: (weight, bias, A, B, scale) tuples; A = None for no adapter."""
    from .lora import lora_linear_reference
    from .swiglu import glu_reference

    g = lora_linear_reference(x, *gate)
    u = lora_linear_reference(x, *up)
    return lora_linear_reference(glu_reference(g, u, act), *down)
