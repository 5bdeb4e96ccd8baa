"""Check lora.target_modules against the model before a run exists.

    check_target_modules(cfg)   # ConfigError naming the unknown names and the model's own

The model is built from its config.json on PyTorch's meta device: every module
exists with its name and type, no weight is read or allocated, so this takes
about a second even for large models.

What it does not know: a hub model that is not in the local cache (no network
is used here; the worker checks it when it loads), and a model that needs
trust_remote_code (its code is not run just to check names).
"""

from __future__ import annotations

import logging

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger(__name__)


def adaptable_layers(cfg: RunConfig) -> set[str] | None:
    """Full names of the layers LoRA can wrap, or None when the model's config is not at hand."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .models import resolve_model_path

    mc = cfg.model
    if mc.trust_remote_code:
        return None
    try:
        hf_cfg = AutoConfig.from_pretrained(resolve_model_path(mc.name_or_path), revision=mc.revision,
                                            local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_cfg)
    except Exception as e:  # not cached, unknown architecture: the worker's load reports it
        log.debug("target module check skipped for %s: %s", mc.name_or_path, e)
        return None
    kinds: tuple[type, ...] = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
    try:
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:
        pass
    return {name for name, mod in model.named_modules() if name and isinstance(mod, kinds)}


def check_target_modules(cfg: RunConfig) -> None:
    targets = cfg.lora.target_modules
    if cfg.method == "full" or targets == "all-linear":
        return
    if not targets:
        raise ConfigError("lora.target_modules is empty: use all-linear, or names like q_proj,v_proj.")
    layers = adaptable_layers(cfg)
    if layers is None:
        return
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in layers)]
    if unknown:
        short = sorted({n.rsplit(".", 1)[-1] for n in layers if not n.rsplit(".", 1)[-1].isdigit()})
        raise ConfigError(f"lora.target_modules: {', '.join(unknown)} not found in {cfg.model.name_or_path}; its "
                          f"layers are {', '.join(short)} (or use all-linear).")
