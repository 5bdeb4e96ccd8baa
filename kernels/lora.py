"""LoRA projections without forming W + BA: the plumbing, and the fused single linear.

A LoRA projection of x (N, in) is

    y = x W^T + b + s * (x A^T) B^T          A: (r, in), B: (out, r), s = alpha / r

computed as one base GEMM plus two rank-r GEMMs; the (N, r) intermediate
xa = x A^T is the only thing kept besides x. Backward, with dy (N, out):

    dB = s * dy^T xa                 (out, r)
    dyB = dy B                       (N, r)
    dA = s * dyB^T x                 (r, in)
    dx = dy W + s * dyB A            (accumulated into one buffer with addmm_)

W is either a 16-bit tensor or a bitsandbytes NF4 weight; NF4 is dequantized
by our kernel (kernels/nf4.py) into a reused scratch buffer right before each
GEMM that needs it, forward and backward, so no 16-bit copy of the model
lives longer than one GEMM -- unless speed mode has memory to spare, when the
dequantized weights are kept for the run in the model's `WeightCache` (the
memory plan decides: KernelSettings.cache_nf4_weights; the patched forwards
pass the cache to the ops). The GEMMs themselves are cuBLAS (torch.mm): this
file has no Triton kernel of its own.

The fused QKV and MLP ops (kernels/lora_qkv.py, kernels/lora_mlp.py) put the
rank-r terms inside the base GEMMs through "wide" buffers (see below); the
single projection here (O) adds them with addmm_, which costs one pass over
its output.

The rank-r matmuls run in the activation dtype (bf16 in training), as they
do under the Trainer's autocast in stock PEFT; A and B may be stored in fp32
and autograd casts their gradients back to it.

`lora_projection(module)` reads a PEFT LoRA layer (or a plain frozen
nn.Linear / bnb Linear4bit) into a `Proj`, or returns None with a reason when
the fused path cannot reproduce the module: several active adapters, dropout
> 0 while training, DoRA or another variant, a trainable base weight, 8-bit
bases. Those run stock.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model_parts import is_sharded_tensor
from .nf4 import dequantize_nf4, dequantize_nf4_rows, is_nf4_weight, scratch
from .utils import compute_dtype, empty, no_autocast  # noqa: F401  (re-exported for the fused ops)


@dataclass
class Proj:
    """A frozen base projection plus at most one LoRA adapter (A, B live outside, as autograd inputs)."""

    weight: torch.Tensor          # (out, in) 16/32-bit, or packed NF4 data
    quant_state: object | None    # bitsandbytes QuantState for NF4, else None
    bias: torch.Tensor | None
    scale: float                  # LoRA scaling s; unused without an adapter
    out_features: int

    @property
    def in_features(self) -> int:
        return int(self.quant_state.shape[1]) if self.quant_state is not None else self.weight.shape[1]

    def base_weight(self, dtype: torch.dtype, cache: WeightCache | None = None) -> torch.Tensor:
        if self.quant_state is not None:
            if cache is not None:
                return cache.weights((self,), dtype)
            return dequantize_nf4(self.weight, self.quant_state, out="scratch", dtype=dtype)
        return _to(self.weight, dtype)


def lora_projection(module: torch.nn.Module) -> tuple[Proj | None, torch.Tensor | None, torch.Tensor | None, str]:
    """(Proj, A, B, "") for a module the fused path can run, else (None, None, None, why).

    Runs for every projection of every layer, forward and backward recompute: the answer is
    kept on the module and reused while what decides it (training flag, active/merged/disabled
    adapters, scaling, the base weight's storage) is unchanged."""
    d = module.__dict__
    base = d["_modules"].get("base_layer", module)
    w = base.__dict__["_parameters"].get("weight")
    if is_sharded_tensor(w):
        # FSDP2's shard, seen outside the unit's forward (patch time): the answer is only read for its
        # reason; inside the forward the unit's whole weights are there and decide
        return _lora_projection(module)
    key = (d.get("training"), len(d.get("merged_adapters") or ()), d.get("_disable_adapters"),
           repr(d.get("_active_adapter")), repr(d.get("scaling")),
           None if w is None else (w.data_ptr(), w.requires_grad, w.device))
    hit = d.get("_tunesmith_proj")
    if hit is not None and hit[0] == key:
        return hit[1]
    found = _lora_projection(module)
    d["_tunesmith_proj"] = (key, found)
    return found


def _lora_projection(module: torch.nn.Module):
    base = getattr(module, "base_layer", None)
    lora_a = getattr(module, "lora_A", None)
    A = B = None
    scale = 0.0
    if base is not None and lora_a is not None:  # a PEFT LoRA layer
        if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
            pass  # base weight alone (merged already holds BA; disabled means base only)
        else:
            active = [a for a in module.active_adapters if a in lora_a.keys()]
            if len(active) > 1:
                return None, None, None, "several active LoRA adapters"
            if active:
                name = active[0]
                if name in getattr(module, "lora_variant", {}):
                    return None, None, None, "DoRA or another LoRA variant"
                drop = module.lora_dropout[name]
                if isinstance(drop, torch.nn.Dropout) and drop.p > 0 and module.training:
                    return None, None, None, "lora_dropout > 0"
                if module.lora_B[name].bias is not None:
                    return None, None, None, "LoRA bias"
                A, B = lora_a[name].weight, module.lora_B[name].weight
                scale = float(module.scaling[name])
    else:
        base = module
    w = getattr(base, "weight", None)
    if w is None or not isinstance(base, torch.nn.Linear):
        return None, None, None, f"base layer {type(base).__name__} is not a Linear"
    if w.requires_grad:
        return None, None, None, "base weight is trainable"
    qs = _nf4_state(base, w)
    if qs is not None:
        return Proj(w.data, qs, base.bias, scale, int(qs.shape[0])), A, B, ""
    if w.dim() == 2 and w.shape[1] == 1 and getattr(base, "in_features", 1) != 1:
        return None, None, None, "packed 4-bit weight without its quantization state"
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16) or getattr(w, "quant_state", None) is not None:
        return None, None, None, f"base weight dtype {w.dtype} (only 16/32-bit and NF4 are fused)"
    return Proj(w, None, base.bias, scale, w.shape[0]), A, B, ""


def _nf4_state(base: torch.nn.Module, w: torch.Tensor):
    """The NF4 QuantState of a bitsandbytes 4-bit weight, else None. FSDP2 hands a unit's forward
    plain tensors holding the packed bytes (the Params4bit, and the state on it, stay behind in the
    shard); bitsandbytes' Linear4bit keeps the state on the module too, as its own forward reads it."""
    if is_nf4_weight(w):
        return w.quant_state
    qs = base.__dict__.get("quant_state")
    if getattr(qs, "quant_type", None) == "nf4" and w.dim() == 2 and w.shape[1] == 1:
        return qs
    return None


# --- the math shared by the fused ops ---------------------------------------------
# A and B arrive cast to the compute dtype (Ac, Bc: cast once per forward and saved for
# backward); `meta` carries what backward needs of the originals: (needs dA, A dtype,
# needs dB, B dtype). Adapter gradients are returned in the compute dtype: autograd's engine
# casts them to each parameter's dtype in C++, cheaper than a Python .to() per tensor.


def cast_adapter(A, B, dtype):
    if A is None:
        return None, None, None
    meta = (A.requires_grad, A.dtype, B.requires_grad, B.dtype)
    return _to(A, dtype), _to(B, dtype), meta


def cast_adapters(pairs, dtype) -> list:
    """cast_adapter for several (A, B) pairs with ONE cast launch: each Tensor.to() costs
    microseconds of Python, and a layer has fourteen adapter tensors. The casts lie in one
    buffer, all A's first, so the A's of projections sharing an input are one (R, in) matrix
    (stacked_a)."""
    present = [(A, B) for A, B in pairs if A is not None]
    ts = [A for A, _ in present] + [B for _, B in present]
    if len(present) < 2 or all(t.dtype == dtype for t in ts) or len({t.dtype for t in ts}) > 1:
        return [cast_adapter(A, B, dtype) for A, B in pairs]
    flat = torch.cat([t.reshape(-1) for t in ts]).to(dtype)
    a_off, b_off = 0, sum(A.numel() for A, _ in present)
    out = []
    for A, B in pairs:
        if A is None:
            out.append((None, None, None))
            continue
        na, nb = A.numel(), B.numel()
        out.append((flat[a_off:a_off + na].view(A.shape), flat[b_off:b_off + nb].view(B.shape),
                    (A.requires_grad, A.dtype, B.requires_grad, B.dtype)))
        a_off, b_off = a_off + na, b_off + nb
    return out


def stacked_a(As) -> torch.Tensor | None:
    """The present A's (same input width) as one (sum r, in) matrix: a view when cast_adapters laid
    them out back to back, else a copy. None without any."""
    As = [A for A in As if A is not None]
    if not As:
        return None
    if len(As) == 1:
        return As[0]
    first = As[0]
    storage = first.untyped_storage().data_ptr()  # adjacent addresses are not enough: one buffer
    ptr, ok = first.data_ptr(), first.is_contiguous()
    for A in As:
        ok = ok and A.is_contiguous() and A.data_ptr() == ptr and A.shape[1] == first.shape[1] \
            and A.untyped_storage().data_ptr() == storage
        ptr += A.numel() * A.element_size()
    if ok:
        return torch.as_strided(first, (sum(A.shape[0] for A in As), first.shape[1]), (first.shape[1], 1))
    return torch.cat(As)


def common_scale(projs, As) -> float | None:
    """The LoRA scale shared by every projection that has an adapter, or None if they differ."""
    scales = {p.scale for p, A in zip(projs, As) if A is not None}
    return scales.pop() if len(scales) == 1 else None


def _to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # a dtype check in Python is ~50 ns; a no-op Tensor.to() call is microseconds, hundreds per step
    return t if t.dtype == dtype else t.to(dtype)


_ZERO: dict = {}


def _scaled_mm(a: torch.Tensor, b: torch.Tensor, scale: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """scale * (a @ b) in one GEMM launch (addmm with beta=0 ignores its input); `out` may be a
    column slice of a wider buffer (cuBLAS writes it through its leading dimension, no copy)."""
    z = _ZERO.get((a.device, a.dtype))
    if z is None:
        z = _ZERO[(a.device, a.dtype)] = torch.zeros((), device=a.device, dtype=a.dtype)
    return torch.addmm(z, a, b, beta=0, alpha=scale, out=out)


# --- wide buffers: the LoRA terms ride inside the base GEMMs -------------------------------
# For projections sharing an input x, with xa_p = s_p x A_p^T:
#     [y_1 .. y_k] = [x | xa_1 .. xa_k] @ [W_1 | B_1 0 ..; W_2 | 0 B_2 ..]^T       (forward)
#     dx = [dy_1 .. dy_k | s dy_1 B_1 .. s dy_k B_k] @ [W_1; ..; W_k; A_1; ..; A_k]   (backward)
# so no GEMM re-reads and re-writes a full-width output to add a rank-r term: the adapter
# columns (r per projection) sit beside x, dy and W in the buffers those GEMMs read anyway.


def wide_weights(projs, dtype: torch.dtype, extra_cols: int = 0, extra_rows: int = 0) -> torch.Tensor:
    """A scratch (sum(out) + extra_rows, in + extra_cols) buffer whose [:sum(out), :in] holds the
    projections' 16-bit base weights stacked by rows (NF4 dequantized with one launch when they
    can share one). The extra rows and columns are left for the caller to fill."""
    in_f = projs[0].in_features
    rows = sum(p.out_features for p in projs)
    device = projs[0].weight.device
    buf = scratch((rows + extra_rows) * (in_f + extra_cols), dtype, device).view(rows + extra_rows, in_f + extra_cols)
    _write_weights(projs, buf, dtype)
    return buf


def _write_weights(projs, buf: torch.Tensor, dtype: torch.dtype) -> None:
    if all(p.quant_state is not None for p in projs) and \
            dequantize_nf4_rows([(p.weight, p.quant_state) for p in projs], buf):
        return
    in_f, r = projs[0].in_features, 0
    for p in projs:
        dst = buf[r:r + p.out_features, :in_f]
        if p.quant_state is None:
            dst.copy_(p.weight)
        elif not dequantize_nf4_rows([(p.weight, p.quant_state)], dst):
            dst.copy_(dequantize_nf4(p.weight, p.quant_state, dtype=dtype))  # blocks straddle rows: rare widths
        r += p.out_features


class WeightCache:
    """One model's NF4 weights kept dequantized for the run (KernelSettings.cache_nf4_weights).

    Each group of projections (q/k/v, gate/up, ...) is kept in the layout its forward GEMM reads.
    The frozen weights never change, so the dequantization passes (two per weight per step)
    disappear; it costs 2 bytes per base parameter (8B: ~13 GiB). Only the adapter columns are
    rewritten. The cache belongs to the patched model (patching.set_settings makes it) and is
    freed with it."""

    def __init__(self):
        self._bufs: dict = {}

    def weights(self, projs, dtype: torch.dtype, extra_cols: int = 0, extra_rows: int = 0) -> torch.Tensor | None:
        """The persistent 16-bit (sum(out) + extra_rows, in + extra_cols) weights of NF4 projections,
        extras zero-initialised, or None when a base is not NF4."""
        if any(p.quant_state is None for p in projs):
            return None
        ids = tuple(id(p.quant_state) for p in projs)
        key = (ids, dtype, extra_cols, extra_rows)
        hit = self._bufs.get(key)
        if hit is None and not extra_cols and not extra_rows:
            # the base weights alone (a DPO/KTO reference pass: adapters switched off) are the top-left
            # block of the buffer kept with adapter columns/rows: a view of it, not a second copy
            for (ids2, dtype2, c, r), (_, buf) in self._bufs.items():
                if ids2 == ids and dtype2 == dtype:
                    return buf[:buf.shape[0] - r, :buf.shape[1] - c]
        if hit is None:
            if extra_cols or extra_rows:  # a plain copy made before (reference pass first) is now a view
                self._bufs.pop((ids, dtype, 0, 0), None)
            rows = sum(p.out_features for p in projs)
            buf = torch.zeros((rows + extra_rows, projs[0].in_features + extra_cols), dtype=dtype,
                              device=projs[0].weight.device)
            _write_weights(projs, buf, dtype)
            # the states are kept with the buffer so that their ids cannot be reused by other weights
            hit = self._bufs[key] = ([p.quant_state for p in projs], buf)
        return hit[1]

    @property
    def nbytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for _, buf in self._bufs.values())

    def clear(self) -> None:
        self._bufs.clear()


def cached_weights(cache: WeightCache | None, projs, dtype: torch.dtype, extra_cols: int = 0,
                   extra_rows: int = 0) -> torch.Tensor | None:
    """cache.weights(...), or None without a cache."""
    return None if cache is None else cache.weights(projs, dtype, extra_cols, extra_rows)


def fill_adapter_cols(w: torch.Tensor, in_f: int, projs, Bs, zero: bool = True) -> None:
    """Write block-diagonal B's into w[:, in_f:], zeros elsewhere: the rows of projection k
    meet only their own xa_k columns. zero=False: the off-diagonal blocks are zero already."""
    if w.shape[1] == in_f:
        return
    if zero:
        w[:, in_f:].zero_()
    r0, c0 = 0, in_f
    for p, B in zip(projs, Bs):
        if B is not None:
            w[r0:r0 + p.out_features, c0:c0 + B.shape[1]].copy_(B)
            c0 += B.shape[1]
        r0 += p.out_features


def wide_input(x2: torch.Tensor, projs, As) -> torch.Tensor:
    """[x | s_1 x A_1^T | .. | s_k x A_k^T] (N, in + R) for the projections' present adapters (one
    GEMM when they share a scale), or x2 itself when none has an adapter."""
    R = sum(rank(A) for A in As)
    if not R:
        return x2
    N, H = x2.shape
    X = empty((N, H + R), x2.dtype, x2.device)
    X[:, :H].copy_(x2)
    s = common_scale(projs, As)
    if s is not None:
        _scaled_mm(x2, stacked_a(As).t(), s, out=X[:, H:])
        return X
    c = H
    for p, A in zip(projs, As):
        if A is not None:
            _scaled_mm(x2, A.t(), p.scale, out=X[:, c:c + A.shape[0]])
            c += A.shape[0]
    return X


def weights_with_a_rows(projs, dtype: torch.dtype, A_all: torch.Tensor | None) -> torch.Tensor:
    """[W_1; ..; W_k; A_1; ..; A_k] in scratch: the weight of a wide backward GEMM."""
    R = rank(A_all)
    w = wide_weights(projs, dtype, extra_rows=R)
    if R:
        w[-R:].copy_(A_all)
    return w


def add_bias(y: torch.Tensor, projs) -> None:
    """y (N, sum(out)) += the projections' biases (absent ones count as zero)."""
    if all(p.bias is None for p in projs):
        return
    if len(projs) == 1:
        y += _to(projs[0].bias, y.dtype)
        return
    y += torch.cat([_to(p.bias, y.dtype) if p.bias is not None else
                    torch.zeros(p.out_features, dtype=y.dtype, device=y.device) for p in projs])


def rank(A) -> int:
    return 0 if A is None else A.shape[0]


def proj_forward(x2: torch.Tensor, p: Proj, Ac, Bc, cache: WeightCache | None = None):
    """(y, xa) for x2 (N, in); xa = x2 A^T (N, r) or None without an adapter."""
    y = x2 @ p.base_weight(x2.dtype, cache).t()
    if p.bias is not None:
        y += _to(p.bias, y.dtype)
    xa = None
    if Ac is not None:
        xa = x2 @ Ac.t()
        y.addmm_(xa, Bc.t(), alpha=p.scale)
    return y, xa


def proj_backward(dy: torch.Tensor, x2: torch.Tensor, xa, p: Proj, Ac, Bc, meta, dx: torch.Tensor | None,
                  cache: WeightCache | None = None):
    """Writes dy W + s dyB A into dx when dx is given; returns (dA, dB) or (None, None)."""
    dA = dB = dyB = None
    if Ac is not None:
        need_a, a_dtype, need_b, b_dtype = meta
        dyB = dy @ Bc
        if need_b:
            dB = _scaled_mm(dy.t(), xa, p.scale)
        if need_a:
            dA = _scaled_mm(dyB.t(), x2, p.scale)
    if dx is not None:
        torch.matmul(dy, p.base_weight(dy.dtype, cache), out=dx)
        if dyB is not None:
            dx.addmm_(dyB, Ac, alpha=p.scale)
    return dA, dB


def _once(ctx):
    if getattr(ctx, "_done", False):
        raise RuntimeError("tunesmith LoRA-fused ops free their buffers in backward: backward twice is not supported")
    ctx._done = True


class LoRALinearFunction(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T, saving x and the (N, r) xa only."""

    @staticmethod
    def forward(ctx, x, p: Proj, A, B, cache: WeightCache | None):
        shape, in_dtype, cdt = x.shape, x.dtype, compute_dtype(x)
        with no_autocast(x):
            x2 = _to(x.reshape(-1, shape[-1]), cdt)
            Ac, Bc, meta = cast_adapter(A, B, cdt)
            y, xa = proj_forward(x2, p, Ac, Bc, cache)
        ctx.save_for_backward(x2, xa, Ac, Bc)
        ctx.p, ctx.shape, ctx.in_dtype, ctx.meta, ctx.cache = p, shape, in_dtype, meta, cache
        return y.view(*shape[:-1], p.out_features)

    @staticmethod
    def backward(ctx, dy):
        _once(ctx)
        x2, xa, Ac, Bc = ctx.saved_tensors
        dy2 = _to(dy.reshape(-1, dy.shape[-1]), x2.dtype)
        dx = torch.empty_like(x2) if ctx.needs_input_grad[0] else None
        dA, dB = proj_backward(dy2, x2, xa, ctx.p, Ac, Bc, ctx.meta, dx, ctx.cache)
        return (None if dx is None else _to(dx.view(ctx.shape), ctx.in_dtype)), None, dA, dB, None


def lora_linear(x: torch.Tensor, p: Proj, A=None, B=None, cache: WeightCache | None = None) -> torch.Tensor:
    """cache: the model's kept NF4 weights (speed mode), else None: dequantize per GEMM."""
    return LoRALinearFunction.apply(x, p, A, B, cache)


def lora_linear_reference(x, weight, bias, A, B, scale):
    """Plain PyTorch: base linear plus the low-rank update, as PEFT computes it (dropout 0)."""
    y = torch.nn.functional.linear(x, weight, bias)
    if A is not None:
        y = y + (x @ A.t() @ B.t()) * scale
    return y
