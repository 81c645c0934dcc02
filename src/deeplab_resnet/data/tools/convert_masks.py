"""Colour masks (RGB images where each class is painted in one colour) → palette PNGs of class indices.

Training and evaluation read labels as class indices; an RGB mask read as indices would be
garbage, so the colours are mapped back to indices through a colour table: the VOC colours, a
dataset description's palette, or a JSON / CSV file. A colour that is not in the table is
never guessed: it is reported with its pixel count and the mask is not written, unless the
caller asks for unknown colours to become the ignore label.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...dataset_info import VOC, VOID_COLOUR, DatasetInfo, load_dataset_info, voc_palette
from ...errors import DeepLabError
from ...images import IMAGE_SUFFIXES, label_image, open_image, read_label, save_image, to_rgb_array
from ..lists import read_text_lines
from .parallel import parallel_map

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class ColourTable:
    """Which colour means which label value, and how to draw the written PNGs.

    Args:
        colours: RGB colour → label value (0..255).
        dataset: the description whose palette the written PNGs carry.
    """

    colours: dict[Colour, int]
    dataset: DatasetInfo

    @classmethod
    def from_dataset(cls, dataset: DatasetInfo) -> ColourTable:
        """Each class's palette colour; the void colour (224, 224, 192) → the ignore label."""
        colours: dict[Colour, int] = {}
        if 0 <= dataset.ignore_label < 256 and dataset.ignore_label >= dataset.num_classes:
            colours[VOID_COLOUR] = dataset.ignore_label
        for index, rgb in enumerate(dataset.palette[: dataset.num_classes]):
            if tuple(rgb) in colours and colours[tuple(rgb)] != index:
                raise DeepLabError(f"dataset {dataset.name!r}: colour {rgb} is used by two classes")
            colours[tuple(rgb)] = index  # type: ignore[index]
        return cls(colours, dataset)


def _parse_colour(value, where: str) -> Colour:
    """``[r, g, b]``, ``"r,g,b"`` or ``"#rrggbb"``."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("#") and len(text) == 7:
                rgb = tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))
            else:
                rgb = tuple(int(v) for v in text.replace(" ", "").split(","))
        else:
            rgb = tuple(int(v) for v in value)
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise DeepLabError(f"{where}: colour {value!r} is not r,g,b (0..255) or #rrggbb") from exc
    return rgb  # type: ignore[return-value]


def _table_from_mapping(colours: dict[Colour, int], source: str, ignore_label: int) -> ColourTable:
    for rgb, value in colours.items():
        if not 0 <= value <= 255:
            raise DeepLabError(f"{source}: colour {rgb} maps to {value}; label values must be 0..255")
    classes = sorted({v for v in colours.values() if v != ignore_label})
    if not classes:
        raise DeepLabError(f"{source}: no colours defined")
    num_classes = max(classes) + 1
    palette = list(voc_palette(num_classes))
    for rgb, value in colours.items():
        if value < num_classes:
            palette[value] = rgb
    dataset = DatasetInfo(
        Path(source).stem, tuple(f"class_{i}" for i in range(num_classes)), tuple(palette), ignore_label=ignore_label
    )
    return ColourTable(dict(colours), dataset)


def load_colour_table(spec: str | None, *, ignore_label: int = 255) -> ColourTable:
    """A colour table from ``spec``.

    Args:
        spec: None (VOC colours), a dataset description (built-in name or a JSON/YAML file with
            ``class_names``), a JSON mapping ``{"r,g,b" or "#rrggbb": label}``, or a CSV with
            columns ``r,g,b`` and optionally ``label`` (else the row order is the label, as in
            CamVid's ``class_dict.csv`` with ``name,r,g,b``).
        ignore_label: label value of the ignore colour in JSON / CSV tables.
    """
    if spec is None:
        return ColourTable.from_dataset(VOC)
    path = Path(spec)
    if path.suffix.lower() == ".csv":
        return _table_from_csv(path, ignore_label)
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise DeepLabError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and "class_names" not in data:
            colours = {_parse_colour(k, str(path)): _int(v, path) for k, v in data.items()}
            return _table_from_mapping(colours, str(path), ignore_label)
    return ColourTable.from_dataset(load_dataset_info(spec))


def _int(value, where) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise DeepLabError(f"{where}: label {value!r} is not an integer") from exc


def _table_from_csv(path: Path, ignore_label: int) -> ColourTable:
    lines = read_text_lines(path, what="colour table")
    rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(lines), start=1)]
    rows = [(n, r) for n, r in rows if r and not r[0].startswith("#")]
    if not rows:
        raise DeepLabError(f"{path}: empty colour table")
    header = [c.lower() for c in rows[0][1]]
    if not {"r", "g", "b"} <= set(header):
        raise DeepLabError(f"{path}: the first row must name the columns, with r, g, b (and optionally label)")
    label_col = next((header.index(c) for c in ("label", "index", "class", "id") if c in header), None)
    colours: dict[Colour, int] = {}
    for index, (number, row) in enumerate(rows[1:]):
        where = f"{path}:{number}"
        if len(row) != len(header):
            raise DeepLabError(f"{where}: {len(row)} fields, the header has {len(header)}")
        rgb = _parse_colour([row[header.index(c)] for c in "rgb"], where)
        colours[rgb] = _int(row[label_col], where) if label_col is not None else index
    return _table_from_mapping(colours, str(path), ignore_label)


# ---------------------------------------------------------------- converting


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_labels(rgb: np.ndarray, table: ColourTable, unknown: int | None) -> tuple[np.ndarray, Counter]:
    """Map an ``H x W x 3`` colour mask to labels.

    Args:
        rgb: the colour mask.
        table: the colour table.
        unknown: label for colours not in the table; None leaves them unmapped (see the counts).

    Returns:
        (labels ``H x W`` uint8, Counter of unknown colour → pixel count).
    """
    items = sorted(((r << 16) | (g << 8) | b, value) for (r, g, b), value in table.colours.items())
    keys = np.array([k for k, _ in items], dtype=np.uint32)
    values = np.array([v for _, v in items], dtype=np.uint8)
    packed = _pack(rgb)
    uniq, inverse = np.unique(packed.ravel(), return_inverse=True)
    pos = np.clip(np.searchsorted(keys, uniq), 0, len(keys) - 1)
    known = keys[pos] == uniq
    mapped = np.where(known, values[pos], 0 if unknown is None else unknown).astype(np.uint8)
    counts = np.bincount(inverse.ravel(), minlength=len(uniq))
    missing = Counter(
        {
            (int(k >> 16) & 255, int(k >> 8) & 255, int(k) & 255): int(n)
            for k, n, ok in zip(uniq, counts, known)
            if not ok
        }
    )
    return mapped[inverse].reshape(packed.shape), missing


@dataclass(frozen=True)
class MaskTask:
    source: Path
    output: Path
    table: ColourTable
    unknown: int | None  # label for unknown colours, None = refuse the mask


@dataclass
class MaskResult:
    source: Path
    status: str  # "written", "unchanged", "unknown colours", "error"
    unknown: Counter = field(default_factory=Counter)
    message: str = ""


def _indices_are_labels(img, table: ColourTable) -> bool:
    """A palette mask holds labels when each index in use is drawn in that label's colour.

    VOC-style PNGs do; an indexed PNG from an image editor numbers its colours arbitrarily and
    is converted through its colours instead.
    """
    palette = img.getpalette() or []
    for value in np.unique(np.asarray(img)).tolist():
        colour = tuple(palette[3 * value : 3 * value + 3])
        if table.colours.get(colour) != value:  # type: ignore[call-overload]
            return False
    return True


def convert_mask(task: MaskTask) -> MaskResult:
    """Convert one mask file. Greyscale masks, and palette masks whose indices already are the
    labels (see :func:`_indices_are_labels`), are kept as they are."""
    try:
        img = open_image(task.source)
        if img.mode == "L" or (img.mode == "P" and _indices_are_labels(img, task.table)):
            labels, missing = read_label(task.source), Counter()
        else:
            labels, missing = colours_to_labels(to_rgb_array(img), task.table, task.unknown)
    except DeepLabError as exc:
        return MaskResult(task.source, "error", message=str(exc))
    if missing and task.unknown is None:
        return MaskResult(task.source, "unknown colours", missing)
    out = label_image(labels, task.table.dataset)
    if task.output.is_file():
        try:
            if np.array_equal(read_label(task.output), labels):
                return MaskResult(task.source, "unchanged", missing)
        except DeepLabError:
            pass
    save_image(out, task.output)
    return MaskResult(task.source, "written", missing)


@dataclass
class ConvertResult:
    written: int = 0
    unchanged: int = 0
    unknown: Counter = field(default_factory=Counter)  # colour -> pixels, over all masks
    refused: list[Path] = field(default_factory=list)  # masks not written because of unknown colours
    errors: list[str] = field(default_factory=list)


def find_masks(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise DeepLabError(f"not found: {source}")
    masks = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not masks:
        raise DeepLabError(f"{source}: no mask images found")
    return masks


def convert_masks(
    source: str | Path,
    output_dir: str | Path,
    table: ColourTable,
    *,
    unknown_to_ignore: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConvertResult:
    """Convert every mask under ``source`` (a file or a folder, recursively) into ``output_dir``.

    Output names keep the folder structure and take the ``.png`` suffix. With unknown colours
    and ``unknown_to_ignore`` False, the affected masks are not written (others are).
    """
    source, output_dir = Path(source), Path(output_dir)
    masks = find_masks(source)
    base = source if source.is_dir() else source.parent
    unknown = table.dataset.ignore_label if unknown_to_ignore else None
    tasks = [MaskTask(m, output_dir / m.relative_to(base).with_suffix(".png"), table, unknown) for m in masks]
    result = ConvertResult()
    for r in parallel_map(convert_mask, tasks, workers=workers, desc="masks", progress=progress):
        result.unknown.update(r.unknown)
        if r.status == "written":
            result.written += 1
        elif r.status == "unchanged":
            result.unchanged += 1
        elif r.status == "unknown colours":
            result.refused.append(r.source)
        else:
            result.errors.append(r.message)
    return result
