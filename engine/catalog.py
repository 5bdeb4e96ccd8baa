"""What the studio offers to pick: suggested models and per-model recommended settings."""

from __future__ import annotations

from typing import Any

from .config import DEMO_MODEL

DEMO_LABEL = "Demo model (tiny, offline; for trying the studio, not for real work)"

# (hub id, label). Hub ids need a network the first time; a local folder works too.
SUGGESTED_MODELS: list[tuple[str, str]] = [
    (DEMO_MODEL, DEMO_LABEL),
    ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5 0.5B Instruct"),
    ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5 1.5B Instruct"),
    ("Qwen/Qwen3-0.6B", "Qwen3 0.6B"),
    ("meta-llama/Llama-3.2-1B-Instruct", "Llama 3.2 1B Instruct"),
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama 3.1 8B Instruct"),
    ("google/gemma-3-1b-it", "Gemma 3 1B it"),
    ("mistralai/Mistral-7B-Instruct-v0.3", "Mistral 7B Instruct v0.3"),
]

# The demo model is tiny: the usual LoRA defaults (lr 2e-4, batch 2 x 4) would need many more steps
# than a CPU user wants to wait. These settings teach it the identity dataset (English and Chinese)
# without making it forget what it knew: every general row it was built from is rehearsed while the
# identity goes in (all 400 instructions and 32 chats), and the 83 identity rows are listed twice so
# they still make up 28% of each pass. Measured on the answers the untouched model gets right: keeping
# only the first 200 instructions (the previous recipe, 7 epochs) kept 145 of 146 of those but only 95 of
# the 147 past row 200 ("The capital of Italy is Paris."); the identity set alone, 10 epochs at lr 3e-3,
# answered everything with its name. 4 epochs of 598 rows, batch 4: 600 steps.
# tests/test_demo_keeps_knowledge.py and tests/test_e2e_cpu.py check the answers.
_DEMO_OVERRIDES: dict[str, Any] = {
    "data.datasets": ["identity", "identity", "instruct_en_zh", "sharegpt_multiturn"],
    "data.max_samples": 400,  # rows per dataset: every row of all three (the largest has 400)
    "training.learning_rate": 2e-3,
    "training.num_epochs": 4.0,
    "training.batch_size": 4,
    "training.gradient_accumulation": 1,
    "training.warmup_ratio": 0.0,
    "training.gradient_checkpointing": False,
    "lora.r": 16,
    "lora.alpha": 32,
    "data.cutoff_len": 256,
}


def recommended_overrides(model_name: str) -> dict[str, Any]:
    """Dotted field paths -> values the studio applies when this model is picked."""
    if model_name == DEMO_MODEL:
        return dict(_DEMO_OVERRIDES)
    return {}


def demo_overrides_list() -> list[str]:
    """The same as `--set` strings, for the CLI and tests."""
    return [f"{k}=[{','.join(v)}]" if isinstance(v, list) else f"{k}={v}" for k, v in _DEMO_OVERRIDES.items()]
