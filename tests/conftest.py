"""Shared fixtures: an isolated TUNESMITH_HOME for the whole session, seeds, the demo run."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest

# A repo checkout has a top-level kernels/ folder; never let it shadow HF's `kernels` package.
_REPO = str(Path(__file__).resolve().parent.parent)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _REPO]


@pytest.fixture(autouse=True)
def _seed():
    import torch

    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tunesmith_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("tunesmith-home")
    os.environ["TUNESMITH_HOME"] = str(home)
    return home


@pytest.fixture
def fresh_home(tmp_path, monkeypatch) -> Path:
    """A TUNESMITH_HOME of its own, for tests that check what gets written there."""
    home = tmp_path / "home"
    monkeypatch.setenv("TUNESMITH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def demo_run(tunesmith_home):
    """One finished QLoRA run of the demo model on the identity dataset (shared by several tests)."""
    from tunesmith.engine import jobs
    from tunesmith.engine.catalog import demo_overrides_list
    from tunesmith.engine.config import RunConfig

    cfg = RunConfig().with_overrides(demo_overrides_list() + ["data.datasets=[identity]", "output.run_name=e2e-identity"])
    run_id = jobs.submit(cfg)
    info = jobs.wait(run_id, timeout=600)
    assert info.status == "completed", info.error
    return info
