"""What the ``deeplab serve`` tests share: the load benchmark's server launcher and client, as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


def require_server() -> None:
    """Skip when this tree has no ``deeplab serve`` (its package, or FastAPI, is not installed)."""
    for module in ("deeplab_resnet.serve", "fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"deeplab serve needs {module}, which is not installed here")


def load_bench():
    """``benchmarks/serve_load.py`` as a module (registered first: its dataclass needs that)."""
    if "serve_load" not in sys.modules:
        spec = importlib.util.spec_from_file_location("serve_load", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["serve_load"] = module
        spec.loader.exec_module(module)
    return sys.modules["serve_load"]
