"""Writing the prepared outputs only when they change, so that every ``prepare-*`` can be re-run.

A re-run after an interruption rewrites nothing that is already correct: a label PNG is compared
by its pixels and palette, a list file by its text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...atomic import atomic_write_text


def label_png_is_current(output: Path, labels: np.ndarray, palette: list[int]) -> bool:
    """True when ``output`` already holds exactly these labels with this palette."""
    if not output.is_file():
        return False
    try:
        with Image.open(output) as img:
            img.load()
            if img.mode != "P" or (img.getpalette() or [])[: len(palette)] != palette:
                return False
            return np.array_equal(np.asarray(img), labels)
    except (OSError, SyntaxError, ValueError):  # damaged (e.g. an old interrupted non-atomic write)
        return False


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it. Returns True when it wrote."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True
