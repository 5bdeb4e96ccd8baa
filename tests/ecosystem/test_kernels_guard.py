"""The one guard (tunesmith/__init__.py) against this checkout's kernels/ folder passing for Hugging
Face's `kernels` package, which transformers and bitsandbytes import when they find it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import importlib.util, sys
{first}
import tunesmith
from transformers.utils.import_utils import is_kernels_available
is_kernels_available()  # imports `kernels` when it finds one without a version
spec = importlib.util.find_spec("kernels")
mod = sys.modules.get("kernels")
print("spec", spec.origin if spec else None)
print("module", getattr(mod, "__file__", None))
"""


def _probe(first: str = "", extra_path: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH", "")) if p)
    # cwd = the checkout, as for `python -c` typed in it: sys.path[0] is this folder
    out = subprocess.run([sys.executable, "-c", _PROBE.format(first=first)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def _outside(path: str) -> bool:
    return path == "None" or not path.startswith(str(ROOT / "kernels"))


def test_a_checkout_on_sys_path_does_not_shadow_hf_kernels():
    seen = _probe(extra_path=str(ROOT))  # the checkout both as cwd and on PYTHONPATH
    assert _outside(seen["spec"]) and _outside(seen["module"]), seen


def test_a_kernels_module_imported_from_the_checkout_before_tunesmith_is_dropped():
    seen = _probe(first="import kernels  # this checkout's folder, found through cwd")
    assert _outside(seen["module"]) and _outside(seen["spec"]), seen


def test_tunesmith_kernels_still_import():
    out = subprocess.run([sys.executable, "-c", "import tunesmith.kernels as k; print(k.__name__)"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "tunesmith.kernels", out.stderr[-2000:]
