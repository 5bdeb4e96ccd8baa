"""Optimizer and learning-rate schedule from TrainingConfig.

adamw_torch: torch.optim.AdamW (fused kernels on CUDA); adamw_8bit / paged_adamw_8bit:
bitsandbytes' 8-bit AdamW (GPU only; the CPU falls back to AdamW, logged); sgd; adafactor
(transformers). Weight decay skips biases and norm weights, as transformers' Trainer does.
Schedules are transformers' get_scheduler with ceil(warmup_ratio x steps) warmup steps.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("tunesmith.trainer")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, t, device: str) -> tuple[torch.optim.Optimizer, str]:
    """(optimizer, the name of what was built)."""
    groups = param_groups(model, t.weight_decay)
    name = t.optimizer
    if "8bit" in name and device != "cuda":
        log.info("optimizer %s needs a GPU; using adamw_torch on the CPU", name)
        name = "adamw_torch"
    if name == "adamw_8bit" or name == "paged_adamw_8bit":
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit
        return cls(groups, lr=t.learning_rate, betas=(0.9, 0.999), eps=1e-8), name
    if name == "sgd":
        return torch.optim.SGD(groups, lr=t.learning_rate), name
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=t.learning_rate, scale_parameter=False, relative_step=False), name
    fused = device == "cuda"
    return torch.optim.AdamW(groups, lr=t.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused), name


def build_scheduler(optimizer: torch.optim.Optimizer, t, max_steps: int):
    from transformers import get_scheduler

    warmup = math.ceil(t.warmup_ratio * max_steps)
    return get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=max_steps)
