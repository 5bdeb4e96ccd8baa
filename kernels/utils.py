"""Small helpers shared by the kernel files: block sizing, allocation, checks.

`empty()` is how every launcher allocates its outputs. Tests set
TUNESMITH_POISON_OUTPUTS=1 so that fresh buffers come back full of NaN (or
0x7F.. for integers): a kernel that forgets to write an element then fails its
test instead of passing on whatever the allocator happened to hand out.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

MAX_FUSED_SIZE = 65536  # largest row a one-program-per-row kernel keeps in registers


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def next_power_of_2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def calculate_settings(n: int) -> tuple[int, int]:
    """BLOCK covering a row of n elements, and num_warps for it.

    Warps grow with the block so each thread holds ~8-16 elements; this is the
    usual choice for row-wise reductions and is not tuned per GPU.
    """
    block = next_power_of_2(n)
    if block > MAX_FUSED_SIZE:
        raise ValueError(f"row of {n} elements is longer than {MAX_FUSED_SIZE}")
    if block >= 32768:
        warps = 32
    elif block >= 8192:
        warps = 16
    elif block >= 2048:
        warps = 8
    else:
        warps = 4
    return block, warps


def _poison() -> bool:
    return os.environ.get("TUNESMITH_POISON_OUTPUTS", "0") == "1"


def empty(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """torch.empty, or a NaN-filled buffer under TUNESMITH_POISON_OUTPUTS=1."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _poison():
        if out.is_floating_point():
            out.fill_(float("nan"))
        else:
            out.fill_(torch.iinfo(dtype).max)
    return out


def empty_like(t: torch.Tensor) -> torch.Tensor:
    return empty(t.shape, t.dtype, t.device)


def contiguous_2d(x: torch.Tensor) -> torch.Tensor:
    """View x as (rows, last_dim), copying only if the last dim is not dense."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2


@functools.lru_cache(maxsize=None)
def cuda_capability() -> tuple[int, int] | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the GEMMs run in: autocast's when it is on (as stock layers would), else x's."""
    dev = x.device.type
    try:
        on = torch.is_autocast_enabled(dev)
        dt = torch.get_autocast_dtype(dev)
    except TypeError:  # older torch without the device argument
        on, dt = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return dt if on and x.is_floating_point() else x.dtype


def no_autocast(x: torch.Tensor):
    """Inside the fused ops every dtype is explicit; autocast would re-cast in-place GEMMs.
    (A no-op context when autocast is off: entering torch.autocast costs microseconds per call.)"""
    dev = x.device.type
    try:
        on = torch.is_autocast_enabled(dev)
    except TypeError:
        on = torch.is_autocast_enabled()
    return torch.autocast(device_type=dev, enabled=False) if on else contextlib.nullcontext()
