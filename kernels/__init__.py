"""tunesmith.kernels: Triton kernels, their autograd Functions and `patch(model)`.

    from tunesmith.kernels import patch
    report = patch(peft_model, mode="auto")   # auto | on | off; after get_peft_model

Kernels never import tunesmith.engine. See kernels/patching.py for what
patch() does and does not do.
"""
from .patching import PatchReport, patch, unpatch, unwrap_model


def tune_memory(model, tokens_per_step: int, prefer: str = "auto"):
    """Pick and apply activation checkpointing, the LM-head chunk size and the NF4 weight cache
    for one step of `tokens_per_step` tokens:
      "auto"/"speed": the fastest settings that fit free memory, in this order: no checkpointing
          with the dequantized NF4 weights kept (no dequantization per step), no checkpointing,
          the fewest checkpointed layers, all layers checkpointed and offloaded;
      "memory": least memory (every layer checkpointed, inputs offloaded to pinned CPU memory,
          small LM-head chunks, one NF4 weight dequantized at a time).
    On CUDA, for steps of up to 32k tokens, the backward of checkpointed layers is replayed from
    CUDA graphs once their shapes repeat (kernels/layer_graphs.py; TUNESMITH_CUDA_GRAPHS=0 turns
    that off).
    These are process-wide settings. Call after patch(). Returns the CheckpointPlan;
    plan.summary() says what was chosen and why."""
    import torch

    from . import fused_linear_ce, lora
    from .checkpoint import apply_checkpointing

    lora.release_weight_cache()
    free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
    plan = choose_plan(model, tokens_per_step, prefer, free)
    lora.CACHE_WEIGHTS = plan.weight_cache_bytes > 0
    from .layer_graphs import wants_forward_graphs, wants_graphs

    plan.graphs = wants_graphs(plan.checkpointed, tokens_per_step, torch.cuda.is_available())
    plan.graph_forward = wants_forward_graphs(plan.graphs, plan.offload, prefer)
    apply_checkpointing(model, plan)
    fused_linear_ce.CHUNK_BYTES = (64 if prefer == "memory" else 256) * 1024**2
    lora.GROUP_NF4 = prefer != "memory"  # grouped NF4 dequant needs a larger scratch buffer
    return plan


def choose_plan(model, tokens_per_step: int, prefer: str, free_bytes: int | None):
    """tune_memory's decision without applying it: the CheckpointPlan for `free_bytes` of free GPU
    memory (None: no CUDA), with weight_cache_bytes > 0 when the dequantized NF4 weights fit too."""
    from .checkpoint import plan_checkpointing

    plan = plan_checkpointing(model, tokens_per_step, prefer, free_bytes=free_bytes)
    if prefer != "memory" and plan.checkpointed == 0 and free_bytes is not None:
        need = nf4_cache_bytes(model)
        if need:
            with_cache = plan_checkpointing(model, tokens_per_step, prefer, free_bytes=free_bytes - need)
            if with_cache.checkpointed == 0:
                with_cache.weight_cache_bytes = need
                return with_cache
    return plan


def nf4_cache_bytes(model) -> int:
    """Bytes a 16-bit copy of every NF4 base weight takes (what the weight cache holds)."""
    from .nf4 import is_nf4_weight

    total = 0
    for m in model.modules():
        w = m.__dict__.get("_parameters", {}).get("weight")
        if w is not None and is_nf4_weight(w):
            n = 1
            for d in w.quant_state.shape:
                n *= d
            total += 2 * n
    return total


__all__ = ["patch", "unpatch", "tune_memory", "PatchReport", "unwrap_model"]
