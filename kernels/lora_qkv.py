"""LoRA-fused Q, K, V projections of one input: one GEMM forward, one GEMM for dx.

    [q | k | v] = [x | xa_q | xa_k | xa_v] @ [Wq | Bq 0 0; Wk | 0 Bk 0; Wv | 0 0 Bv]^T
    dx = [dq | dk | dv | s dq Bq | s dk Bk | s dv Bv] @ [Wq; Wk; Wv; Aq; Ak; Av]

(xa = s x A^T; see kernels/lora.py for the wide-buffer scheme.) The three NF4
weights dequantize with one launch into one scratch buffer, already laid out
with the adapter columns (forward) or rows (backward) beside them, so the LoRA
terms cost no pass over q, k, v or dx of their own. Forward keeps x and its
(N, rq + rk + rv) adapter columns; q, k, v are column views of one output
buffer. Without a gradient for x (the first layer under frozen embeddings)
the input-gradient GEMM is skipped.
"""
from __future__ import annotations

import torch

from .lora import Proj, WeightCache, _once, _scaled_mm, _to, add_bias, cached_weights, cast_adapters, \
    compute_dtype, fill_adapter_cols, no_autocast, rank, stacked_a, weights_with_a_rows, wide_input, wide_weights
from .utils import empty


class LoRAQKVFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pq: Proj, pk: Proj, pv: Proj, Aq, Bq, Ak, Bk, Av, Bv, cache: WeightCache | None):
        shape, cdt = x.shape, compute_dtype(x)
        H = shape[-1]
        projs = (pq, pk, pv)
        with no_autocast(x):
            x2 = _to(x.reshape(-1, H), cdt)
            adapters = cast_adapters(((Aq, Bq), (Ak, Bk), (Av, Bv)), cdt)
            R = sum(rank(a[0]) for a in adapters)
            X = wide_input(x2, projs, [a[0] for a in adapters])
            w = cached_weights(cache, projs, cdt, extra_cols=R)
            cached = w is not None
            if not cached:
                w = wide_weights(projs, cdt, extra_cols=R)
            fill_adapter_cols(w, H, projs, [a[1] for a in adapters], zero=not cached)
            Y = torch.mm(X, w.t())
            add_bias(Y, projs)
        ctx.save_for_backward(X, *[t for a in adapters for t in a[:2]])
        ctx.projs, ctx.shape, ctx.in_dtype, ctx.cached, ctx.cache = projs, shape, x.dtype, cached, cache
        ctx.metas = [a[2] for a in adapters]
        lead = shape[:-1]
        outs, c = [], 0
        for p in projs:
            outs.append(Y[:, c:c + p.out_features].view(*lead, p.out_features))
            c += p.out_features
        return tuple(outs)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        _once(ctx)
        X, Aq, Bq, Ak, Bk, Av, Bv = ctx.saved_tensors
        projs = ctx.projs
        H = ctx.shape[-1]
        x2 = X[:, :H]
        N, cdt, dev = x2.shape[0], X.dtype, X.device
        O = sum(p.out_features for p in projs)
        As, Bs = (Aq, Ak, Av), (Bq, Bk, Bv)
        R = sum(rank(A) for A in As)
        dY = empty((N, O + R), cdt, dev)
        grads = []
        c, cr, xc = 0, O, H
        for dy, p, A, B, meta in zip((dq, dk, dv), projs, As, Bs, ctx.metas):
            col = dY[:, c:c + p.out_features]
            if dy is None:  # an output that did not reach the loss
                col.zero_()
            else:
                col.copy_(dy.reshape(N, p.out_features))
            c += p.out_features
            if A is None:
                grads += [None, None]
                continue
            r = A.shape[0]
            _scaled_mm(col, B, p.scale, out=dY[:, cr:cr + r])
            grads.append(None)  # dA: all three from one GEMM below
            grads.append(col.t() @ X[:, xc:xc + r] if meta[2] else None)
            cr, xc = cr + r, xc + r
        A_all = stacked_a(As)
        if R and any(m is not None and m[0] for m in ctx.metas):
            dA_all = dY[:, O:].t() @ x2  # (R, H): s dy B stacked, against x
            r0 = 0
            for k, (A, m) in enumerate(zip(As, ctx.metas)):
                if A is not None:
                    grads[2 * k] = dA_all[r0:r0 + A.shape[0]] if m[0] else None
                    r0 += A.shape[0]
        dx = None
        if ctx.needs_input_grad[0] and ctx.cached:  # the cached forward layout: base GEMM, then one rank-R term
            w = cached_weights(ctx.cache, projs, cdt, extra_cols=R)
            dx = torch.mm(dY[:, :O], w[:, :H])
            if R:
                dx.addmm_(dY[:, O:], A_all)
            dx = _to(dx.view(ctx.shape), ctx.in_dtype)
        elif ctx.needs_input_grad[0]:
            dx = _to(torch.mm(dY, weights_with_a_rows(projs, cdt, A_all)).view(ctx.shape), ctx.in_dtype)
        return (dx, None, None, None, *grads, None)


def lora_qkv(x, pq, pk, pv, Aq=None, Bq=None, Ak=None, Bk=None, Av=None, Bv=None, cache: WeightCache | None = None):
    """cache: the model's kept NF4 weights (speed mode), else None: dequantize per GEMM."""
    return LoRAQKVFunction.apply(x, pq, pk, pv, Aq, Bq, Ak, Bk, Av, Bv, cache)
