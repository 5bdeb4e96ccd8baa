"""Recommended training settings for a config and a dataset size, each with the reason for it.

    from tunesmith.engine.recommend import recommend
    for s in recommend(cfg, rows=1200):
        print(s.path, s.value, s.reason.format(**s.values))

A pure function of the config (model, method, objective, batch size) and the
number of training rows. The numbers follow the published guides:

- Unsloth's LoRA hyper-parameter guide: learning rate 2e-4 for LoRA / QLoRA,
  5e-6 for reinforcement learning (GRPO, DPO); 1-3 epochs (more tends to
  memorise); rank 16-32 to start, alpha equal to or twice the rank; an
  effective batch of 16 (2 x 8); a short warm-up.
- LLaMA-Factory's examples: full fine-tuning at 1e-5, rank 8 on small sets,
  reward models at 1e-5; TRL's DPO trainer defaults to 1e-6, so preference
  objectives get the guides' 5e-6 (the upper end of 1e-6..5e-6).

Reasons are English templates with {placeholders} filled from `values`, so
the studio can translate them (studio/locales) and the CLI can print them.

What it does not know: the model's size or the GPU (the fit line in the
studio checks memory), nor how hard the task is: these are starting points.
The embedded demo model is the exception: it is tiny and its tested recipe
(engine.catalog) is returned instead of the guides' numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import DEMO_MODEL, RunConfig

# Objectives that learn from preferences or rewards rather than from answers to copy.
RL_OBJECTIVES = ("grpo",)
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "simpo", "kto")

# The reason templates (translated by the studio: tests/studio/test_i18n.py reads this tuple).
WHY_LR_LORA = "2e-4 is the usual starting point for LoRA and QLoRA (Unsloth's guide)."
WHY_LR_FULL = "Changing every weight needs a gentler step: 1e-5, as in LLaMA-Factory's full fine-tuning examples."
WHY_LR_RL = "Learning from rewards starts from a model that already answers well: 5e-6 keeps it stable (Unsloth's guide)."
WHY_LR_PREF = ("Preference training only nudges a model that already answers well: 5e-6 (Unsloth's guide; TRL's "
               "default is 1e-6).")
WHY_LR_REWARD = "A reward model learns a score on top of the model: 1e-5, as in LLaMA-Factory's reward example."
WHY_EPOCHS_SMALL = "{rows} rows is a small set: 3 passes let the model learn it (the guides say 1-3)."
WHY_EPOCHS_MEDIUM = "{rows} rows: 2 passes learn it without memorising the answers word for word."
WHY_EPOCHS_LARGE = "{rows} rows is plenty: one pass is enough, more tends to memorise the data."
WHY_EPOCHS_UNKNOWN = "The number of rows is not known yet: 3 passes, the top of the guides' 1-3 range."
WHY_EPOCHS_RL = "Reward learning usually takes a single pass over the prompts."
WHY_RANK = "{rows} rows: rank {r} gives the add-on enough room to learn them without memorising."
WHY_RANK_UNKNOWN = "Rank 16 is the guides' starting point when the data size is not known."
WHY_ALPHA = "Alpha twice the rank ({alpha}) lets the add-on learn at a useful pace (Unsloth's guide)."
WHY_ACCUM = "{batch} examples at once x {accum} batches = {total} examples per update, as the guides suggest."
WHY_ACCUM_SMALL = ("{batch} examples at once x {accum} batches = {total} examples per update: a small set still "
                   "gets about 10 updates per pass.")
WHY_WARMUP = "Raising the learning rate over the first 5% of steps avoids large early jumps."
WHY_DEMO = "The built-in demo model is tiny: its tested recipe (more passes, a faster learning rate) teaches it."
REASONS = (WHY_LR_LORA, WHY_LR_FULL, WHY_LR_RL, WHY_LR_PREF, WHY_LR_REWARD, WHY_EPOCHS_SMALL, WHY_EPOCHS_MEDIUM,
           WHY_EPOCHS_LARGE, WHY_EPOCHS_UNKNOWN, WHY_EPOCHS_RL, WHY_RANK, WHY_RANK_UNKNOWN, WHY_ALPHA, WHY_ACCUM,
           WHY_ACCUM_SMALL, WHY_WARMUP, WHY_DEMO)

SMALL_ROWS = 1_000  # below: 3 epochs, rank 8 (LLaMA-Factory's examples train ~1k-row sets at rank 8)
LARGE_ROWS = 10_000  # at and above: 1 epoch
EFFECTIVE_BATCH = 16  # Unsloth's 2 x 8


@dataclass(frozen=True)
class Suggestion:
    """One setting: its dotted config path, the value suggested, and why (a template + its values)."""

    path: str
    value: Any
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    def why(self) -> str:
        return self.reason.format(**self.values)


def _learning_rate(cfg: RunConfig) -> Suggestion:
    if cfg.objective in RL_OBJECTIVES:
        return Suggestion("training.learning_rate", 5e-6, WHY_LR_RL)
    if cfg.objective in PREFERENCE_OBJECTIVES:
        return Suggestion("training.learning_rate", 5e-6, WHY_LR_PREF)
    if cfg.objective == "reward":
        return Suggestion("training.learning_rate", 1e-5, WHY_LR_REWARD)
    if cfg.method in ("full", "freeze"):
        return Suggestion("training.learning_rate", 1e-5, WHY_LR_FULL)
    return Suggestion("training.learning_rate", 2e-4, WHY_LR_LORA)


def _epochs(cfg: RunConfig, rows: int | None) -> Suggestion:
    if cfg.objective in RL_OBJECTIVES:
        return Suggestion("training.num_epochs", 1.0, WHY_EPOCHS_RL)
    if rows is None:
        return Suggestion("training.num_epochs", 3.0, WHY_EPOCHS_UNKNOWN)
    shown = {"rows": f"{rows:,}"}
    if rows < SMALL_ROWS:
        return Suggestion("training.num_epochs", 3.0, WHY_EPOCHS_SMALL, shown)
    if rows < LARGE_ROWS:
        return Suggestion("training.num_epochs", 2.0, WHY_EPOCHS_MEDIUM, shown)
    return Suggestion("training.num_epochs", 1.0, WHY_EPOCHS_LARGE, shown)


def _rank(rows: int | None) -> Suggestion:
    if rows is None:
        return Suggestion("lora.r", 16, WHY_RANK_UNKNOWN)
    r = 8 if rows < SMALL_ROWS else 16 if rows < LARGE_ROWS else 32 if rows < 100_000 else 64
    return Suggestion("lora.r", r, WHY_RANK, {"rows": f"{rows:,}", "r": r})


def _accumulation(cfg: RunConfig, rows: int | None) -> Suggestion:
    batch = cfg.training.batch_size
    # A small set should still get ~10 optimizer updates per pass.
    total = EFFECTIVE_BATCH if rows is None else max(1, min(EFFECTIVE_BATCH, rows // 10))
    accum = max(1, round(total / batch))
    why = WHY_ACCUM if total == EFFECTIVE_BATCH else WHY_ACCUM_SMALL
    return Suggestion("training.gradient_accumulation", accum, why,
                      {"batch": batch, "accum": accum, "total": batch * accum})


def recommend(cfg: RunConfig, rows: int | None) -> list[Suggestion]:
    """Suggested settings for training `cfg` on `rows` rows in all (None: not known), each with its reason.

    Only fields that apply are suggested: rank and alpha for LoRA / QLoRA, not for full or freeze.
    """
    if cfg.model.name_or_path == DEMO_MODEL:
        from .catalog import recommended_overrides

        keep = ("training.learning_rate", "training.num_epochs", "lora.r", "lora.alpha",
                "training.gradient_accumulation", "training.warmup_ratio")
        demo = recommended_overrides(DEMO_MODEL)
        return [Suggestion(p, demo[p], WHY_DEMO) for p in keep if p in demo]
    out = [_learning_rate(cfg), _epochs(cfg, rows)]
    if cfg.method in ("lora", "qlora"):
        rank = _rank(rows)
        alpha = 2 * rank.value
        out += [rank, Suggestion("lora.alpha", alpha, WHY_ALPHA, {"alpha": alpha})]
    out += [_accumulation(cfg, rows), Suggestion("training.warmup_ratio", 0.05, WHY_WARMUP)]
    return out


def training_rows(counts: list[int | None], max_samples: int | None) -> int | None:
    """Rows trained on across datasets (each capped at max_samples); None when any count is unknown."""
    if not counts or any(c is None for c in counts):
        return None
    return sum(min(c, max_samples) if max_samples else c for c in counts)  # type: ignore[type-var]
