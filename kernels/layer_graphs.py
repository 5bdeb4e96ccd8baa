"""CUDA graphs for checkpointed decoder layers: their backward, and (offloaded) their forward.

A checkpointed layer's backward re-runs the layer's forward with autograd on, then its
backward: for a Llama layer a few hundred launches (cuBLAS, Triton, SDPA, small copies), each
with Python, autograd and launcher work around it. On an H100 that host work outlasts the GPU
work for small models (1B, bs 2 x 2048: the GPU idles more than half of a memory-mode step)
and still leaves gaps at 8B. Captured once as a CUDA graph, a layer's whole backward is one
replay. The first, no-grad forward of an offloaded checkpoint can be graphed the same way
(wants_forward_graphs says when).

Used by kernels/checkpoint.py when a CheckpointPlan has `graphs` (kernels.plan_memory turns
it on for checkpointed layers on CUDA in steps of up to MAX_GRAPH_TOKENS tokens;
TUNESMITH_CUDA_GRAPHS=0 turns it off). Measured on an H100, memory mode, bs 2 x 2048, backward
graphs only: 1B 19.3k -> 38.9k tokens/s, 8B 9.6k -> 10.6k (same run).

Rules that keep replays right:
- A layer is captured the second time its backward runs with the same signature (input
  shapes and dtypes, the non-tensor arguments, autocast state, its parameters, the NF4 scratch
  buffers); the first time runs eagerly (that compiles the Triton kernels and sizes the scratch
  buffers). Any new signature drops every graph (they share one memory pool), so inputs whose
  shape changes every step simply run eagerly; after MAX_DROPS drops graphs stay off.
- The step that captures computes eagerly on the capture stream first (the warm-up CUDA
  graphs need on that stream), then captures; later steps replay.
- Backward graphs read the layer input and its output gradient from, and write the input
  gradient to, buffers shared by all layers (two of each, alternating by layer parity); forward
  graphs rotate three input buffers (see forward()); so no graph keeps activations of its own; tensors passed as arguments (RoPE cos/sin, position ids, masks) are
  copied into static twins before a replay, once per step.
- Parameter gradients land in one shared flat buffer and are added to .grad right after the
  replay, before the next layer's replay overwrites the buffer.
- A capture that fails turns graphs off for the process with one log line; backward then runs
  eagerly as before.
Memory: the pool holds one layer's backward working set (what the eager backward allocates
and frees anyway), reserved for the run instead of returned to the caching allocator.
"""
from __future__ import annotations

import functools
import logging
import os
import types

import torch

from .recompute import recomputing_scope

log = logging.getLogger(__name__)


class NotGraphable(Exception):
    pass


def enabled_by_env() -> bool:
    return os.environ.get("TUNESMITH_CUDA_GRAPHS", "1") not in ("0", "false", "off")


# Above this many tokens per step a layer's kernels run long enough to hide the host work, so a
# graph saves nothing, while its memory pool (one layer's backward working set, kept reserved)
# grows with the tokens: 8B at 128k tokens ran at the same 47 s/step with graphs, reserving 77 GiB.
MAX_GRAPH_TOKENS = 32768
# Each new batch shape drops the graphs and costs a capture later; a run whose shapes keep
# changing would pay that again and again, so after this many drops its layers run eagerly.
MAX_DROPS = 3


def wants_graphs(checkpointed_layers: int, tokens_per_step: int, cuda: bool, prefer: str = "auto") -> bool:
    """Whether kernels.plan_memory turns CUDA graphs on for the checkpointed layers. Not in memory
    mode: their buffers and pool stay allocated through backward, where the peak is (H200, chat data,
    2,048-token passes: 8B 6.41 -> 6.25 GiB and 5.7k -> 4.3k tokens/s without them, 1B 1.46 -> 1.35
    GiB and 14.1k -> 8.3k tokens/s; least memory is what memory mode promises)."""
    return (checkpointed_layers > 0 and cuda and tokens_per_step <= MAX_GRAPH_TOKENS and enabled_by_env()
            and prefer != "memory")


def wants_forward_graphs(graphs: bool, offload: bool, prefer: str) -> bool:
    """Forward graphs too? Only for offloaded checkpoints (their inputs rotate through buffers), and
    not in memory mode: the three input buffers stay allocated through backward, where the peak is
    (H100, bs 2 x 2048, memory mode with them: 8B 2.21x at 7.03 GiB, 1B 4.91x at 1.80 GiB, against
    2.00x at 6.94 GiB and 2.89x at 1.66 GiB without)."""
    return graphs and offload and prefer != "memory"


_CONST = (type(None), bool, int, float, str, torch.dtype, torch.device)


def _spec(obj, leaves: list):
    """A hashable description of obj's structure and constants; its tensors go to `leaves`."""
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            raise NotGraphable("an argument other than the hidden states requires grad")
        leaves.append(obj)
        return ("T", tuple(obj.shape), tuple(obj.stride()), obj.dtype, obj.device)
    if isinstance(obj, _CONST):
        return ("C", type(obj).__name__, obj)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__, tuple(_spec(o, leaves) for o in obj))
    if isinstance(obj, dict):
        return ("D", tuple((k, _spec(obj[k], leaves)) for k in obj))
    if isinstance(obj, functools.partial):
        return ("P", _spec(obj.func, leaves), _spec(obj.args, leaves), _spec(obj.keywords, leaves))
    if isinstance(obj, types.MethodType):
        return ("B", id(obj.__func__), id(obj.__self__))
    if isinstance(obj, (torch.nn.Module, types.FunctionType, types.BuiltinFunctionType)):
        return ("I", id(obj))
    raise NotGraphable(f"argument of type {type(obj).__name__}")


def _rebuild(obj, it):
    """obj with its tensors replaced, in _spec's order, by the next items of `it`."""
    if isinstance(obj, torch.Tensor):
        return next(it)
    if isinstance(obj, tuple):
        return tuple(_rebuild(o, it) for o in obj)
    if isinstance(obj, list):
        return [_rebuild(o, it) for o in obj]
    if isinstance(obj, dict):
        return {k: _rebuild(v, it) for k, v in obj.items()}
    if isinstance(obj, functools.partial):
        return functools.partial(_rebuild(obj.func, it), *_rebuild(obj.args, it), **_rebuild(obj.keywords, it))
    return obj


def _arguments(run, rest):
    """(structure spec, argument tensors, NF4 scratch buffers' identity) of a layer call, or None
    when an argument cannot be graphed. A reallocated scratch buffer invalidates every graph."""
    leaves: list = []
    try:
        spec = (_spec(run, leaves), _spec(tuple(rest), leaves))
    except NotGraphable:
        return None
    from .nf4 import scratch_identity  # imports triton: not at module level, so planning works without it

    return spec, leaves, scratch_identity()


class _Entry:
    def __init__(self, key, graph, twins, grad_views):
        self.key, self.graph, self.twins, self.grad_views = key, graph, twins, grad_views


class LayerGraphs:
    """The CUDA graphs of one model's checkpointed layers (see the module docstring)."""

    def __init__(self, layers: list[torch.nn.Module], forward: bool = False):
        self.layers = layers
        self.forward_on = forward  # graph the first pass of offloaded checkpoints too (see forward())
        self.entries: dict[int, _Entry] = {}
        self.seen: dict[int, tuple] = {}      # layer -> signature of its last eager backward
        self.pool = None
        self.off_reason: str | None = None if enabled_by_env() else "TUNESMITH_CUDA_GRAPHS=0"
        self._bufs: dict = {}                 # (role, shape, dtype) -> buffers (see _pair)
        self._flat: dict = {}                 # (dtype, device) -> flat parameter-gradient buffer
        self._twin_of: dict[int, tuple] = {}  # id(source tensor) -> (source, twin), this capture round
        self._last_src: dict[int, tuple] = {}  # id(twin) -> (twin, source last copied into it)
        self.stream = None
        self.drops = 0
        self.captures = self.replays = 0          # backward graphs
        self.fwd_captures = self.fwd_replays = 0  # forward graphs

    # --- public -------------------------------------------------------------------------

    def signature(self, index: int, run, rest, x, dout, params, autocast, need_x) -> tuple[tuple, list] | None:
        """(key, argument tensors) for this backward, or None when it cannot be graphed."""
        if self.off_reason is not None or not x.is_cuda or x.shape != dout.shape or x.dtype != dout.dtype:
            return None
        args = _arguments(run, rest)
        if args is None:
            return None
        spec, leaves, scratch = args
        key = (spec, tuple(x.shape), x.dtype, tuple(dout.shape), dout.dtype, autocast, need_x,
               tuple(id(p) for p in params), scratch)
        return key, leaves

    def replay(self, index: int, key, leaves, x, dout, params) -> torch.Tensor | None:
        """Replay layer `index`'s graph for this signature; returns dx (a shared buffer, valid
        until the layer two below replays), or None (no graph: the caller runs eagerly)."""
        entry = self.entries.get(index)
        if entry is None or entry.key != key:
            if entry is not None:
                self.drop()
            return None
        xs, ds_in, ds_out = self._io(index, x, dout)
        if x.data_ptr() != xs.data_ptr():
            xs.copy_(x)
        if dout.data_ptr() != ds_in.data_ptr():
            ds_in.copy_(dout)
        self._fill_twins(entry.twins, leaves)
        entry.graph.replay()
        self._accumulate(params, entry.grad_views)
        self.replays += 1
        return ds_out

    def forward(self, index: int, run, rest, x, autocast, offloader) -> torch.Tensor | None:
        """Layer `index`'s no-grad forward (a checkpoint's first pass) from its graph, captured the
        second time this signature comes, like backward; None: the caller runs it eagerly.
        Inputs rotate through three buffers (layer i reads F[i % 3], writes F[(i + 1) % 3]), so this
        is only for offloaded checkpoints: F[(i + 1) % 3] held layer i-2's input, whose copy to the
        host is awaited first (`offloader.wait_copied`); a checkpoint keeping its input on the GPU
        would see it overwritten."""
        if not self.forward_on or self.off_reason is not None or not x.is_cuda:
            return None
        args = _arguments(run, rest)
        if args is None:
            return None
        spec, leaves, scratch = args
        key = ("forward", spec, tuple(x.shape), x.dtype, autocast, scratch)
        slot = ("forward", index)
        entry = self.entries.get(slot)
        if entry is not None and entry.key != key:
            self.drop()
            entry = None
        if entry is None and self.seen.get(slot) != key:
            self.seen[slot] = key
            return None
        bufs = self._pair(x, 2, n=3)
        xin, xout = bufs[index % 3], bufs[(index + 1) % 3]
        offloader.wait_copied(index - 2)
        if entry is None:
            return self._capture_forward(index, slot, key, leaves, run, rest, x, xin, xout, autocast)
        if x.data_ptr() != xin.data_ptr():
            xin.copy_(x)
        self._fill_twins(entry.twins, leaves)
        entry.graph.replay()
        self.fwd_replays += 1
        return xout.detach()  # a fresh alias: autograd's output bookkeeping never touches the buffer

    def _capture_forward(self, index, slot, key, leaves, run, rest, x, xin, xout, autocast):
        main = torch.cuda.current_stream(x.device)
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=x.device)
        side = self.stream
        enabled, dtype = autocast
        side.wait_stream(main)
        with torch.cuda.stream(side), torch.no_grad():  # eager, on the capture stream: its warm-up
            with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                out = run(x, *rest)
            xout.copy_(out)  # this step's result, where the graph will write it
            del out
        main.wait_stream(side)
        try:
            twins = [self._twin(t) for t in leaves]
            it = iter(twins)
            run_s, rest_s = _rebuild(run, it), _rebuild(tuple(rest), it)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
                with torch.no_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled,
                                                     cache_enabled=False):
                    o = run_s(xin, *rest_s)
                xout.copy_(o[0] if isinstance(o, tuple) else o)
                del o
            if self.pool is None:
                self.pool = graph.pool()
            self.entries[slot] = _Entry(key, graph, twins, None)
            self.fwd_captures += 1
        except Exception as exc:  # noqa: BLE001
            self.off_reason = f"forward capture failed: {type(exc).__name__}: {exc}"[:300]
            log.warning("tunesmith: CUDA graphs for checkpointed layers are off (%s); they run eagerly",
                        self.off_reason)
            self.drop()
        return xout.detach()

    def want_capture(self, index: int, key) -> bool:
        """True the second time in a row this layer's backward has this signature."""
        if self.off_reason is not None:
            return False
        if self.seen.get(index) == key:
            return True
        self.seen[index] = key
        return False

    def capture(self, index: int, key, leaves, run, rest, x, dout, params, autocast, need_x, eager):
        """Compute this backward eagerly on the capture stream (`eager()`: the caller's eager path,
        returning dx) and return its dx; then capture it for the next steps."""
        main = torch.cuda.current_stream(x.device)
        if self.stream is None:
            self.stream = torch.cuda.Stream(device=x.device)
        side = self.stream
        side.wait_stream(main)
        with torch.cuda.stream(side):
            dx = eager()
            if dx is not None:
                # the result waits in the buffer the graph will write (capturing runs nothing), so it
                # does not occupy memory of its own while the capture allocates
                ds_out = self._io(index, x, dout)[2]
                ds_out.copy_(dx)
                dx = ds_out
        main.wait_stream(side)
        for p in params:
            if p.grad is not None:
                p.grad.record_stream(main)
        try:
            self._capture(index, key, leaves, run, rest, x, dout, params, autocast, need_x, side)
        except Exception as exc:  # noqa: BLE001  (any capture failure: run eagerly from now on)
            self.off_reason = f"capture failed: {type(exc).__name__}: {exc}"[:300]
            log.warning("tunesmith: CUDA graphs for checkpointed layers are off (%s); backward runs eagerly",
                        self.off_reason)
            self.drop()
        return dx

    def drop(self) -> None:
        """Forget every graph (their pool is freed with them); the next steps run eagerly, then recapture.
        The MAX_DROPS-th drop of captured graphs turns graphs off for good."""
        if self.entries:
            self.drops += 1
            if self.drops >= MAX_DROPS and self.off_reason is None:
                self.off_reason = f"batch shapes changed {self.drops} times"
                log.warning("tunesmith: CUDA graphs for checkpointed layers are off (%s; pad batches to one "
                            "length to keep them); those layers run eagerly", self.off_reason)
        self.entries.clear()
        self.seen.clear()
        self.pool = None
        self._twin_of.clear()
        self._last_src.clear()

    # --- internals ----------------------------------------------------------------------

    def x_buffer(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """The buffer layer `index`'s graph reads its input from (the offloader copies straight into it)."""
        return self._pair(like, 0)[index % 2]

    def _io(self, index: int, x, dout):
        xs, ds = self._pair(x, 0), self._pair(dout, 1)
        return xs[index % 2], ds[(index + 1) % 2], ds[index % 2]

    def _pair(self, like: torch.Tensor, role: int, n: int = 2) -> list:
        """n buffers shaped like `like` for one role (0: backward inputs, 1: output gradients,
        2: forward inputs), one shape at a time."""
        key = (role, tuple(like.shape), like.dtype)
        bufs = self._bufs.get(key)
        if bufs is None:
            for k in [k for k in self._bufs if k[0] == role]:
                del self._bufs[k]
            bufs = self._bufs[key] = [torch.empty(like.shape, dtype=like.dtype, device=self._device(like))
                                      for _ in range(n)]
        return bufs

    def _device(self, like: torch.Tensor) -> torch.device:
        if like.is_cuda:
            return like.device
        return next(p.device for layer in self.layers for p in layer.parameters())

    def _flat_views(self, params):
        """Views of the shared flat gradient buffer(s), one per parameter, sized for the largest layer."""
        need: dict = {}
        for layer in self.layers:
            per: dict = {}
            for p in layer.parameters():
                if p.requires_grad:
                    k = (p.dtype, p.device)
                    per[k] = per.get(k, 0) + p.numel()
            for k, n in per.items():
                need[k] = max(need.get(k, 0), n)
        views, offs = [], {}
        for p in params:
            k = (p.dtype, p.device)
            flat = self._flat.get(k)
            if flat is None or flat.numel() < need.get(k, 0):
                flat = self._flat[k] = torch.empty(need.get(k, p.numel()), dtype=p.dtype, device=p.device)
            o = offs.get(k, 0)
            if o + p.numel() > flat.numel():
                raise NotGraphable("a layer's parameters outgrow the shared gradient buffer")
            views.append(flat[o:o + p.numel()].view_as(p))
            offs[k] = o + p.numel()
        return views

    def _twin(self, t: torch.Tensor) -> torch.Tensor:
        hit = self._twin_of.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        twin = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
        twin.copy_(t)
        self._twin_of[id(t)] = (t, twin)
        self._last_src[id(twin)] = (twin, t)
        return twin

    def _fill_twins(self, twins, leaves) -> None:
        for twin, src in zip(twins, leaves):
            last = self._last_src.get(id(twin))
            if last is not None and last[1] is src:
                continue  # the same tensor object as the last copy: every layer of a step shares it
            twin.copy_(src)
            self._last_src[id(twin)] = (twin, src)

    def _capture(self, index, key, leaves, run, rest, x, dout, params, autocast, need_x, side) -> None:
        xs, ds_in, ds_out = self._io(index, x, dout)
        grad_views = self._flat_views(params)
        twins = [self._twin(t) for t in leaves]
        it = iter(twins)
        run_s, rest_s = _rebuild(run, it), _rebuild(tuple(rest), it)
        enabled, dtype = autocast
        graph = torch.cuda.CUDAGraph()
        with recomputing_scope():
            # thread_local: a capture must not break CUDA calls of other threads (the studio's chat, say)
            with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
                xin = xs.detach().requires_grad_(need_x)
                with torch.enable_grad(), torch.autocast(x.device.type, dtype=dtype, enabled=enabled,
                                                         cache_enabled=False):
                    out = run_s(xin, *rest_s)
                out = out[0] if isinstance(out, tuple) else out
                inputs = ([xin] if need_x else []) + list(params)
                grads = torch.autograd.grad([out], inputs, grad_outputs=[ds_in], allow_unused=True)
                if need_x:
                    ds_out.copy_(grads[0])
                    grads = grads[1:]
                used = [g is not None for g in grads]
                for view, g in zip(grad_views, grads):
                    if g is not None:
                        view.copy_(g)
                del out, grads, xin
        if self.pool is None:
            self.pool = graph.pool()
        self.entries[index] = _Entry(key, graph, twins, [v if u else None for v, u in zip(grad_views, used)])
        self.captures += 1

    def params(self, index: int) -> list[torch.nn.Parameter]:
        return [p for p in self.layers[index].parameters() if p.requires_grad]

    @staticmethod
    def _accumulate(params, grads) -> None:
        add_to, add_from = [], []
        for p, g in zip(params, grads):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g.clone()
            else:
                add_to.append(p.grad)
                add_from.append(g)
        if add_to:
            torch._foreach_add_(add_to, add_from)
