"""A torch profiler over a few steps of a real run, for engineers asking where a step's time goes.

    TUNESMITH_PROFILE_STEPS=4-6 tunesmith train run.yaml     # profile optimizer steps 4..6 (1-based)
    -> RUN_DIR/profile.txt: top device kernels, top host ops, the device's busy share and its
       largest idle gaps (a gap after a kernel means the host fell behind or waited on a sync)

    prof = StepProfiler.from_env(run_dir)     # None when the variable is unset
    prof.before(step)                          # at the top of optimizer step `step` (1-based)
    prof.after(step)                           # at its end; writes the report after the last one

Off unless the variable is set: the profiler's own overhead would otherwise slow every run.
Only rank 0 profiles. What it does not know: anything outside the steps named (loading, eval).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

ENV = "TUNESMITH_PROFILE_STEPS"


def parse_steps(text: str) -> tuple[int, int]:
    """'4-6' -> (4, 6); '5' -> (5, 5)."""
    a, _, b = text.strip().partition("-")
    try:
        first, last = int(a), int(b or a)
    except ValueError:
        first, last = 0, 0  # refused below with the form to use
    if first < 1 or last < first:
        raise ValueError(f"{ENV}={text!r}: give steps as FIRST-LAST, 1-based, e.g. 4-6")
    return first, last


def gaps(prof, top: int = 15) -> list[str]:
    """Where the device sat idle in the profiled window: its busy share, and the largest gaps with the
    kernels on either side."""
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA)
    if not kernels:
        return ["no device events"]
    busy, end, holes = 0.0, kernels[0][0], []
    prev = kernels[0][2]
    for s, e, name in kernels:
        if s > end:
            holes.append((s - end, prev, name))
        if e > end:
            busy += e - max(s, end)
            end = e
            prev = name
    span = max(end - kernels[0][0], 1e-9)
    out = [f"device busy {busy / 1e3:.1f} ms of {span / 1e3:.1f} ms ({busy / span:.1%}); "
           f"{len(holes)} gaps, {sum(h[0] for h in holes) / 1e3:.1f} ms idle; "
           f"gaps > 50 us: {sum(h[0] for h in holes if h[0] > 50) / 1e3:.1f} ms"]
    by_pair: dict = {}
    for d, a, b in holes:
        k = (a[:50], b[:50])
        n, t = by_pair.get(k, (0, 0.0))
        by_pair[k] = (n + 1, t + d)
    for (a, b), (n, t) in sorted(by_pair.items(), key=lambda kv: -kv[1][1])[:top]:
        out.append(f"  {t / 1e3:8.2f} ms in {n:5d} gaps  after {a}  before {b}")
    return out


def host_stalls(prof) -> list[str]:
    """Host calls that wait on the device or the allocator, with their total time."""
    stalls: dict[str, tuple[int, float]] = {}
    for e in prof.events():
        if any(k in e.name for k in ("Synchronize", "cudaFree", "cudaMalloc", "cudaHostAlloc", "cudaEventQuery",
                                     "aten::item", "aten::_local_scalar_dense", "aten::nonzero")):
            n, t = stalls.get(e.name, (0, 0.0))
            stalls[e.name] = (n + 1, t + e.cpu_time_total)
    return [f"  host: {name} x{n}, {t / 1e3:.2f} ms" for name, (n, t) in sorted(stalls.items(), key=lambda kv: -kv[1][1])]


def report(prof, title: str) -> str:
    cuda = torch.cuda.is_available()
    lines = [title, ""]
    if cuda:
        lines.append(prof.key_averages().table(sort_by="device_time_total", row_limit=40, max_name_column_width=80))
    lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=80))
    if cuda:
        lines += gaps(prof)
    lines += host_stalls(prof)
    return "\n".join(lines) + "\n"


class StepProfiler:
    def __init__(self, run_dir: Path, first: int, last: int):
        self.path, self.first, self.last = Path(run_dir) / "profile.txt", first, last
        self.prof = None
        self.t0 = 0.0

    @classmethod
    def from_env(cls, run_dir: Path, main: bool = True) -> StepProfiler | None:
        text = os.environ.get(ENV, "").strip()
        if not text or not main:
            return None
        return cls(run_dir, *parse_steps(text))

    def before(self, step: int) -> None:
        if step != self.first:
            return
        import time

        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.prof = profile(activities=acts)
        self.prof.__enter__()
        self.t0 = time.perf_counter()

    def after(self, step: int) -> None:
        if self.prof is None or step < self.last:
            return
        import time

        from ..atomic import write_text

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall = time.perf_counter() - self.t0
        self.prof.__exit__(None, None, None)
        n = self.last - self.first + 1
        title = f"steps {self.first}-{self.last}: {wall:.3f} s wall, {wall / n * 1e3:.1f} ms per step (with the profiler)"
        write_text(self.path, report(self.prof, title))
        self.prof = None
