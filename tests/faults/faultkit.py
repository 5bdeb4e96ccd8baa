"""Fault injection helpers: a small real disk (tmpfs) to fill, demo-run configs, the CLI in its own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from timing import wait_until  # noqa: F401  (tests/ is on sys.path; faultkit re-exports it)
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig


def demo_cfg(*extra: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + list(extra))


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`tunesmith ARGS` in a process of its own (it knows only what is on disk)."""
    env = dict(os.environ, TUNESMITH_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "tunesmith.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=str(home.parent))


class SmallDisk:
    """A tmpfs of a few MiB: fill it to leave exactly `free` bytes."""

    def __init__(self, root: Path):
        self.root = root
        self.filler = root / "filler.bin"

    def free(self) -> int:
        return shutil.disk_usage(self.root).free

    def fill(self, leave: int) -> None:
        self.filler.unlink(missing_ok=True)
        size = self.free() - leave
        with open(self.filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, size)
        assert self.free() <= leave + 65536, self.free()

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)


def _mount_tmpfs(where: Path, size_mb: int) -> str | None:
    """Mount a tmpfs; None on success, else why not (the tests that need it are skipped)."""
    if sys.platform != "linux":
        return "tmpfs mounts are a Linux feature"
    if os.geteuid() != 0:
        return "mounting a small tmpfs to fill needs root (CI runs as root)"
    where.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return f"cannot mount a tmpfs here: {p.stderr.strip() or p.returncode}"
    return None
