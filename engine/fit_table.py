"""README's "How big a GPU" table, computed from the fit estimate (fit.py) so it can be regenerated.

    python -m tunesmith.engine.fit_table     # prints the Markdown table README.md quotes

The model shapes are copied from each model's published config.json (no download needed); the
settings are the ones README names: batch 2 x 1024 tokens, LoRA r=16 on all linear layers, AdamW.
tests/test_first_hour.py checks README's table is this output.
"""

from __future__ import annotations

from .fit import GB, GiB, ModelShape, Settings, estimate

# name -> (hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, tied embeddings)
MODELS: dict[str, ModelShape] = {
    "Qwen2.5-0.5B": ModelShape(896, 4864, 24, 14, 2, 64, 151936, True),
    "Llama-3.2-1B": ModelShape(2048, 8192, 16, 32, 8, 64, 128256, True),
    "Qwen2.5-1.5B": ModelShape(1536, 8960, 28, 12, 2, 128, 151936, True),
    "Llama-3.2-3B": ModelShape(3072, 8192, 28, 24, 8, 128, 128256, True),
    "Mistral-7B-v0.3": ModelShape(4096, 14336, 32, 32, 8, 128, 32768, False),
    "Llama-3.1-8B": ModelShape(4096, 14336, 32, 32, 8, 128, 128256, False),
    "Qwen2.5-14B": ModelShape(5120, 13824, 48, 40, 8, 128, 152064, False),
}

COLUMNS: list[tuple[str, dict]] = [
    ("QLoRA, memory mode", dict(method="qlora", kernels=True, memory_mode="memory")),
    ("QLoRA, stock path", dict(method="qlora", kernels=False, gradient_checkpointing=True)),
    ("LoRA 16-bit, memory mode", dict(method="lora", kernels=True, memory_mode="memory")),
    ("full fine-tune, stock path", dict(method="full", kernels=False, gradient_checkpointing=True)),
]

TOKENS = 2 * 1024  # batch 2 x cutoff 1024
# Common cards, consumer then A100/H100/H200; a card's "8 GB" is 8 GiB (141 GB: H200).
GPU_SIZES_GB = (8, 12, 16, 24, 40, 48, 80, 141)
USABLE = 0.95  # of the card: the driver, a display and fragmentation take the rest
TIGHT = 0.85   # above this share a longer batch or another program on the GPU tips it over


def gpu_size(needs_bytes: float) -> str:
    """The smallest common GPU that holds `needs_bytes`; every GPU of a multi-GPU run holds a full copy
    (DDP: sharding a model across GPUs is not built), so beyond the largest card there is none."""
    for size in GPU_SIZES_GB:
        share = needs_bytes / (size * GiB)
        if share <= USABLE:
            return f"{size} GB, tight" if share > TIGHT else f"{size} GB"
    return "none: needs sharding"


def _gb(x: float) -> str:
    return f"{x:.0f} GB" if x >= 100 else f"{x:.1f} GB"


def table() -> str:
    lines = ["| model | " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for model, shape in MODELS.items():
        cells = []
        for _, kw in COLUMNS:
            needs = estimate(shape, Settings(tokens=TOKENS, lora_r=16, targets="all-linear", **kw)).needs_bytes
            cells.append(f"{_gb(needs / GB)} ({gpu_size(needs)})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
