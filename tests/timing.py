"""Timeouts for tests that train: scaled by how busy or slow this machine is right now.

    from timing import slow_timeout, wait_for_run
    jobs.wait(run_id, timeout=slow_timeout(60))   # 60 s of work on the idle reference machine
    wait_for_run(run_id, 60)                      # the same, re-measured while the run goes on

A plain module, not conftest.py: tests/studio has a conftest of its own, and `from conftest import`
would find whichever of the two was imported first.
"""

from __future__ import annotations

import os
import time

# Best of three runs of a fixed matmul loop on an idle 2-core x86 machine (the CI machine), seconds.
_REFERENCE_S = 0.25
_speed: float | None = None
_measured_at = 0.0
_MAX_AGE_S = 60.0  # the load other work puts on the machine changes within minutes


def speed_factor() -> float:
    """How many times slower this machine is right now than the idle 2-core machine the test budgets
    were measured on (>= 1): the larger of a timed matmul loop and the load average per core.
    Measured again when the last measurement is over a minute old (it takes about a second)."""
    global _speed, _measured_at
    if _speed is None or time.monotonic() - _measured_at > _MAX_AGE_S:
        import torch

        a = torch.randn(384, 384)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(100):
                a @ a
            best = min(best, time.perf_counter() - t)
        try:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            load = 0.0
        _speed = max(1.0, best / _REFERENCE_S, load)
        _measured_at = time.monotonic()
    return _speed


def slow_timeout(idle_seconds: float, cap: float = 3600.0) -> float:
    """A timeout for work that takes `idle_seconds` on the idle reference machine: three times that,
    scaled by how slow this machine is now (another job sharing the cores, a slower CPU)."""
    return min(cap, 3 * idle_seconds * speed_factor())


def wait_for_run(run_id: str, idle_seconds: float, cap: float = 3600.0):
    """jobs.wait for a run that takes `idle_seconds` on the idle reference machine. The budget is
    slow_timeout(idle_seconds), measured again every half minute while the run goes on: a machine that
    gets busier during the run (other jobs starting) gets the longer budget its new speed calls for."""
    from tunesmith.engine import jobs

    t0 = time.monotonic()
    budget = slow_timeout(idle_seconds, cap)
    while True:
        try:
            return jobs.wait(run_id, timeout=30)
        except TimeoutError:
            budget = max(budget, slow_timeout(idle_seconds, cap))
            if time.monotonic() - t0 > budget:
                raise TimeoutError(f"run {run_id} still not finished after {budget:.0f} s "
                                   f"(budget: 3 x {idle_seconds:.0f} s x this machine's slowness)") from None


def wait_until(predicate, timeout: float, what: str, poll: float = 0.2):
    """predicate()'s first truthy value, polled every `poll` s; AssertionError naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
