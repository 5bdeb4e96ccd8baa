"""Fixtures for the GGUF tests: tiny models built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tinymodels.py

from tinymodels import build_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """tiny_model(family, **build_kwargs) -> Path of a merged HF folder, built once per session."""
    cache: dict[tuple, Path] = {}

    def make(family: str, **kwargs) -> Path:
        key = (family, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            cache[key] = build_model(family, tmp_path_factory.mktemp(f"hf-{family}"), **kwargs)
        return cache[key]

    return make
