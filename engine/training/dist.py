"""Rank helpers: the loop runs the same under torchrun (one process a GPU) or alone.

When torch.distributed is initialized, every rank computes the same row order, takes its
share of each optimizer step (rows i with i % world == rank), and gradients of the trainable
parameters are summed across ranks before the optimizer step (the loss of each rank is
already divided by the whole step's item count, so the sum is the step's gradient). Rank 0
alone writes events, checkpoints and the adapter. Under FSDP (engine/training/fsdp.py) the
sharded parameters' gradients are summed by FSDP itself and skipped here.
"""

from __future__ import annotations

import torch


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if initialized() else 0


def world() -> int:
    return torch.distributed.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def _sharded(t) -> bool:
    from .fsdp import is_dtensor

    return is_dtensor(t)


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum .grad of `params` over ranks, in one flat buffer per dtype. FSDP's sharded parameters are
    skipped: their gradients were already summed by its reduce-scatter."""
    if world() == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
        if _sharded(p):
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        off = 0
        for g in grads:
            g.copy_(flat[off:off + g.numel()].view_as(g))
            off += g.numel()


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ that also takes FSDP's sharded gradients: the norm over every
    rank's shards and the whole (already summed) gradients, as a plain tensor on every rank."""
    grads = [p.grad for p in params if p.grad is not None]
    sharded = [g.to_local() for g in grads if _sharded(g)]
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    whole = [g for g in grads if not _sharded(g)]
    dev = sharded[0].device
    sq = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in sharded]).square().sum()
    torch.distributed.all_reduce(sq)
    if whole:
        sq = sq + torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32).to(dev) for g in whole]).square().sum()
    total = sq.sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in sharded + whole:
        g.mul_(coef.to(g.device, g.dtype))
    return total


def all_reduce_sum(values: list[float], device) -> list[float]:
    if world() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device) -> bool:
    """True on every rank when it is True on any (e.g. a stop request seen by rank 0)."""
    if world() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if world() > 1:
        torch.distributed.barrier()
