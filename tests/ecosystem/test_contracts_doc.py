"""docs/CONTRACTS.md names functions that exist, with the parameters they take."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"
SECTION = re.compile(r"^## [^\n]*", re.M)
CALL = re.compile(r"`(?:engine\.)?([A-Za-z_][\w.]*)\(([^)`]*)\)")


def _resolve(dotted: str, modules: list[str]):
    head, *rest = dotted.split(".")
    for base in [*modules, "tunesmith.engine"]:
        mod = importlib.import_module(base)
        obj = getattr(mod, head, None)
        if obj is None and base == "tunesmith.engine":
            try:
                obj = importlib.import_module(f"tunesmith.engine.{head}")
            except ImportError:
                obj = None
        for part in rest:
            obj = getattr(obj, part, None)
        if callable(obj):
            return obj
    return None


def test_every_documented_call_exists_with_its_parameters():
    text = DOC.read_text()
    bounds = [m.start() for m in SECTION.finditer(text)] + [len(text)]
    checked = 0
    for start, end in zip(bounds, bounds[1:]):
        body = text[start:end]
        modules = re.findall(r"tunesmith\.engine\.\w+", body.splitlines()[0])  # "## Runs (tunesmith.engine.jobs)"
        for name, args in CALL.findall(body):
            fn = _resolve(name, modules)
            assert fn is not None, f"CONTRACTS.md names {name}(), which does not exist"
            params = set(inspect.signature(fn).parameters)
            for arg in (a.split("=")[0].strip() for a in args.split(",")):
                if arg.isidentifier():
                    assert arg in params, f"CONTRACTS.md: {name}() has no parameter {arg!r} ({sorted(params)})"
            checked += 1
    assert checked > 25
