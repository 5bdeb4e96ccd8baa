"""Where the parts patch() and checkpointing work on sit inside a (PEFT-wrapped) model.

Kept apart from patching.py and checkpoint.py so that both can use it without
importing each other.
"""
from __future__ import annotations

import torch


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the transformers model inside a PeftModel / LoraModel, else `model`."""
    try:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTuner
    except ImportError:  # no peft installed: nothing can be wrapped
        return model
    if isinstance(model, PeftModel):
        model = model.base_model
    if isinstance(model, BaseTuner):
        model = model.model
    return model


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder layers (transformers GradientCheckpointingLayer instances), in order."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        GradientCheckpointingLayer = ()
    out = []
    for m in unwrap_model(model).modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) and all(
                isinstance(c, GradientCheckpointingLayer) or type(c).__name__.endswith("DecoderLayer") for c in m):
            out = list(m)
            break
    return out


_DTENSOR: type | None | bool = False  # torch's DTensor class, looked up once (False: not yet)


def is_sharded_tensor(t) -> bool:
    """A DTensor: FSDP2 keeps this shard of the parameter outside its unit's forward and backward
    (its .shape is the whole tensor's). Asked per projection per pass: the class is looked up once."""
    global _DTENSOR
    if _DTENSOR is False:
        try:
            from torch.distributed.tensor import DTensor
        except ImportError:  # a torch without DTensor cannot have sharded anything
            DTensor = None
        _DTENSOR = DTensor
    return _DTENSOR is not None and isinstance(t, _DTENSOR)


def is_sharded(model: torch.nn.Module) -> bool:
    """Are `model`'s weights sharded over processes (FSDP2's fully_shard)? Then they are whole only
    inside a unit's forward and backward: nothing may keep a dequantized copy or a CUDA graph of them."""
    return any(is_sharded_tensor(p) for p in unwrap_model(model).parameters())
