"""No import circle anywhere in the package, counting imports inside functions too.

A circle hidden behind a function-level import still ties the modules together (and breaks
when someone moves the import to the top), so the graph is read from the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[tuple[str, str]]:
    """``(module, name)`` for every ``from module import name`` (``name`` is ``""`` for ``import module``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.update((target, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update((alias.name, "") for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports. ``from package import module`` is an edge to the
    module, not to the package (whose ``__init__`` has already run by then)."""
    found = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found[name] = _imports(path, package)
    graph = {}
    for module, pairs in found.items():
        deps = {f"{target}.{name}" if f"{target}.{name}" in found else target for target, name in pairs}
        graph[module] = {d for d in deps if d in found and d != module}
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(graph[start])
    while todo:
        module = todo.pop()
        if module == goal:
            return True
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return False


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert len(graph) > 80 and "deeplab_resnet.weights.registry" in graph  # the whole package was read
    circles = sorted(m for m in graph if reaches(graph, m, m))
    assert circles == []


def test_a_circle_is_found(tmp_path) -> None:
    """The check itself, on a made-up graph with a circle through three modules."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [m for m in graph if reaches(graph, m, m)] == ["a", "b", "c"]


def test_imports_inside_functions_are_counted(tmp_path) -> None:
    """The check itself: the old circle went through an import inside ``install_from_zip``."""
    module = tmp_path / "registry.py"
    module.write_text("def install():\n    from .convert import convert\n    from ..errors import DeepLabError\n")
    found = _imports(module, "deeplab_resnet.weights")
    assert {("deeplab_resnet.weights.convert", "convert"), ("deeplab_resnet.errors", "DeepLabError")} <= found
