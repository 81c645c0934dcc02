"""Imports inside functions only where they earn their place.

An import inside a function hides a module's dependencies (and can hide an import circle), so the
package allows it for two reasons only: to keep ``deeplab --help`` instant (the modules the CLI
loads to build its parser put torch, numpy and the rest off until a command runs), and to keep an
optional dependency optional. Everything else imports at the top. The imports are read from the
source with ``ast``; the modules ``--help`` loads are measured in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"

# Optional dependencies (pyproject's extras) and platform modules: imported where they are used,
# so that the package works without them.
OPTIONAL = (
    "pydensecrf", "onnx", "onnxruntime", "openvino", "yaml", "scipy", "torch.utils.tensorboard", "tensorflow", "resource",
    "huggingface_hub", "av", "triton",
    "fastapi", "uvicorn", "python_multipart", "multipart",
)  # fmt: skip
# Imports that must happen late for a reason of their own (the comment at each says why).
LATE_ON_PURPOSE = {
    # inductor reads TORCHINDUCTOR_CACHE_DIR when it is imported, so the import follows setting it
    ("deeplab_resnet.inference.optimize", "torch._inductor.config"),
}
HEAVY = ("torch", "numpy", "PIL", "scipy", "yaml", "onnx", "onnxruntime", "safetensors")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def function_level_imports(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every import inside a function body (relative imports resolved)."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1] if child.level else []
                found.append((child.lineno, ".".join(base + ([child.module] if child.module else []))))
            elif in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(source), False)
    return found


def modules_loaded_by_help() -> set[str]:
    """Every module (package or not) in ``sys.modules`` once the CLI has built its parser."""
    code = "import json, sys; from deeplab_resnet.cli import build_parser; build_parser(); print(json.dumps(list(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _is_within(module: str, roots: tuple[str, ...]) -> bool:
    return any(module == root or module.startswith(root + ".") for root in roots)


def test_help_loads_no_heavy_dependency() -> None:
    loaded = modules_loaded_by_help()
    assert "deeplab_resnet.commands.segment" in loaded and "deeplab_resnet.commands.train" in loaded
    assert sorted(m for m in loaded if _is_within(m, HEAVY)) == []


def test_imports_inside_functions_only_where_allowed() -> None:
    """Outside the modules ``--help`` loads, a late import is an optional dependency or on the list."""
    help_modules = modules_loaded_by_help()
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        if name in help_modules:
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for line, target in function_level_imports(path.read_text(encoding="utf-8"), package):
            if not _is_within(target, OPTIONAL) and (name, target) not in LATE_ON_PURPOSE:
                offenders.append(f"{path.relative_to(REPO)}:{line}: {target}")
    assert offenders == []


def test_function_level_imports_are_found() -> None:
    """The reader itself, on a made-up module: top-level imports are not counted, nested ones are."""
    source = (
        "import os\n"
        "from . import sibling\n"
        "def f():\n"
        "    import json\n"
        "    from ..errors import DeepLabError\n"
        "    def g():\n"
        "        from .lists import read_list\n"
        "class C:\n"
        "    def m(self):\n"
        "        import torch.distributed as dist\n"
    )
    found = function_level_imports(source, "deeplab_resnet.data")
    assert found == [
        (4, "json"),
        (5, "deeplab_resnet.errors"),
        (7, "deeplab_resnet.data.lists"),
        (10, "torch.distributed"),
    ]
    assert _is_within("torch.utils.tensorboard", OPTIONAL) and not _is_within("torchvision", ("torch",))
