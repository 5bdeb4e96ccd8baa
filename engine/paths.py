"""Where Tunesmith keeps things: TUNESMITH_HOME, bundled data and assets."""

from __future__ import annotations

import os
from pathlib import Path

_PKG_ROOT = Path(__file__).resolve().parent.parent


def home() -> Path:
    """$TUNESMITH_HOME, default ~/.tunesmith; created on first use."""
    p = Path(os.environ.get("TUNESMITH_HOME") or Path.home() / ".tunesmith").expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def _sub(name: str) -> Path:
    p = home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir() -> Path:
    return _sub("runs")


def exports_dir() -> Path:
    return _sub("exports")


def uploads_dir() -> Path:
    return _sub("uploads")


def db_path() -> Path:
    return home() / "tunesmith.db"


def data_dir() -> Path:
    """The bundled datasets (data/ in the repo, tunesmith/data when installed)."""
    import tunesmith.data

    return Path(tunesmith.data.__file__).resolve().parent


def assets_dir() -> Path:
    import tunesmith.assets

    return Path(tunesmith.assets.__file__).resolve().parent


def demo_model_dir() -> Path:
    return assets_dir() / "demo-model"
