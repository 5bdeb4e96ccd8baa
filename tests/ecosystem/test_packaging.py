"""The folder -> package mapping is declared in pyproject.toml, and a wheel built from it holds
every package under tunesmith.* with its data (and no top-level engine/kernels module)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"engine", "kernels", "studio", "cli", "data", "assets"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_declared():
    st = _setuptools()
    assert not (ROOT / "setup.py").exists()  # the mapping is not computed in code any more
    assert st["package-dir"] == {"tunesmith": "tunesmith", **{f"tunesmith.{f}": f for f in FOLDERS}}
    found = {"tunesmith"}
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            if "__pycache__" not in rel:
                found.add("tunesmith." + ".".join(rel))
    assert set(st["packages"]) == found, "add new packages to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("tunesmith-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tops == {"tunesmith", f"tunesmith-{version}.dist-info"}  # no top-level engine/ or kernels/
    for must in ("tunesmith/engine/compat/llamafactory.py", "tunesmith/engine/gguf/writer.py", "tunesmith/kernels/__init__.py",
                 "tunesmith/cli/serve.py", "tunesmith/data/dataset_info.json", "tunesmith/assets/demo-model/model.safetensors",
                 "tunesmith/assets/demo-model/tokenizer.json", "tunesmith/studio/app.py"):
        assert must in names, must
