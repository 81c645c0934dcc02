"""The JSON or YAML files users write by hand (dataset descriptions, training configs): which parser
a file gets (by its suffix), and one message when PyYAML, an optional dependency, is missing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import DeepLabError, missing_extra

YAML_SUFFIXES = (".yaml", ".yml")


def is_yaml(path: Path) -> bool:
    return path.suffix.lower() in YAML_SUFFIXES


def yaml_module(path: Path, action: str) -> Any:
    """PyYAML, imported only here and only for a YAML file, so that JSON users need not install it.

    ``action`` (``"reading"``, ``"writing"``) completes the one-line error when it is missing.
    """
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing_extra(
            exc, f"{path}: {action} YAML needs PyYAML (pip install pyyaml), or use a .json file"
        ) from exc
    return yaml


def read_mapping(path: Path, what: str, of: str) -> dict[str, Any]:
    """The mapping a ``.json`` / ``.yaml`` / ``.yml`` file holds.

    Anything else (a syntax error, a list, bad UTF-8) is a one-line :class:`DeepLabError` naming
    the file and ``what`` it should be (e.g. ``"dataset description"``) and, for a file that holds no
    mapping, what the mapping ``of`` holds (e.g. ``"flag names to values"``).
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml_module(path, "reading").safe_load(text) if is_yaml(path) else json.loads(text)
    except DeepLabError:
        raise
    except (ValueError, Exception) as exc:  # yaml.YAMLError shares no base with ValueError we could import lazily
        # PyYAML's messages span several lines (with a caret under the column): one line here
        reason = " ".join(str(exc).split())
        raise DeepLabError(f"{path}: not a valid {what} ({exc.__class__.__name__}: {reason})") from exc
    if not isinstance(data, dict):
        raise DeepLabError(f"{path}: a {what} must be a mapping of {of}")
    return data
