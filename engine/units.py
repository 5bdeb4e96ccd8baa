"""Human-readable sizes and durations, shared by reports, the CLI and the studio."""

from __future__ import annotations


def human_size(n: int | float | None) -> str:
    """1536 -> '1.5 KB'; None -> '—'."""
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
