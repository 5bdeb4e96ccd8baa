"""Recognise a full disk behind any write failure and say so in one line.

    reason = disk_full_reason(exc, folder, needed_bytes=...)   # None when the disk is not the cause

A full disk surfaces as OSError(ENOSPC) from plain writes, but as a
SafetensorError ("No space left on device (os error 28)") from safetensors and
as a RuntimeError ("PytorchStreamWriter failed writing file ...") from
torch.save; all of them, anywhere in the exception chain, mean the same thing
to the user: which folder, how much room is free, how much is needed.

The ballast (`reserve` / `release`): the worker holds a small file on the run's
disk and deletes it when it fails, so the failure reason, the log and the
`failed` event still fit on a disk that training filled to the last byte.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

# "unexpected pos": torch.save's zip writer when a write came up short, which on a local disk means it is full
_FULL_TEXT = ("no space left on device", "disk quota exceeded", "file write failed", "database or disk is full",
              "os error 28", "unexpected pos")
BALLAST = ".tunesmith-reserve"
BALLAST_BYTES = 1 << 20


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def is_disk_full(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(e).lower() for t in _FULL_TEXT):
            return True
    return False


def failed_path(exc: BaseException) -> Path | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.filename:
            return Path(e.filename)
    return None


def free_bytes(folder: Path) -> int | None:
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def disk_full_reason(exc: BaseException, folder: Path, needed_bytes: int | None = None) -> str | None:
    """'No space left on device writing FOLDER (...)' when `exc` comes from a full disk, else None."""
    if not is_disk_full(exc):
        return None
    where = failed_path(exc)
    where = where.parent if where is not None and where.suffix else where
    where = where or Path(folder)
    free = free_bytes(where)
    parts = [f"free now: {human(free)}"] if free is not None else []
    if needed_bytes:
        parts.append(f"needs about {human(needed_bytes)}")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"No space left on device while writing {where}{detail}. Free some disk space, then try again."


def reserve(folder: Path) -> None:
    """Hold BALLAST_BYTES of real blocks in `folder` (best effort)."""
    p = Path(folder) / BALLAST
    try:
        with open(p, "wb") as f:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, BALLAST_BYTES)
            else:
                f.write(b"\0" * BALLAST_BYTES)
    except OSError:
        p.unlink(missing_ok=True)


def release(folder: Path) -> None:
    (Path(folder) / BALLAST).unlink(missing_ok=True)
