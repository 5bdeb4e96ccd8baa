"""Activation checkpointing per decoder layer, optionally offloaded to pinned CPU memory,
and the policy that checkpoints only as many layers as memory requires.

    from tunesmith.kernels.checkpoint import plan_checkpointing, apply_checkpointing
    plan = plan_checkpointing(model, tokens_per_step=2 * 2048, prefer="auto")
    apply_checkpointing(model, plan)
    log.info(plan.summary())

A checkpointed layer keeps only its input hidden states (tokens x hidden)
and recomputes everything else in backward. With `offload`, even that input
goes to pinned host memory: the device-to-host copy runs on a side CUDA
stream while the next layers compute, and in backward each layer starts
copying the previous layer's input back before it recomputes itself, so the
copies hide behind compute. Host memory needed: layers x tokens x hidden x 2
bytes (8B model, 128k tokens: 32 GiB).

It plugs into transformers' own mechanism: decoder layers are
GradientCheckpointingLayer instances with a `gradient_checkpointing` flag and
a `_gradient_checkpointing_func`; we set both per layer.

Policy (`plan_checkpointing`), from the free device memory now and an
estimate of what one layer keeps for backward (with Tunesmith's kernels:
4 x hidden + 3 x q-width + 2 x kv-width + 2 x intermediate values per
token, 16-bit; +30% and 1 GiB reserve for transients and fragmentation):
  prefer="speed"/"auto": no checkpointing if it fits, else the fewest
      checkpointed layers that fit, else all layers offloaded.
  prefer="memory": all layers checkpointed and offloaded.
It is an estimate, not a measurement: it does not know about other
processes allocating later, or attention implementations that keep more.

Under FSDP2 each decoder layer is a unit: transformers checkpoints the layer's
forward, inside the unit's hooks, so the forward runs on the weights FSDP
gathered for it, FSDP's pre-backward hook gathers them again before this
checkpoint's backward recomputes the layer, and the adapter gradients reach
FSDP's reduce-scatter through the unit's whole parameters, as on the stock path.

Recompute notes: the autocast state of forward is re-entered for the
recompute; RNG state is not replayed (use no dropout in checkpointed layers,
as LoRA with dropout 0 and these models' attention_dropout 0 do).
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import torch

from .layer_graphs import LayerGraphs
from .model_parts import decoder_layers, is_sharded, unwrap_model
from .recompute import recomputing_scope
from .settings import KernelSettings

GiB = 1024**3
log = logging.getLogger("tunesmith.kernels")


@dataclass
class CheckpointPlan:
    n_layers: int
    checkpointed: int           # the first `checkpointed` layers are checkpointed
    offload: bool               # their inputs live in pinned host memory
    reason: str
    est_peak_bytes: int = 0
    weight_cache_bytes: int = 0  # set by kernels.plan_memory: dequantized NF4 weights kept
    graphs: bool = False         # checkpointed layers' backward as CUDA graphs (kernels/layer_graphs.py)
    graph_forward: bool = False  # ... and their first (no-grad) pass, when offloaded
    sharded: bool = False        # FSDP shards the weights: no NF4 weight cache, no CUDA graphs
    # the kernels' options that go with this plan (kernels.plan_memory picks them; apply_memory_plan
    # attaches them to the model's patched modules)
    settings: KernelSettings = KernelSettings()

    def summary(self) -> str:
        if self.checkpointed == 0:
            what = "no checkpointing"
        else:
            what = f"checkpoint {self.checkpointed}/{self.n_layers} layers" + (" offloaded to CPU" if self.offload else "")
            if self.graphs:
                what += ", their forward and backward as CUDA graphs" if self.graph_forward and self.offload \
                    else ", their backward as CUDA graphs"
        est = f", est. activations {self.est_peak_bytes / GiB:.1f} GiB" if self.est_peak_bytes else ""
        cache = f" + NF4 weights kept dequantized ({self.weight_cache_bytes / GiB:.1f} GiB)" \
            if self.weight_cache_bytes else ""
        fsdp = "; FSDP: no NF4 weight cache, no CUDA graphs (weights are whole only inside a layer's " \
            "forward and backward)" if self.sharded else ""
        return f"{what}{cache} ({self.reason}{est}){fsdp}"


def layer_activation_bytes(config, tokens: int, elem: int = 2) -> tuple[int, int]:
    """(bytes one layer keeps for backward without checkpointing, with checkpointing in GPU memory)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    h = cfg.hidden_size
    heads = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or h // heads
    kv = getattr(cfg, "num_key_value_heads", heads) * hd
    inter = cfg.intermediate_size
    per_token = 4 * h + 3 * heads * hd + 2 * kv + 2 * inter
    return tokens * per_token * elem, tokens * h * elem


def plan_checkpointing(model: torch.nn.Module, tokens_per_step: int, prefer: str = "auto",
                       free_bytes: int | None = None) -> CheckpointPlan:
    layers = decoder_layers(model)
    n = len(layers)
    if prefer not in ("auto", "speed", "memory"):
        raise ValueError(f"prefer must be auto, speed or memory, not {prefer!r}")
    if n == 0:
        return CheckpointPlan(0, 0, False, "no decoder layers found")
    if prefer == "memory":
        return CheckpointPlan(n, n, torch.cuda.is_available(), "memory mode")
    if free_bytes is None:
        if not torch.cuda.is_available():
            return CheckpointPlan(n, n, False, "no CUDA: stock checkpointing of every layer")
        free_bytes, _ = torch.cuda.mem_get_info()
    full, ckpt = layer_activation_bytes(unwrap_model(model).config, tokens_per_step)
    cfg = unwrap_model(model).config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    # transients: one layer recomputed with its gradients, the LM head chunk, optimizer states on step one
    transient = 2 * full + tokens_per_step * cfg.hidden_size * 4 + 256 * 1024**2
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad) * 12
    budget = free_bytes - GiB - transient - lora
    need = lambda k: int(1.3 * ((n - k) * full + k * ckpt))  # noqa: E731
    if need(0) <= budget:
        return CheckpointPlan(n, 0, False, f"fits in {free_bytes / GiB:.1f} GiB free", need(0))
    if full > ckpt:
        k = math.ceil((1.3 * n * full - budget) / (1.3 * (full - ckpt)))
        if k <= n and need(k) <= budget:
            return CheckpointPlan(n, k, False, f"{free_bytes / GiB:.1f} GiB free", need(k))
    return CheckpointPlan(n, n, torch.cuda.is_available(),
                          f"only {free_bytes / GiB:.1f} GiB free", 0)


def apply_checkpointing(model: torch.nn.Module, plan: CheckpointPlan) -> None:
    """Turn checkpointing on for the first plan.checkpointed decoder layers and off for the rest."""
    layers = decoder_layers(model)
    offloader = _Offloader() if plan.offload else None
    graphs = None
    if plan.graphs and plan.checkpointed and torch.cuda.is_available() and not is_sharded(model):
        graphs = LayerGraphs(layers, forward=plan.graph_forward and plan.offload)
    for i, layer in enumerate(layers):
        on = i < plan.checkpointed
        layer.gradient_checkpointing = on
        if on:
            layer._gradient_checkpointing_func = functools.partial(checkpoint, offloader=offloader, index=i,
                                                                   graphs=graphs)
    if plan.checkpointed and is_sharded(model) and not _hooks_outside_checkpoint():
        log.warning("checkpointing under FSDP: this transformers checkpoints a layer's __call__, so FSDP's "
                    "all-gather runs again in each recompute (correct, slower); transformers 5 checkpoints forward")
    if plan.checkpointed:
        inner = unwrap_model(model)
        # the layer inputs must require grad for the LoRA grads of layer 0 to flow (as HF does)
        if hasattr(inner, "enable_input_require_grads"):
            inner.enable_input_require_grads()


def _hooks_outside_checkpoint() -> bool:
    """Does transformers checkpoint a layer's forward (its module hooks, FSDP2's all-gather and
    reshard among them, then run once, outside the checkpoint)? transformers 5 does; earlier
    versions checkpoint __call__, hooks included."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return False
    return "__call__" not in vars(GradientCheckpointingLayer)


# --- the checkpoint itself ------------------------------------------------------------


class _Offloader:
    """Pinned host buffers, one per layer, reused across steps; a side stream for the copies."""

    def __init__(self):
        self.host: dict[int, torch.Tensor] = {}
        self.pending: dict[int, "_Saved"] = {}
        self.stream = None

    def side(self, device):
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=device)
        return self.stream

    def save(self, index: int, x: torch.Tensor) -> "_Saved":
        buf = self.host.get(index)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = torch.empty(x.shape, dtype=x.dtype, device="cpu", pin_memory=True)
            self.host[index] = buf
        side = self.side(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            buf.copy_(x, non_blocking=True)
        x.record_stream(side)  # x's memory is not reused before the copy is done
        saved = _Saved(buf, x.device, self)
        saved.copied = torch.cuda.Event()
        saved.copied.record(side)
        self.pending[index] = saved
        return saved

    def wait_copied(self, index: int) -> None:
        """Make the current stream wait until layer `index`'s input has reached host memory (before
        its GPU buffer is reused); a no-op for a layer with nothing in flight."""
        saved = self.pending.get(index)
        if saved is not None and saved.copied is not None:
            torch.cuda.current_stream(saved.device).wait_event(saved.copied)

    def prefetch(self, index: int, into_for=None) -> None:
        """Start copying layer `index`'s input back; into_for(like) may give the buffer to copy into."""
        saved = self.pending.get(index)
        if saved is not None:
            saved.start(into_for(saved.buf) if into_for is not None else None)


class _Saved:
    def __init__(self, buf, device, offloader):
        self.buf, self.device, self.offloader = buf, device, offloader
        self.gpu = None
        self.copied = None  # event: the device-to-host copy is done

    def start(self, into: torch.Tensor | None = None):
        if self.gpu is None:
            side = self.offloader.side(self.device)
            if into is not None:  # a reused buffer: whatever the main stream queued on it comes first
                side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                if into is not None:
                    self.gpu = into.copy_(self.buf, non_blocking=True)
                else:
                    self.gpu = self.buf.to(self.device, non_blocking=True)

    def get(self) -> torch.Tensor:
        self.start()
        cur = torch.cuda.current_stream(self.device)
        cur.wait_stream(self.offloader.side(self.device))
        self.gpu.record_stream(cur)
        x, self.gpu = self.gpu, None
        return x


class _CheckpointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run, offloader, index, graphs, x, *rest):
        ctx.run, ctx.rest, ctx.index, ctx.offloader, ctx.graphs = run, rest, index, offloader, graphs
        ctx.autocast = _autocast_state(x.device.type)
        out = None
        if graphs is not None and offloader is not None:  # rotating input buffers need the inputs offloaded
            out = graphs.forward(index, run, rest, x, ctx.autocast, offloader)
        if out is None:
            with torch.no_grad():
                out = run(x, *rest)
        if offloader is not None and x.is_cuda:
            ctx.saved = offloader.save(index, x)
        else:
            ctx.saved = None
            ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, *douts):
        if ctx.saved is not None:
            x = ctx.saved.get()
            ctx.offloader.pending.pop(ctx.index, None)
            # overlaps with this layer's recompute; with graphs, straight into the buffer that layer's graph reads
            ctx.offloader.prefetch(ctx.index - 1, None if ctx.graphs is None else
                                   lambda like: ctx.graphs.x_buffer(ctx.index - 1, like))
        else:
            (x,) = ctx.saved_tensors
        need_x = ctx.needs_input_grad[4]
        graphs = ctx.graphs
        dx = _graphed_backward(ctx, graphs, x, douts, need_x) if graphs is not None else _NO_GRAPH
        if dx is _NO_GRAPH:
            dx = _recompute_backward(ctx, x, douts, need_x)
        return (None, None, None, None, dx if need_x else None, *([None] * len(ctx.rest)))


_NO_GRAPH = object()


def _recompute_backward(ctx, x, douts, need_x: bool):
    """The eager path: re-run the layer with autograd on, backpropagate douts; returns dx."""
    x = x.detach().requires_grad_(need_x)
    enabled, dtype = ctx.autocast
    with recomputing_scope(), torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
        out = ctx.run(x, *ctx.rest)
    outs = out if isinstance(out, tuple) else (out,)
    pairs = [(o, d) for o, d in zip(outs, douts)
             if isinstance(o, torch.Tensor) and o.requires_grad and d is not None]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [d for _, d in pairs])
    return x.grad if need_x else None


def _graphed_backward(ctx, graphs, x, douts, need_x: bool):
    """Replay (or capture) this layer's backward as a CUDA graph; _NO_GRAPH when it runs eagerly."""
    if len(douts) != 1 or douts[0] is None or not x.is_cuda:
        return _NO_GRAPH
    dout = douts[0]
    params = graphs.params(ctx.index)
    sig = graphs.signature(ctx.index, ctx.run, ctx.rest, x, dout, params, ctx.autocast, need_x)
    if sig is None:
        return _NO_GRAPH
    key, leaves = sig
    dx = graphs.replay(ctx.index, key, leaves, x, dout, params)
    if dx is not None:
        return dx
    if not graphs.want_capture(ctx.index, key):
        return _NO_GRAPH
    return graphs.capture(ctx.index, key, leaves, ctx.run, ctx.rest, x, dout, params, ctx.autocast, need_x,
                          eager=lambda: _recompute_backward(ctx, x, douts, need_x))


def _autocast_state(device_type: str):
    try:
        return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)
    except TypeError:  # older torch: no device argument
        return torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()


def checkpoint(function, *args, offloader: _Offloader | None = None, index: int = 0, graphs=None, **kwargs):
    """transformers-compatible _gradient_checkpointing_func: function(*args, **kwargs) with a
    checkpoint around it; the first positional argument (hidden states) is what is kept."""
    if kwargs:
        function = functools.partial(function, **kwargs)
    x, *rest = args
    if not torch.is_grad_enabled() or not isinstance(x, torch.Tensor) or \
            any(isinstance(r, torch.Tensor) and r.requires_grad for r in rest):
        if not torch.is_grad_enabled():
            return function(*args)
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
    out = _CheckpointFunction.apply(function, offloader, index, graphs, x, *rest)
    return out
