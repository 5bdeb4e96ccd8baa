"""tunesmith.kernels: Triton kernels, their autograd Functions, `patch(model)` and the memory plan.

The two calls a trainer makes, after get_peft_model:

    from tunesmith.kernels import patch, tune_memory
    report = patch(peft_model, mode="auto")                  # auto | on | off; report.summary(), .applied
    plan = tune_memory(peft_model, tokens_per_step, prefer="auto")   # auto | speed | memory; plan.summary()

or the same in explicit steps, deciding before anything changes:

    from tunesmith.kernels import apply_memory_plan, patch, plan_memory
    plan = plan_memory(peft_model, tokens_per_step, prefer="auto")  # checkpointing, CUDA graphs, plan.settings
    report = patch(peft_model, mode="auto", settings=plan.settings)
    apply_memory_plan(peft_model, plan)

The kernels' options are a KernelSettings (kernels/settings.py: NF4 grouping,
the NF4 weight cache, the LM-head chunk size), attached to that one model's
patched modules and passed from there to the kernels as arguments; nothing is
process-wide, so two models in one process run with their own settings.

Kernels never import tunesmith.engine. See kernels/patching.py for what
patch() does and does not do, kernels/memory_plan.py for the plan.
"""
from .memory_plan import apply_memory_plan, choose_plan, nf4_cache_bytes, plan_memory, tune_memory
from .model_parts import unwrap_model
from .patching import PatchReport, patch, set_settings, settings_of, unpatch
from .settings import KernelSettings

__all__ = ["patch", "unpatch", "tune_memory", "plan_memory", "apply_memory_plan", "choose_plan",
           "nf4_cache_bytes", "KernelSettings", "set_settings", "settings_of", "PatchReport", "unwrap_model"]
