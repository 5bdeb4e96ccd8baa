"""LoRA-fused gated MLP: gate/up projections, SwiGLU/GeGLU, down projection, one autograd node.

    g = lora(x; Wg, Ag, Bg)    u = lora(x; Wu, Au, Bu)
    h = act(g) * u             out = lora(h; Wd, Ad, Bd)          (lora(): kernels/lora.py)

The rank-r terms ride inside the base GEMMs through wide buffers (kernels/lora.py):

    forward   X  = [x | xa_g | xa_u]                 (N, H + rg + ru), xa = s x A^T
              GU = X @ [Wg | Bg 0; Wu | 0 Bu]^T      g, u = the first 2I columns, ONE GEMM
              Hd = [h | s h Ad^T];  out = Hd @ [Wd | Bd]^T
    backward  dh = [dout | s dout Bd] @ [Wd; Ad]
              dg, du, h = glu_backward(dh, g, u)     (dg, du written over g, u inside GU)
              GU's last rg + ru columns <- s dg Bg, s du Bu
              dx = GU @ [Wg; Wu; Ag; Au]             ONE GEMM, K = 2I + rg + ru

Saved for backward: X (x and its xa columns), GU and the small A/B casts. h is not
saved: backward recomputes it in the Triton pass that produces the activation
gradients (kernels/swiglu.py), and that pass writes dg and du over g and u.
Without `group_nf4` (memory mode) gate and up run as two GEMMs over the same X and
backward accumulates dx in three GEMMs, so only one weight is dequantized at a time.
With the weight cache (speed mode, kernels/lora.py WeightCache) the kept weights
are in the forward layout, so backward reads their first H columns and adds the
rank-r term with one extra GEMM; the down weight is kept in backward's layout.

Inside a checkpoint's recompute (kernels/checkpoint.py) an MLP whose output goes
straight into the residual add (`skip_tail`) computes only g and u: backward
needs nothing else, so the activation and the down projection are not run twice.
"""
from __future__ import annotations

import torch

from .lora import Proj, WeightCache, _once, _scaled_mm, _to, add_bias, cached_weights, cast_adapters, \
    compute_dtype, fill_adapter_cols, lora_linear_reference, no_autocast, rank, stacked_a, weights_with_a_rows, \
    wide_input, wide_weights
from .recompute import recomputing
from .swiglu import glu_backward, glu_forward, glu_reference
from .utils import empty


class LoRAMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pg: Proj, pu: Proj, pd: Proj, act: str, skip_tail: bool, Ag, Bg, Au, Bu, Ad, Bd,
                group_nf4: bool, cache: WeightCache | None):
        shape, cdt = x.shape, compute_dtype(x)
        H, I = shape[-1], pg.out_features
        with no_autocast(x):
            x2 = _to(x.reshape(-1, H), cdt)
            N, dev = x2.shape[0], x2.device
            (Agc, Bgc, mg), (Auc, Buc, mu), (Adc, Bdc, md) = cast_adapters(((Ag, Bg), (Au, Bu), (Ad, Bd)), cdt)
            rg, ru, rd = rank(Agc), rank(Auc), rank(Adc)
            R = rg + ru
            X = wide_input(x2, (pg, pu), (Agc, Auc))
            GU = empty((N, 2 * I + R), cdt, dev)  # the last R columns are backward's s dy B
            grouped = group_nf4
            w = cached_weights(cache, (pg, pu), cdt, extra_cols=R) if grouped else None
            cached = w is not None
            if grouped:
                if not cached:
                    w = wide_weights((pg, pu), cdt, extra_cols=R)
                fill_adapter_cols(w, H, (pg, pu), (Bgc, Buc), zero=not cached)
                torch.mm(X, w.t(), out=GU[:, :2 * I])
            else:
                for k, (p, Bc, c) in enumerate(((pg, Bgc, H), (pu, Buc, H + rg))):
                    w = wide_weights((p,), cdt, extra_cols=R)
                    if R:  # this projection's B at its own xa columns, zeros at the other's
                        w[:, H:].zero_()
                        if Bc is not None:
                            w[:, c:c + Bc.shape[1]].copy_(Bc)
                    torch.mm(X, w.t(), out=GU[:, k * I:(k + 1) * I])
            add_bias(GU[:, :2 * I], (pg, pu))
            g, u = GU[:, :I], GU[:, I:2 * I]
            xad = None
            if skip_tail:
                # recompute inside a checkpoint: the output is never read (it only feeds a residual
                # add whose backward needs no values), backward recomputes h itself
                out = torch.empty((N, pd.out_features), dtype=cdt, device=dev)
            elif (w := cached_weights(cache, (pd,), cdt, extra_rows=rd)) is not None:
                # the cached down weight is in backward's [Wd; Ad] layout: forward adds its rank-r term
                h = glu_forward(g, u, act)
                out = torch.mm(h, w[:pd.out_features].t())
                if rd:
                    xad = _scaled_mm(h, Adc.t(), pd.scale)
                    out.addmm_(xad, Bdc.t())
                add_bias(out, (pd,))
                del h
            else:
                Hd = empty((N, I + rd), cdt, dev)
                h = glu_forward(g, u, act, out=Hd[:, :I])
                if rd:
                    xad = _scaled_mm(h, Adc.t(), pd.scale)
                    Hd[:, I:].copy_(xad)
                w = wide_weights((pd,), cdt, extra_cols=rd)
                if rd:
                    w[:, I:].copy_(Bdc)
                out = torch.mm(Hd, w.t())
                add_bias(out, (pd,))
                del Hd, h
        ctx.save_for_backward(X, GU, xad, Agc, Bgc, Auc, Buc, Adc, Bdc)
        ctx.projs, ctx.act, ctx.shape, ctx.in_dtype = (pg, pu, pd), act, shape, x.dtype
        ctx.metas, ctx.grouped, ctx.cached, ctx.cache = (mg, mu, md), grouped, cached, cache
        return out.view(*shape[:-1], pd.out_features)

    @staticmethod
    def backward(ctx, dout):
        _once(ctx)
        X, GU, xad, Ag, Bg, Au, Bu, Ad, Bd = ctx.saved_tensors
        pg, pu, pd = ctx.projs
        mg, mu, md = ctx.metas
        H, I = ctx.shape[-1], pg.out_features
        Hout = pd.out_features
        cdt, dev = GU.dtype, GU.device
        x2 = X[:, :H]
        N = x2.shape[0]
        rg, ru, rd = rank(Ag), rank(Au), rank(Ad)
        R = rg + ru
        d2 = _to(dout.reshape(-1, Hout), cdt)
        # down projection: dh = [dout | s dout Bd] @ [Wd; Ad]
        if rd:
            D = empty((N, Hout + rd), cdt, dev)
            D[:, :Hout].copy_(d2)
            _scaled_mm(d2, Bd, pd.scale, out=D[:, Hout:])
        else:
            D = d2
        w = cached_weights(ctx.cache, (pd,), cdt, extra_rows=rd)
        if w is None:
            w = wide_weights((pd,), cdt, extra_rows=rd)
        if rd:
            w[Hout:].copy_(Ad)
        dh = torch.mm(D, w)
        # activation: recompute h; dg, du overwrite g, u inside GU
        g, u = GU[:, :I], GU[:, I:2 * I]
        dg, du, h = glu_backward(dh, g, u, ctx.act, want_h=rd > 0, inplace=True, h_out=dh)  # h over dh
        del dh
        dAd = dBd = None
        if rd:
            if md[0]:
                dAd = D[:, Hout:].t() @ h
            if md[2]:
                if xad is None:  # the forward was a checkpoint recompute that skipped the tail
                    xad = _scaled_mm(h, Ad.t(), pd.scale)
                dBd = d2.t() @ xad
        del h, D
        # gate/up adapters; their s dy B land in GU's last R columns
        grads = []
        c, xc = 2 * I, H
        for p, A, B, m, dy in ((pg, Ag, Bg, mg, dg), (pu, Au, Bu, mu, du)):
            if A is None:
                grads += [None, None]
                continue
            r = A.shape[0]
            _scaled_mm(dy, B, p.scale, out=GU[:, c:c + r])
            grads.append(None)  # dA: both from one GEMM below
            grads.append(dy.t() @ X[:, xc:xc + r] if m[2] else None)
            c, xc = c + r, xc + r
        A_gu = stacked_a((Ag, Au))
        if R and ((Ag is not None and mg[0]) or (Au is not None and mu[0])):
            dA_gu = GU[:, 2 * I:].t() @ x2  # (R, H): s dy B of gate and up, against x
            if Ag is not None:
                grads[0] = dA_gu[:rg] if mg[0] else None
            if Au is not None:
                grads[2] = dA_gu[rg:] if mu[0] else None
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.cached:  # the cached forward layout: base GEMM, then one rank-R term
                w = cached_weights(ctx.cache, (pg, pu), cdt, extra_cols=R)
                dx = torch.mm(GU[:, :2 * I], w[:, :H])
                if R:
                    dx.addmm_(GU[:, 2 * I:], A_gu)
            elif ctx.grouped:
                dx = torch.mm(GU, weights_with_a_rows((pg, pu), cdt, A_gu))
            else:
                dx = torch.mm(dg, wide_weights((pg,), cdt))
                dx.addmm_(du, wide_weights((pu,), cdt))
                if R:
                    dx.addmm_(GU[:, 2 * I:], A_gu)
            dx = _to(dx.view(ctx.shape), ctx.in_dtype)
        dAg, dBg, dAu, dBu = grads
        return dx, None, None, None, None, None, dAg, dBg, dAu, dBu, dAd, dBd, None, None


def lora_mlp(x, pg: Proj, pu: Proj, pd: Proj, act: str = "silu",
             Ag=None, Bg=None, Au=None, Bu=None, Ad=None, Bd=None, skip_tail: bool = False,
             group_nf4: bool = True, cache: WeightCache | None = None) -> torch.Tensor:
    """skip_tail: the caller adds the output straight to the residual stream (no norm after it),
    so a checkpoint's recompute may skip the activation and down projection.
    group_nf4 / cache: KernelSettings.group_nf4 and the model's WeightCache (None: dequantize
    per GEMM); the patched MLP forward passes its model's."""
    return LoRAMLPFunction.apply(x, pg, pu, pd, act, skip_tail and recomputing(), Ag, Bg, Au, Bu, Ad, Bd,
                                 group_nf4, cache)


def lora_mlp_reference(x, gate, up, down, act: str = "silu"):
    """Plain PyTorch. gate/up/down: (weight, bias, A, B, scale) tuples; A = None for no adapter."""
    g = lora_linear_reference(x, *gate)
    u = lora_linear_reference(x, *up)
    return lora_linear_reference(glu_reference(g, u, act), *down)
