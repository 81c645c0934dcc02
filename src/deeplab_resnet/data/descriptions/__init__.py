"""The built-in dataset descriptions shipped with the package (``NAME.json`` beside this file).

``load_dataset_info("cityscapes")`` and ``--dataset cityscapes`` find them here. They are derived
from the official label tables in ``data/tools/label_tables.py``; regenerate them with
``python -m deeplab_resnet.data.tools.label_tables``. This module reads JSON only, so the
description lookup imports nothing else of the package.
"""

from __future__ import annotations

import json
from importlib import resources


def builtin_description_names() -> list[str]:
    """The names of the shipped descriptions, sorted."""
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def builtin_description(name: str) -> dict | None:
    """The shipped description ``name`` as a mapping, or None when there is none of that name."""
    if not name.replace("_", "").isalnum():  # a path or anything else that cannot be a shipped name
        return None
    entry = resources.files(__name__) / f"{name.lower()}.json"
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))
