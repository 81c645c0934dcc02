"""The original list-file format: one ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` per line.

Each path is relative to the data directory and joined to it by plain concatenation, as the
original did (``data_dir + path``); a missing leading slash is tolerated. A line with a single
path is an image without ground truth.
"""

from __future__ import annotations

import codecs
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


def read_text_lines(path: str | Path, *, what: str = "file") -> list[str]:
    """The lines of a UTF-8 text file (a list, a split, a CSV colour table).

    A leading byte-order mark is dropped: Notepad and Excel write one, and it would otherwise
    glue itself to the first entry. Bytes that are not UTF-8 are a :class:`DeepLabError` naming
    the file and the line, since a path with a mangled character cannot be found anyway.
    """
    path = Path(path)
    if not path.is_file():
        raise DeepLabError(f"{what} not found: {path}")
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DeepLabError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the {what} as UTF-8"
        ) from None


def list_entries(path: str | Path, *, what: str = "list file") -> list[tuple[int, list[str]]]:
    """``(line number, whitespace-separated fields)`` of every line that is not blank or a ``#`` comment."""
    entries = []
    for number, raw in enumerate(read_text_lines(path, what=what), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            entries.append((number, line.split()))
    return entries


def read_list(data_dir: str | Path, list_path: str | Path, *, require_labels: bool = True) -> list[Pair]:
    """Parse a list file into :class:`Pair` entries (files are not opened here)."""
    list_path = Path(list_path)
    entries = list_entries(list_path)
    if not Path(data_dir).is_dir():
        raise DeepLabError(f"data directory not found: {data_dir}")
    pairs = []
    for number, parts in entries:
        if len(parts) > 2:
            raise DeepLabError(f"{list_path}:{number}: expected 'IMAGE [LABEL]', got {len(parts)} fields")
        if len(parts) == 1 and require_labels:
            raise DeepLabError(f"{list_path}:{number}: no label path (expected 'IMAGE LABEL')")
        label = join(data_dir, parts[1]) if len(parts) == 2 else None
        pairs.append(Pair(join(data_dir, parts[0]), label, number))
    if not pairs:
        raise DeepLabError(f"{list_path}: the list is empty")
    return pairs
