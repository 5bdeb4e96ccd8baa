"""The kernels package's imports point one way: no module imports one that imports it back.

Read statically from the source, imports inside functions included (a cycle hidden
behind a function-level import still ties the modules together), so a cycle that
returns fails here with its path.
"""
import ast
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"
PACKAGE = "tunesmith.kernels"


def imports_of(path: Path) -> set[str]:
    """The kernels modules `path` imports (module names without the package), anywhere in it,
    and the other tunesmith packages it imports (as "tunesmith.<name>")."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:  # from . import lora
                out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.update(_absolute(node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                out.update(_absolute(alias.name, []))
    return out


def _absolute(module: str, names: list[str]) -> set[str]:
    if module == PACKAGE:
        return set(names)
    if module.startswith(PACKAGE + "."):
        return {module[len(PACKAGE) + 1:].split(".")[0]}
    if module.startswith("tunesmith."):
        return {".".join(module.split(".")[:2])}
    return set()


def graph() -> dict[str, set[str]]:
    mods = {p.stem: p for p in KERNELS.glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imports_of(p) if m in mods} for name, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n):
        state[n] = 1
        path.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_find_cycle_reports_a_cycle_and_passes_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_function_level_imports_count():
    src = KERNELS / "lora_mlp.py"
    assert "recompute" in imports_of(src) and "lora" in imports_of(src)


def test_kernels_modules_import_each_other_without_cycles():
    edges = graph()
    assert {"checkpoint", "layer_graphs", "patching", "lora_mlp", "lora"} <= edges.keys()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle in kernels/: " + " -> ".join(cycle)


def test_kernels_never_import_the_engine_or_the_studio():
    for path in KERNELS.glob("*.py"):
        outside = {m for m in imports_of(path) if m.startswith("tunesmith.")}
        assert not outside, f"{path.name} imports {sorted(outside)}: kernels must not depend on them"
