"""LoRA-fused Q, K, V projections of one input: three outputs, one input gradient.

    q = x Wq^T + s_q (x Aq^T) Bq^T      (and k, v alike; see kernels/lora.py)

Forward keeps x and three (N, r) intermediates. Backward writes
dx = dq Wq + dk Wk + dv Wv + the three rank-r terms into ONE buffer with
accumulating GEMMs (no per-projection dx tensors, no sum), dequantizing each
NF4 weight into the shared scratch buffer just before its GEMM. Without a
gradient for x (the first layer under frozen embeddings) the three big
input-gradient GEMMs are skipped.
"""
from __future__ import annotations

import torch

from .lora import Proj, _once, _to, group_weights, cast_adapter, compute_dtype, no_autocast, proj_backward, proj_forward


class LoRAQKVFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pq: Proj, pk: Proj, pv: Proj, Aq, Bq, Ak, Bk, Av, Bv):
        shape, cdt = x.shape, compute_dtype(x)
        with no_autocast(x):
            x2 = _to(x.reshape(-1, shape[-1]), cdt)
            adapters = [cast_adapter(A, B, cdt) for A, B in ((Aq, Bq), (Ak, Bk), (Av, Bv))]
            ws = group_weights((pq, pk, pv), cdt) or (None, None, None)
            outs, xas = [], []
            for p, (Ac, Bc, _), w in zip((pq, pk, pv), adapters, ws):
                y, xa = proj_forward(x2, p, Ac, Bc, w=w)
                outs.append(y)
                xas.append(xa)
        ctx.save_for_backward(x2, *xas, *[t for a in adapters for t in a[:2]])
        ctx.projs, ctx.shape, ctx.in_dtype = (pq, pk, pv), shape, x.dtype
        ctx.metas = [a[2] for a in adapters]
        lead = shape[:-1]
        return tuple(y.view(*lead, -1) for y in outs)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        _once(ctx)
        x2, xaq, xak, xav, Aq, Bq, Ak, Bk, Av, Bv = ctx.saved_tensors
        dx = torch.empty_like(x2) if ctx.needs_input_grad[0] else None
        grads = []
        first = True
        ws = (group_weights(ctx.projs, x2.dtype) if dx is not None else None) or (None, None, None)
        for dy, xa, p, Ac, Bc, meta, w in zip((dq, dk, dv), (xaq, xak, xav), ctx.projs, (Aq, Ak, Av), (Bq, Bk, Bv),
                                              ctx.metas, ws):
            if dy is None:  # an output that did not reach the loss
                grads += [None, None]
                continue
            dy2 = _to(dy.reshape(-1, dy.shape[-1]), x2.dtype)
            grads += list(proj_backward(dy2, x2, xa, p, Ac, Bc, meta, dx, accumulate=not first, w=w))
            first = False
        if dx is not None and first:
            dx.zero_()
        return ((None if dx is None else _to(dx.view(ctx.shape), ctx.in_dtype)), None, None, None, *grads)


def lora_qkv(x, pq, pk, pv, Aq=None, Bq=None, Ak=None, Bk=None, Av=None, Bv=None):
    return LoRAQKVFunction.apply(x, pq, pk, pv, Aq, Bq, Ak, Bk, Av, Bv)
