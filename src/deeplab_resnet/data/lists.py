"""The original list-file format: one ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` per line.

Each path is relative to the data directory and joined to it by plain concatenation, as the
original did (``data_dir + path``); a missing leading slash is tolerated. A line with a single
path is an image without ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DeepLabError


@dataclass(frozen=True)
class Pair:
    """One list entry: an image and, when labelled, its label PNG."""

    image: Path
    label: Path | None
    line: int  # 1-based line number in the list, for error messages

    @property
    def name(self) -> str:
        return self.image.stem


def join(data_dir: str | Path, rel: str) -> Path:
    """``data_dir + rel`` as the original concatenated them, with or without the leading slash."""
    base = str(data_dir).rstrip("/")
    return Path(base + ("" if rel.startswith("/") else "/") + rel)


def read_list(data_dir: str | Path, list_path: str | Path, *, require_labels: bool = True) -> list[Pair]:
    """Parse a list file into :class:`Pair` entries (files are not opened here)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise DeepLabError(f"list file not found: {list_path}")
    if not Path(data_dir).is_dir():
        raise DeepLabError(f"data directory not found: {data_dir}")
    pairs = []
    for number, raw in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise DeepLabError(f"{list_path}:{number}: expected 'IMAGE [LABEL]', got {len(parts)} fields")
        if len(parts) == 1 and require_labels:
            raise DeepLabError(f"{list_path}:{number}: no label path (expected 'IMAGE LABEL')")
        label = join(data_dir, parts[1]) if len(parts) == 2 else None
        pairs.append(Pair(join(data_dir, parts[0]), label, number))
    if not pairs:
        raise DeepLabError(f"{list_path}: the list is empty")
    return pairs
