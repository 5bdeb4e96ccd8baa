"""The worker's side of multi-process training: join torchrun's process group, pick this rank's device.

    ctx = distributed.init()      # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK; a no-op alone
    ctx.is_main, ctx.rank, ctx.world, ctx.device_index
    distributed.shutdown()

engine.launcher starts `torchrun --nproc-per-node N -m tunesmith.engine.worker RUN_DIR`
with CUDA_VISIBLE_DEVICES naming the run's GPUs; each rank trains on GPU LOCAL_RANK
of those (NCCL), or on the CPU (gloo) when there is none. The training loop's own
rank helpers (engine/training/dist.py) shard the data, sum gradients and let rank 0
alone write; this module only sets the group up and tears it down.

Failure: torchrun's agent stops every rank when one dies and exits non-zero; the job
manager reports the run failed with worker.log's tail, where each line names its rank.
A rank blocked in a collective whose peer died gets an error within TIMEOUT.

Whether the ranks each hold the whole model (DDP) or shard it (FSDP) is the trainer's
choice (engine/training/fsdp.py, resources.strategy); the process group is the same.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

log = logging.getLogger("tunesmith.distributed")

# How long a collective may wait for a peer before it fails (a dead rank, a stuck GPU).
# Loading a large model on one rank while another waits at the first collective counts too.
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class RankContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device_index(self) -> int:
        """The CUDA device (among the visible ones) this rank trains on."""
        return self.local_rank


def from_env(env: dict[str, str] | None = None) -> RankContext:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""
    env = os.environ if env is None else env
    return RankContext(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init() -> RankContext:
    """Join the process group when started by torchrun with more than one process."""
    ctx = from_env()
    if ctx.world <= 1:
        return ctx
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    log.info("rank %d of %d (%s, local rank %d)", ctx.rank, ctx.world, backend, ctx.local_rank)
    return ctx


def shutdown() -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a peer already gone: nothing left to tear down
        pass


def peer_lost(e: BaseException) -> bool:
    """Is `e` a collective failing because another rank died (gloo/NCCL connection errors)?"""
    text = f"{type(e).__name__}: {e}".lower()
    return any(k in text for k in ("connection reset", "connection closed", "gloo", "nccl", "broken pipe",
                                   "timed out", "socket"))


class NullEvents:
    """What ranks other than 0 get instead of an EventWriter: they never write the run folder."""

    def add_sink(self, sink) -> None:
        pass

    def write(self, type_: str, **fields) -> None:
        pass

    def status(self, status: str, message: str = "", **extra) -> None:
        pass


def sync_from_rank0(model) -> None:
    """Give every rank rank 0's trainable weights (what DDP does when it wraps a model): the
    adapter's random init must be the same everywhere, or the summed gradients mean nothing."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    import torch

    nccl = dist.get_backend() == "nccl"
    for p in model.parameters():
        if p.requires_grad:
            if nccl and p.device.type == "cpu":  # a model loaded on the CPU for FSDP to shard: NCCL sends GPU tensors
                t = p.data.to(torch.device("cuda", torch.cuda.current_device()))
                dist.broadcast(t, src=0)
                p.data.copy_(t.cpu())
            else:
                dist.broadcast(p.data, src=0)
