"""Tunesmith: a browser studio for fine-tuning open LLMs.

The code lives in the top-level folders engine/, studio/, kernels/ and cli/,
mapped here by pyproject.toml ([tool.setuptools.package-dir]) as tunesmith.engine, tunesmith.studio, ...

Importing this package first keeps a Tunesmith checkout's top-level kernels/
folder from passing for Hugging Face's `kernels` package (see _unshadow_kernels):
every entry point (the `tunesmith` script, `python -m tunesmith...`, the worker,
tests/conftest.py) goes through here before transformers or bitsandbytes look for it.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _is_checkout(folder: str) -> bool:
    """A Tunesmith source checkout: its kernels/ sits beside engine/ at the top."""
    root = _os.path.abspath(folder or _os.curdir)
    return (_os.path.isfile(_os.path.join(root, "kernels", "patching.py"))
            and _os.path.isfile(_os.path.join(root, "engine", "trainer.py")))


def _unshadow_kernels() -> None:
    """The one guard against the `kernels` name clash.

    transformers and bitsandbytes import Hugging Face's `kernels` package when it is found. With a
    checkout on sys.path (the current folder of `python -c` / `python -m` run inside it, or a
    PYTHONPATH naming it), they would import this repository's kernels/ folder instead and fail
    half-way (`cannot import name 'get_kernel' from 'kernels'`). Tunesmith's own code imports its
    kernels as tunesmith.kernels only, so checkout folders leave sys.path, and a `kernels` module
    already imported from one leaves sys.modules."""
    _sys.path[:] = [p for p in _sys.path if not _is_checkout(p)]
    mod = _sys.modules.get("kernels")
    origin = getattr(mod, "__file__", None) or ""
    if mod is not None and origin and _is_checkout(_os.path.dirname(_os.path.dirname(origin))):
        for name in [n for n in _sys.modules if n == "kernels" or n.startswith("kernels.")]:
            del _sys.modules[name]


_unshadow_kernels()
