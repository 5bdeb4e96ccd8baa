"""The machine's GPUs (name, total and free memory) and which ones a run gets.

    gpus = list_gpus()                                   # [] on a machine without CUDA GPUs
    pick = pick_gpus(cfg.resources.gpus, gpus, busy={0}) # [1] / None = wait / GpuRequestError

GPUs are read with `nvidia-smi`, not torch: creating a CUDA context in the
studio process would hold ~500 MB on every GPU for as long as the studio
runs. Indices are nvidia-smi's (PCI bus order); the launcher sets
CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA numbers them the same way, and
CUDA_VISIBLE_DEVICES to the GPUs a run was given.

What it does not know: memory other programs will take later, and GPUs that
CUDA_VISIBLE_DEVICES hides from the studio itself (they are listed anyway:
the studio's own environment does not limit its runs).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Literal, Sequence

from .errors import ConfigError

GB = 1e9  # GPU makers count memory in GB; so do nvidia-smi users


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int

    def label(self) -> str:
        """'GPU 0: NVIDIA H100 80GB HBM3, 79.1 of 81.6 GB free'."""
        return f"GPU {self.index}: {self.name}, {self.free_bytes / GB:.1f} of {self.total_bytes / GB:.1f} GB free"


_cache: tuple[float, list[GpuInfo]] | None = None
CACHE_SECONDS = 2.0  # the studio asks on every form change; nvidia-smi takes ~50 ms


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,nounits` (MiB)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        try:
            total, free = int(float(parts[2]) * 2**20), int(float(parts[3]) * 2**20)
        except ValueError:  # "[N/A]" on some virtualised GPUs
            continue
        out.append(GpuInfo(int(parts[0]), parts[1], total, free))
    return out


def list_gpus(fresh: bool = False) -> list[GpuInfo]:
    """The CUDA GPUs on this machine; [] when there is none (or no driver)."""
    global _cache
    now = time.monotonic()
    if not fresh and _cache is not None and now - _cache[0] < CACHE_SECONDS:
        return list(_cache[1])
    exe = shutil.which("nvidia-smi")
    gpus: list[GpuInfo] = []
    if exe:
        try:
            res = subprocess.run(
                [exe, "--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10,
            )
            if res.returncode == 0:
                gpus = parse_nvidia_smi(res.stdout)
        except (OSError, subprocess.TimeoutExpired):
            gpus = []
        if not gpus and _cache is not None and _cache[1]:
            # A driver hiccup (nvidia-smi timing out under load) must not turn a GPU machine into a
            # CPU-only one for the scheduler: keep the last answer.
            gpus = _cache[1]
    _cache = (now, gpus)
    return list(gpus)


class GpuRequestError(ConfigError):
    """resources.gpus asks for GPUs this machine does not have."""


GpuRequest = Literal["auto"] | int | list[int]


def check_request(request: GpuRequest, gpus: Sequence[GpuInfo], processes: int | None = None) -> None:
    """Refuse, before a run is queued, a request this machine can never satisfy."""
    have = sorted(g.index for g in gpus)
    where = f"this machine has {len(have)} GPU{'s' if len(have) != 1 else ''}" + (
        f" ({', '.join(map(str, have))})" if have else "")
    if have and processes is not None and processes != count(request, gpus):
        raise GpuRequestError(f"resources.processes: {processes} processes on {count(request, gpus)} GPU(s); on GPUs "
                              "it is one process per GPU. Leave processes empty and set resources.gpus instead.")
    if request == "auto":
        return
    if not have:
        raise GpuRequestError(f"resources.gpus: {request!r} asks for GPUs but {where}. Use gpus: auto "
                              "(trains on the CPU), or processes: 2 to try several CPU processes.")
    if isinstance(request, int) and request > len(have):
        raise GpuRequestError(f"resources.gpus: asks for {request} GPUs but {where}. Ask for at most {len(have)}.")
    if isinstance(request, list):
        missing = [i for i in request if i not in have]
        if missing:
            raise GpuRequestError(f"resources.gpus: no GPU {', '.join(map(str, missing))}; {where}. "
                                  "Pick from those, or use auto.")


def count(request: GpuRequest, gpus: Sequence[GpuInfo]) -> int:
    """How many GPUs the request needs (auto = 1; 0 on a machine without GPUs)."""
    if not gpus:
        return 0
    if request == "auto":
        return 1
    return request if isinstance(request, int) else len(request)


def pick_gpus(request: GpuRequest, gpus: Sequence[GpuInfo], busy: set[int] | frozenset[int]) -> list[int] | None:
    """The GPU indices to start a run on now, or None when it must wait.

    auto and counts take the free GPUs with the most free memory; a list must be
    free as a whole (a run on 0,1 waits for both). [] means the CPU: with no GPUs
    on the machine, only `auto` gets here (check_request refused the rest)."""
    if not gpus:
        return []
    if isinstance(request, list):
        return sorted(request) if not set(request) & set(busy) else None
    n = count(request, gpus)
    free = sorted((g for g in gpus if g.index not in busy), key=lambda g: (-g.free_bytes, g.index))
    if len(free) < n:
        return None
    return sorted(g.index for g in free[:n])


def wanted(request: GpuRequest, gpus: Sequence[GpuInfo]) -> set[int]:
    """GPUs a waiting run may end up on: the ones it names, or all of them for auto / a count.
    Later runs in the queue may not take these (so a big run is not starved)."""
    if isinstance(request, list):
        return set(request)
    return {g.index for g in gpus}
