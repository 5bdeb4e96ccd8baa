"""Pinned host <-> device copy bandwidth (what offloaded checkpoints can move per layer)."""
import time

import torch

for mb in (16, 32, 128):
    n = mb * 1024**2 // 2
    d = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    h = torch.empty(n, dtype=torch.bfloat16, pin_memory=True)
    for name, fn in (("D2H", lambda: h.copy_(d, non_blocking=True)), ("H2D", lambda: d.copy_(h, non_blocking=True))):
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / 20
        print(f"{name} {mb} MiB: {mb / 1024 / dt:.1f} GiB/s ({dt * 1e3:.2f} ms)")
