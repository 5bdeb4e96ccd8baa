"""tunesmith.kernels: Triton kernels, their autograd Functions and `patch(model)`.

    from tunesmith.kernels import patch
    report = patch(peft_model, mode="auto")   # auto | on | off; after get_peft_model

Kernels never import tunesmith.engine. See kernels/patching.py for what
patch() does and does not do.
"""
from .patching import PatchReport, patch, unpatch, unwrap_model

__all__ = ["patch", "unpatch", "PatchReport", "unwrap_model"]
