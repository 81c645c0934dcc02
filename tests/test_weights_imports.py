"""No import circle through the weights package, counting imports inside functions too.

A circle hidden behind a function-level import still ties the modules together (and breaks
when someone moves the import to the top), so the graph is read from the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
OWNED = ("deeplab_resnet.weights", "deeplab_resnet.dataset_info", "deeplab_resnet.cache")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # "from . import module"
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports(path, package)
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


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


def test_no_module_of_the_weights_package_imports_itself_back() -> None:
    graph = import_graph()
    owned = [m for m in graph if m.startswith(OWNED)]
    assert "deeplab_resnet.weights.convert" in owned and "deeplab_resnet.weights.registry" in owned
    circles = [m for m in owned if reaches(graph, m, m)]
    assert circles == []


def test_imports_inside_functions_are_counted(tmp_path) -> None:
    """The check itself: the old circle went through an import inside ``install_from_zip``."""
    module = tmp_path / "registry.py"
    module.write_text("def install():\n    from .convert import convert\n    from ..errors import DeepLabError\n")
    found = _imports(module, "deeplab_resnet.weights")
    assert {"deeplab_resnet.weights.convert", "deeplab_resnet.errors"} <= found
