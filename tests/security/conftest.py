"""The security suite's probe count: "security probes: N/N refused, M/M allowed uses work"."""

from __future__ import annotations

import pytest
from secprobe import PROBES, Probes


@pytest.fixture(scope="session")
def probes() -> Probes:
    return PROBES


def pytest_terminal_summary(terminalreporter) -> None:
    if PROBES.refused or PROBES.allowed:
        n_ref = sum(ok for _, ok in PROBES.refused)
        n_ok = sum(ok for _, ok in PROBES.allowed)
        terminalreporter.write_line(f"security probes: {n_ref}/{len(PROBES.refused)} refused, "
                                    f"{n_ok}/{len(PROBES.allowed)} allowed uses work")
        for name, ok in PROBES.refused:
            if not ok:
                terminalreporter.write_line(f"  NOT REFUSED: {name}")
