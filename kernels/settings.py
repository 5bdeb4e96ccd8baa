"""KernelSettings: the options of Tunesmith's kernels, one immutable object per patched model.

    from tunesmith.kernels import KernelSettings, patch
    patch(model, mode="on", settings=KernelSettings(group_nf4=False))

The memory plan (kernels/memory_plan.py) picks them for a run; `patch` and
`apply_memory_plan` attach them to that model's patched modules, whose
forwards pass them to the kernels as arguments. Nothing here is process-wide:
two models patched with different settings in one process run with their own.
"""
from __future__ import annotations

from dataclasses import dataclass

MiB = 1024**2


@dataclass(frozen=True)
class KernelSettings:
    """What the fused kernels may spend memory on. The defaults are speed mode without the cache."""

    # Gate and up NF4 weights dequantize into one buffer and run as ONE GEMM. That buffer is as
    # large as the pair (8B gate+up: 235 MB instead of 117 MB), so memory mode turns it off.
    # Q/K/V are always grouped: together they are smaller than one MLP weight.
    group_nf4: bool = True
    # Keep every NF4 weight dequantized (16-bit, in the layout its forward GEMM reads) for the
    # run: no dequantization per step, for 2 bytes per base parameter (8B: ~13 GiB). The plan
    # turns it on only when it fits beside the activations.
    cache_nf4_weights: bool = False
    # Logits of one chunk of the fused LM head + loss; 256 MiB = 1024 rows of a 128k vocab in
    # bf16. Memory mode uses 64 MiB.
    ce_chunk_bytes: int = 256 * MiB

    def __post_init__(self):
        if self.ce_chunk_bytes <= 0:
            raise ValueError(f"ce_chunk_bytes must be positive, not {self.ce_chunk_bytes}")

    @classmethod
    def for_mode(cls, prefer: str, cache_nf4_weights: bool = False) -> "KernelSettings":
        """The settings of a memory mode: "auto"/"speed" group and may cache; "memory" spends least."""
        if prefer == "memory":
            return cls(group_nf4=False, cache_nf4_weights=False, ce_chunk_bytes=64 * MiB)
        return cls(cache_nf4_weights=cache_nf4_weights)
