"""Other tools' files, read as Tunesmith's: LLaMA-Factory training YAML (llamafactory.py).

    cfg, translation = read_config("llama3_lora_sft.yaml")   # translation is None for a Tunesmith YAML
"""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from .llamafactory import Translation, is_llamafactory, load_run_config, translate

__all__ = ["Translation", "is_llamafactory", "load_run_config", "read_config", "translate"]


def read_config(path: str | Path, overrides: list[str] | None = None,
                register: bool = False) -> tuple[RunConfig, Translation | None]:
    """A Tunesmith or LLaMA-Factory YAML file -> (RunConfig, the translation report or None)."""
    from ..config import read_config_text

    return load_run_config(read_config_text(path), str(Path(path)), overrides, base_dir=Path.cwd(), register=register)
