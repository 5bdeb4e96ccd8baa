"""Text from users, made safe to print: names can hold terminal escape codes."""

from __future__ import annotations

import re

# C0 controls (but tab), DEL and C1 controls: ESC sequences can rewrite a terminal's screen or title.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(s: object) -> str:
    """`s` with every control character shown as its escape (\\x1b), so it prints as what it is."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(s))


def has_control(s: str) -> bool:
    return bool(_CONTROL.search(s))


def one_line(msg: str) -> str:
    """A message as one printable line (the CLI's `error:` line, the studio's toast)."""
    return printable(" ".join(part.strip() for part in str(msg).strip().splitlines() if part.strip()))
