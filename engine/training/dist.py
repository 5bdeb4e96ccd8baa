"""Rank helpers: the loop runs the same under torchrun (one process a GPU) or alone.

When torch.distributed is initialized, every rank computes the same row order, takes its
share of each optimizer step (rows i with i % world == rank), and gradients of the trainable
parameters are summed across ranks before the optimizer step (the loss of each rank is
already divided by the whole step's item count, so the sum is the step's gradient). Rank 0
alone writes events, checkpoints and the adapter.
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


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum .grad of `params` over ranks, in one flat buffer per dtype."""
    if world() == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in params:
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
