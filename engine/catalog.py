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
# without making it forget what it knew: the 83 identity rows are mixed with the first 200 rows of the
# general instruction set and the 32 multi-turn chats it was built from, so its general answers are
# rehearsed while the identity goes in (the identity set alone, 10 epochs at lr 3e-3, made it answer
# everything with its name). 7 epochs, 553 steps (5 left the Chinese identity answer in English under
# Tunesmith's own loop): about 2 min on 2 idle cores, 4.5 min measured with other work sharing them.
# tests/test_demo_keeps_knowledge.py and tests/test_e2e_cpu.py check the answers.
_DEMO_OVERRIDES: dict[str, Any] = {
    "data.datasets": ["identity", "instruct_en_zh", "sharegpt_multiturn"],
    "data.max_samples": 200,  # rows per dataset: all identity and chat rows, 200 instructions; keeps the demo short
    "training.learning_rate": 2e-3,
    "training.num_epochs": 7.0,
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
