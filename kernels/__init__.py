"""tunesmith.kernels: Triton kernels, their autograd Functions and `patch(model)`.

    from tunesmith.kernels import patch
    report = patch(peft_model, mode="auto")   # auto | on | off; after get_peft_model

Kernels never import tunesmith.engine. See kernels/patching.py for what
patch() does and does not do.
"""
from .patching import PatchReport, patch, unpatch, unwrap_model


def tune_memory(model, tokens_per_step: int, prefer: str = "auto"):
    """Pick and apply activation checkpointing (and the LM-head chunk size) for one step of
    `tokens_per_step` tokens: "auto"/"speed" = fastest that fits free memory, "memory" = least
    memory (every layer checkpointed, inputs offloaded to pinned CPU memory, small LM-head chunks,
    one NF4 weight dequantized at a time). These last two are process-wide settings. Call after patch().
    Returns the CheckpointPlan; plan.summary() says what was chosen and why."""
    from . import fused_linear_ce, lora
    from .checkpoint import apply_checkpointing, plan_checkpointing

    plan = plan_checkpointing(model, tokens_per_step, prefer)
    apply_checkpointing(model, plan)
    fused_linear_ce.CHUNK_BYTES = (64 if prefer == "memory" else 256) * 1024**2
    lora.GROUP_NF4 = prefer != "memory"  # grouped NF4 dequant needs a larger scratch buffer
    return plan


__all__ = ["patch", "unpatch", "tune_memory", "PatchReport", "unwrap_model"]
