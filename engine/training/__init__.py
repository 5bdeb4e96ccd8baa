"""Pieces of Tunesmith's training loop (engine.trainer holds the recipe itself).

    batching.py  rows -> forward passes: padding-free / padded layouts, best-fit-decreasing
                 bins, length-grouped order, fixed-size buckets for CUDA graphs
    lm.py        hidden states and the token loss (fused linear + cross-entropy on GPUs)
    optim.py     optimizer and learning-rate schedule from TrainingConfig
    state.py     checkpoints (written under a temporary name, then renamed) and RNG state
    dist.py      rank helpers for torchrun (data sharding, gradient all-reduce)
    fsdp.py      DDP or FSDP2 for several processes: the choice, fully_shard, whole-state checkpoints
"""
