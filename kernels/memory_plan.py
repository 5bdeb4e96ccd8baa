"""The memory plan of a training run: activation checkpointing, CUDA graphs and the kernels' settings.

    from tunesmith.kernels import patch, plan_memory, apply_memory_plan
    plan = plan_memory(model, tokens_per_step=2 * 2048, prefer="auto")   # decides; changes nothing
    report = patch(model, mode="auto", settings=plan.settings)
    apply_memory_plan(model, plan)                                       # checkpointing + settings
    log.info(plan.summary())

`tune_memory(model, tokens, prefer)` is plan_memory then apply_memory_plan, for
a model patched already.

prefer:
  "auto"/"speed": the fastest settings that fit free memory, in this order: no
      checkpointing with the dequantized NF4 weights kept (no dequantization per
      step), no checkpointing, the fewest checkpointed layers, all layers
      checkpointed and offloaded;
  "memory": least memory (every layer checkpointed, inputs offloaded to pinned
      CPU memory, small LM-head chunks, one NF4 weight dequantized at a time).
On CUDA, for steps of up to 32k tokens, the backward of checkpointed layers is
replayed from CUDA graphs once their shapes repeat (kernels/layer_graphs.py;
TUNESMITH_CUDA_GRAPHS=0 turns that off), except in memory mode: the graphs'
buffers cost memory at the peak.

Under FSDP2 (the model's weights sharded: DTensors outside a unit's forward) the
kernels run inside each unit's forward and backward, where its weights are
whole, but the plan keeps nothing of them beyond that: no NF4 weight cache
(every rank would hold every layer whole) and no CUDA graphs (a replay would
read weights FSDP has freed and skip its all-gathers); plan.summary() says so.

Everything chosen lives on the plan and, once applied, on that one model:
another model in the process keeps its own plan and settings.

What it does not know: the estimates are kernels/checkpoint.py's (free memory
now, not what other processes allocate later).
"""
from __future__ import annotations

import torch

from .checkpoint import CheckpointPlan, apply_checkpointing, plan_checkpointing
from .layer_graphs import wants_forward_graphs, wants_graphs
from .model_parts import is_sharded
from .patching import release_weight_cache, set_settings
from .settings import KernelSettings


def plan_memory(model: torch.nn.Module, tokens_per_step: int, prefer: str = "auto") -> CheckpointPlan:
    """Decide, for one step of `tokens_per_step` tokens and the GPU memory free now, what
    apply_memory_plan will do. It changes nothing but freeing the NF4 weights this model keeps
    from an earlier plan (so that free memory is measured without them; they are rebuilt on
    use). plan.summary() says what and why."""
    release_weight_cache(model)
    cuda = torch.cuda.is_available()
    sharded = is_sharded(model)
    plan = choose_plan(model, tokens_per_step, prefer, torch.cuda.mem_get_info()[0] if cuda else None,
                       sharded=sharded)
    plan.graphs = wants_graphs(plan.checkpointed, tokens_per_step, cuda, prefer) and not sharded
    plan.graph_forward = wants_forward_graphs(plan.graphs, plan.offload, prefer)
    plan.settings = KernelSettings.for_mode(prefer, cache_nf4_weights=plan.weight_cache_bytes > 0)
    plan.sharded = sharded
    return plan


def apply_memory_plan(model: torch.nn.Module, plan: CheckpointPlan) -> CheckpointPlan:
    """Checkpoint the layers the plan names and give the model's patched modules plan.settings.
    Call it once per model, after patch() (or give patch the plan's settings). Returns the plan."""
    apply_checkpointing(model, plan)
    set_settings(model, plan.settings)
    return plan


def tune_memory(model: torch.nn.Module, tokens_per_step: int, prefer: str = "auto") -> CheckpointPlan:
    """plan_memory + apply_memory_plan: pick and apply checkpointing, the LM-head chunk size and
    the NF4 weight cache for this model (see the module docstring). Call after patch()."""
    return apply_memory_plan(model, plan_memory(model, tokens_per_step, prefer))


def choose_plan(model: torch.nn.Module, tokens_per_step: int, prefer: str,
                free_bytes: int | None, sharded: bool | None = None) -> CheckpointPlan:
    """The checkpointing decision for `free_bytes` of free GPU memory (None: no CUDA), with
    weight_cache_bytes > 0 when the dequantized NF4 weights fit too. No graphs, default settings:
    plan_memory adds those. Weights sharded by FSDP (sharded None: look at the model) are never
    kept dequantized: each rank would hold every layer whole, the memory FSDP exists to save."""
    plan = plan_checkpointing(model, tokens_per_step, prefer, free_bytes=free_bytes)
    if sharded is None:
        sharded = is_sharded(model)
    if prefer != "memory" and plan.checkpointed == 0 and free_bytes is not None and not sharded:
        need = nf4_cache_bytes(model)
        if need:
            with_cache = plan_checkpointing(model, tokens_per_step, prefer, free_bytes=free_bytes - need)
            if with_cache.checkpointed == 0:
                with_cache.weight_cache_bytes = need
                return with_cache
    return plan


def nf4_cache_bytes(model: torch.nn.Module) -> int:
    """Bytes a 16-bit copy of every NF4 base weight takes (what the weight cache holds)."""
    from .nf4 import is_nf4_weight  # imports triton: only when there are modules to look at

    total = 0
    for m in model.modules():
        w = m.__dict__.get("_parameters", {}).get("weight")
        if w is not None and is_nf4_weight(w):
            n = 1
            for d in w.quant_state.shape:
                n *= d
            total += 2 * n
    return total
