"""Training objectives: one file per objective, found by name.

    from tunesmith.engine.objectives import get_objective, names
    obj = get_objective(cfg.objective)(cfg)          # an Objective instance for this run
    train_rows, eval_rows = obj.prepare(tokenizer)    # lists of dict rows
    batch = obj.collate(rows, layout)                 # tensors for one forward pass (CPU)
    loss, sums = obj.loss(ctx, batch, denom)          # this pass's share of the step loss + metric sums

`RunConfig.objective` names one of them (`sft`, `pretrain`, ...). Every module in this
package is imported on first use, and each registers its class with `@register`: adding
an objective (dpo, orpo, simpo, kto, reward, grpo) is adding a file here, with no change to
the worker, the trainer loop, the CLI or the studio.

The interface an objective implements (see `Objective` below):

- `name`, `description`: the registry key (the value of RunConfig.objective) and one line
  for the studio and the CLI.
- `Settings`: a pydantic model for the objective's own options, or None. They come from
  `RunConfig.objective_settings` (a mapping; YAML `objective_settings: {beta: 0.1}`) and are
  validated when the config is, so a typo fails with the field named.
- `prepare(tokenizer)`: the run's data as (train_rows, eval_rows or None). A row is a dict of
  plain lists (token ids, masks, whatever the objective needs). engine.data does the reading
  and checking; packing (data.packing) is the objective's call.
- `row_tokens(row)`: how many tokens the row puts through the model per forward pass (all its
  sequences together: a preference pair counts chosen + rejected). The loop forms forward
  passes of up to `tokens_per_forward` tokens from these and lengths-groups with them.
- `items(row)`: the row's share of the loss denominator, known on the host (trained tokens for
  sft/pretrain, 1 per pair for preference losses). The loop sums it over the whole optimizer
  step (all micro-batches and ranks) before any forward, so the step loss is
  sum(item losses) / sum(items) however the step is split: no device->host sync needed.
- `collate(rows, layout)`: CPU tensors for one forward pass; `layout` says padding-free
  (one flat sequence, positions restarting per example, optionally padded to a fixed length
  so CUDA graphs can replay) or padded (batch x longest row with masks).
- `loss(ctx, batch, denom)`: returns (loss, sums). `loss` is this pass's part of the step
  loss (already divided by `denom`, the step's items); `sums` maps metric names to 0-dim
  device tensors or ints, summed by the loop over a logging window and read ONCE per log
  step. `ctx` (engine.training.lm.StepContext) gives the model, `ctx.lm.hidden(batch)`,
  `ctx.lm.token_loss(...)` (fused linear + cross-entropy: the logits are never made when the
  kernels apply), `ctx.reference()` (a context manager: the base model with the adapter off,
  for reference log-probs) and `ctx.generate(...)` for on-policy objectives.
- `summarize(sums)`: the sums of a window (host floats) -> the fields of a `train` event
  (e.g. loss, token_accuracy, rewards/margins). `eval` events use the same with prefix eval_.

What it does not know: objectives do not pick devices, optimizers or schedules; the loop
(engine.trainer) owns those, and checkpoints, resume and distributed data sharding.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

from pydantic import BaseModel

_REGISTRY: dict[str, type["Objective"]] = {}
_LOADED = False


class Objective:
    """Base class; subclasses live one per file in this package."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Settings: ClassVar[type[BaseModel] | None] = None
    # Forward passes per row the loss needs with the adapter off (a reference model): the
    # trainer keeps the base weights frozen, so the reference costs no extra memory.
    needs_reference: ClassVar[bool] = False

    def __init__(self, cfg, settings: BaseModel | None = None):
        self.cfg = cfg
        self.settings = settings if settings is not None else parse_settings(self.name, cfg.objective_settings)

    # ---- data -------------------------------------------------------------------
    def prepare(self, tokenizer) -> tuple[list[dict], list[dict] | None]:
        raise NotImplementedError

    def row_tokens(self, row: dict) -> int:
        return len(row["input_ids"])

    def items(self, row: dict) -> int:
        raise NotImplementedError

    def collate(self, rows: list[dict], layout) -> dict[str, Any]:
        raise NotImplementedError

    # ---- loss -------------------------------------------------------------------
    def loss(self, ctx, batch: dict[str, Any], denom: float):
        raise NotImplementedError

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        return dict(sums)


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make `cls` available as RunConfig.objective == cls.name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    """Registered objective names, sft first."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (n != "sft", n))


def get_objective(name: str) -> type[Objective]:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"objective {name!r} is not one of: {', '.join(names())}") from None


def parse_settings(name: str, raw: dict[str, Any] | None) -> BaseModel | None:
    """The objective's validated settings (raises pydantic.ValidationError / KeyError)."""
    cls = get_objective(name)
    if cls.Settings is None:
        if raw:
            raise ValueError(f"objective {name!r} takes no settings (got {', '.join(raw)})")
        return None
    return cls.Settings.model_validate(raw or {})
