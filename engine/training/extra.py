"""training.extra: the optimizer's and the schedule's options that RunConfig does not name, checked.

    training:
      optimizer: adamw_torch
      lr_scheduler: cosine
      extra: {betas: [0.9, 0.95], eps: 1.0e-6, num_cycles: 0.5, warmup_steps: 10}

Tunesmith trains with its own loop (engine/trainer.py), so "the trainer's arguments" are those
of the parts that loop builds, read from their signatures rather than from a list kept here:
- the optimizer's constructor, for the class `training.optimizer` names (torch.optim.AdamW:
  betas, eps, amsgrad; SGD: momentum, dampening, nesterov; transformers' Adafactor: beta1,
  clip_threshold, decay_rate, ...; bitsandbytes' 8-bit AdamW: betas, eps): the options every
  parameter group holds, which the loop sets on each group before the first step;
- the schedule's function for `training.lr_scheduler` (transformers' cosine: num_cycles);
- the loop's own `warmup_steps`: a step count instead of `training.warmup_ratio`;
- Hugging Face TrainingArguments' spellings adam_beta1, adam_beta2 and adam_epsilon, for
  configs written for Trainer or LLaMA-Factory (they become betas and eps).

Refused, one line each, naming the key: a key RunConfig names itself (lr -> training.learning_rate),
the implementation switches Tunesmith picks (fused, foreach, capturable, differentiable, maximize),
a value the class itself rejects (its own message), and any other key (the closest accepted name
suggested, with difflib).

What it does not know: options that live outside the parameter groups (bitsandbytes' optim_bits,
percentile_clipping) are not offered; on a CPU, where the 8-bit AdamW falls back to
torch's AdamW, options only the 8-bit class has are skipped with a log line.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
from typing import Any

log = logging.getLogger("tunesmith.trainer")

# Implementation switches: Tunesmith chooses them per device (fused AdamW on CUDA), and a
# different choice would fail (fused on a CPU) or train the wrong way (maximize).
_CHOSEN_BY_TUNESMITH = {"params", "lr", "weight_decay", "foreach", "fused", "capturable", "differentiable",
                        "maximize", "decoupled_weight_decay"}
# Schedule-function parameters the loop fills in itself.
_SCHEDULE_OWN = {"optimizer", "num_warmup_steps", "num_training_steps", "last_epoch"}
LOOP_OPTIONS = ("warmup_steps",)
HF_ALIASES = {"adam_beta1": ("betas", 0), "adam_beta2": ("betas", 1), "adam_epsilon": ("eps", None)}
# Other spellings of what RunConfig already names (HF TrainingArguments, the schedule functions).
_NAMED_ELSEWHERE = {
    "lr": "learning_rate", "optim": "optimizer", "lr_scheduler_type": "lr_scheduler",
    "num_train_epochs": "num_epochs", "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation", "num_training_steps": "max_steps",
    "neftune_noise_alpha": "neftune_alpha", "num_warmup_steps": "warmup_ratio (or training.extra.warmup_steps)",
}


def optimizer_class(name: str) -> type:
    """The class `training.optimizer` builds on a GPU (engine/training/optim.py)."""
    import torch

    if name in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit
    if name == "sgd":
        return torch.optim.SGD
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor
    return torch.optim.AdamW


def _probe_optimizer(cls: type, lr: float, **kwargs: Any):
    """An instance over one throwaway tensor: shows which options its groups hold, and runs the
    class's own checks on the values."""
    import torch

    fixed = {"scale_parameter": False, "relative_step": False} if cls.__name__ == "Adafactor" else {}
    return cls([torch.zeros(4, requires_grad=True)], lr=lr, **{**fixed, **kwargs})


def optimizer_options(cls: type) -> list[str]:
    """Constructor parameters that every parameter group holds, less what Tunesmith sets itself."""
    params = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    held = set(_probe_optimizer(cls, 1e-3).defaults)
    return sorted((params & held) - _CHOSEN_BY_TUNESMITH)


def _schedule_function(name: str):
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION
    from transformers.trainer_utils import SchedulerType

    return TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]


def schedule_options(name: str) -> list[str]:
    params = inspect.signature(_schedule_function(name)).parameters
    return sorted(set(params) - _SCHEDULE_OWN)


def accepted(optimizer: str, lr_scheduler: str) -> list[str]:
    """Every key training.extra takes with this optimizer and schedule."""
    opt = optimizer_options(optimizer_class(optimizer))
    aliases = [a for a, (target, _) in HF_ALIASES.items() if target in opt]
    return opt + schedule_options(lr_scheduler) + list(LOOP_OPTIONS) + aliases


def numbers(v: Any) -> Any:
    """YAML 1.1 reads 1e-6 (no dot) as text; every option here is a number, a flag or a list of them."""
    if isinstance(v, list):
        return [numbers(x) for x in v]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def split(extra: dict[str, Any], optimizer: str, lr_scheduler: str) -> tuple[dict, dict, dict]:
    """(optimizer options, schedule options, loop options), aliases resolved. ValueError (one line,
    naming the key) for anything the parts do not take."""
    from .. import config  # noqa: F401 - TrainingConfig's field names, below

    opt_keys = optimizer_options(optimizer_class(optimizer))
    sched_keys = schedule_options(lr_scheduler)
    ok = accepted(optimizer, lr_scheduler)
    named = set(config.TrainingConfig.model_fields) - {"extra"}
    opt, sched, loop = {}, {}, {}
    for key, value in extra.items():
        if not isinstance(key, str):
            raise ValueError(f"{key!r}: option names are text")
        if key in named or key in _NAMED_ELSEWHERE:
            field = key if key in named else _NAMED_ELSEWHERE[key]
            raise ValueError(f"{key}: RunConfig names this one; set training.{field} instead")
        if key in _CHOSEN_BY_TUNESMITH:
            raise ValueError(f"{key}: Tunesmith sets this itself; remove it")
        if key in opt_keys:
            opt[key] = tuple(value) if isinstance(value, list) else value
        elif key in sched_keys:
            sched[key] = value
        elif key in LOOP_OPTIONS:
            loop[key] = value
        elif key in HF_ALIASES and key in ok:
            continue  # resolved below, after the plain names
        else:
            close = difflib.get_close_matches(key, ok + sorted(named), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            what = f"{optimizer_class(optimizer).__name__} (training.optimizer {optimizer})"
            raise ValueError(f"{key} is not an option of {what}, the {lr_scheduler} schedule or the training "
                             f"loop{hint} (accepted: {', '.join(ok)})")
    for alias, (target, index) in HF_ALIASES.items():
        if alias not in extra:
            continue
        if target in extra:
            raise ValueError(f"{alias}: give {target} or {alias}, not both")
        if index is None:
            opt[target] = extra[alias]
        else:
            pair = list(opt.get(target) or inspect.signature(optimizer_class(optimizer).__init__)
                        .parameters[target].default)
            pair[index] = extra[alias]
            opt[target] = tuple(pair)
    return opt, sched, loop


def check(extra: dict[str, Any], optimizer: str, lr_scheduler: str, learning_rate: float) -> None:
    """Names and values: the classes' own checks run on a throwaway tensor. ValueError, one line."""
    opt, sched, loop = split(extra, optimizer, lr_scheduler)
    for key, value in extra.items():  # .inf / .nan are never a meaningful beta, epsilon or cycle count
        if any(isinstance(x, float) and not math.isfinite(x) for x in (value if isinstance(value, list) else [value])):
            raise ValueError(f"{key}: {value!r} is not a finite number")
    ws = loop.get("warmup_steps")
    if ws is not None and (isinstance(ws, bool) or not isinstance(ws, int) or ws < 0):
        raise ValueError(f"warmup_steps: a whole number of steps, 0 or more (got {ws!r})")
    try:
        probe = _probe_optimizer(optimizer_class(optimizer), learning_rate, **opt)
        if sched:
            from transformers import get_scheduler

            # no warmup: building it evaluates the decay at step 0, which reads every option
            get_scheduler(lr_scheduler, probe, num_warmup_steps=0, num_training_steps=10,
                          scheduler_specific_kwargs=sched)
    except (TypeError, ValueError, RuntimeError) as e:
        keys = ", ".join(sorted({**opt, **sched}))
        raise ValueError(f"{keys}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


def apply(optimizer, scheduler, t, max_steps: int):
    """Set training.extra on the built optimizer and schedule (before the first step); returns the
    schedule to use (a new one when a schedule or warmup option changed it)."""
    if not t.extra:
        return scheduler
    opt, sched, loop = split(t.extra, t.optimizer, t.lr_scheduler)
    held = set(optimizer.defaults)
    skipped = sorted(k for k in opt if k not in held)  # an 8-bit-only option on the CPU's AdamW
    if skipped:
        log.info("training.extra: %s not used: the CPU trains with %s", ", ".join(skipped), type(optimizer).__name__)
    for group in optimizer.param_groups:
        group.update({k: v for k, v in opt.items() if k in held})
    if sched or "warmup_steps" in loop:
        from transformers import get_scheduler

        warmup = loop.get("warmup_steps", math.ceil(t.warmup_ratio * max_steps))
        for group in optimizer.param_groups:  # start the new schedule from the peak rate again
            group["lr"] = group.get("initial_lr", group["lr"])
        scheduler = get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=warmup,
                                  num_training_steps=max_steps, scheduler_specific_kwargs=sched or None)
    log.info("training.extra: %s", ", ".join(f"{k}={v!r}" for k, v in {**opt, **sched, **loop}.items()
                                              if k not in skipped))
    return scheduler
