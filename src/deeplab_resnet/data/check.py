"""Validating a labelled list before hours are spent on it: the core behind ``deeplab data check``
and the pre-flight check of ``deeplab train``.

:func:`check_pair` looks at one image/label pair; :func:`check_dataset` runs it over whole lists
in worker processes and adds what only the whole list shows: per-class pixel histograms,
ignore pixels, out-of-range label values, label modes, duplicate and overlapping entries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..dataset_info import DatasetInfo
from ..errors import DeepLabError
from ..images import open_image, read_label, size_mismatch
from .lists import Pair, read_list
from .tools.parallel import parallel_map


@dataclass
class PairCheck:
    """What one image/label pair looks like. ``errors`` each name the file."""

    pair: Pair
    errors: list[str] = field(default_factory=list)
    histogram: np.ndarray | None = None  # pixels per label value 0..255
    image_size: tuple[int, int] | None = None  # (width, height)
    label_mode: str | None = None  # PIL mode of the label file ("P", "L", "RGB", ...)

    def out_of_range(self, num_classes: int, ignore_label: int) -> int:
        """Pixels whose label is neither a class nor the ignore label."""
        if self.histogram is None:
            return 0
        bad = self.histogram[num_classes:].sum()
        if num_classes <= ignore_label < 256:
            bad -= self.histogram[ignore_label]
        return int(bad)


def _label_mode(path: Path) -> str | None:
    try:
        with Image.open(path) as img:  # header only: cheap
            return img.mode
    except Exception:  # read_label below reports the real problem
        return None


def check_pair(pair: Pair) -> PairCheck:
    """Open the image and the label (fully decoding both), compare sizes, histogram the labels."""
    result = PairCheck(pair)
    try:
        image = open_image(pair.image)
        result.image_size = image.size
    except DeepLabError as exc:
        result.errors.append(str(exc))
    if pair.label is None:
        return result
    result.label_mode = _label_mode(pair.label)
    try:
        label = read_label(pair.label)
    except DeepLabError as exc:
        result.errors.append(str(exc))
        return result
    result.histogram = np.bincount(label.ravel(), minlength=256)
    if result.image_size is not None and (mismatch := size_mismatch(pair.label, label.shape, result.image_size[::-1])):
        result.errors.append(mismatch)
    return result


# ---------------------------------------------------------------- whole lists


@dataclass
class DatasetCheck:
    """The outcome of :func:`check_dataset`.

    ``class_pixels[c]`` / ``class_images[c]``: pixels of class ``c`` and images containing it;
    ``out_of_range``: label value → pixels, for values that are neither a class nor the ignore
    label. ``errors`` make the check fail; ``warnings`` do not.
    """

    dataset: DatasetInfo
    lists: list[Path]
    pairs: int = 0
    labelled: int = 0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_images: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    ignore_pixels: int = 0
    out_of_range: dict[int, int] = field(default_factory=dict)
    label_modes: Counter = field(default_factory=Counter)
    image_sizes: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def labelled_pixels(self) -> int:
        return int(self.class_pixels.sum()) + self.ignore_pixels + sum(self.out_of_range.values())


def _duplicates(pairs_per_list: list[tuple[Path, list[Pair]]]) -> list[str]:
    """Entries repeated within a list, and images shared by two lists (e.g. train and val)."""
    errors = []
    owner: dict[Path, Path] = {}
    for list_path, pairs in pairs_per_list:
        first_line: dict[Path, int] = {}
        for pair in pairs:
            if pair.image in first_line:
                errors.append(
                    f"{list_path}:{pair.line}: duplicate entry {pair.image} (first on line {first_line[pair.image]})"
                )
                continue
            first_line[pair.image] = pair.line
        for image in first_line:
            if image in owner and owner[image] != list_path:
                errors.append(f"{list_path}: {image} is also in {owner[image]} (the lists overlap)")
            owner.setdefault(image, list_path)
    return errors


def _add_pair(report: DatasetCheck, result: PairCheck) -> None:
    report.errors.extend(result.errors)
    if result.image_size is not None:
        report.image_sizes[result.image_size] += 1
    if result.label_mode is not None:
        report.label_modes[result.label_mode] += 1
    if result.histogram is None:
        return
    n, ignore = report.dataset.num_classes, report.dataset.ignore_label
    hist = result.histogram.astype(np.int64)
    report.labelled += 1
    report.class_pixels += hist[:n]
    report.class_images += hist[:n] > 0
    if 0 <= ignore < 256 and ignore >= n:
        report.ignore_pixels += int(hist[ignore])
    bad = [v for v in np.nonzero(hist)[0] if v >= n and v != ignore]
    for value in bad:
        report.out_of_range[int(value)] = report.out_of_range.get(int(value), 0) + int(hist[value])
    if bad:
        values = ", ".join(f"{v} ({hist[v]} px)" for v in bad)
        report.errors.append(
            f"{result.pair.label}: label values outside 0..{n - 1} and the ignore label {ignore}: {values}"
        )


def check_dataset(
    data_dir: str | Path,
    lists: Sequence[str | Path],
    dataset: DatasetInfo,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> DatasetCheck:
    """Check every pair of every list: files decode, sizes match, labels are in range.

    Args:
        data_dir: the directory the list paths are relative to.
        lists: one or more list files (lines with only an image are checked as images).
        dataset: gives the class count, class names and the ignore label.
        workers: worker processes (None: one per core, at most 8; 1: in this process).
        progress: show a progress bar on stderr.
    """
    pairs_per_list = [(Path(p), read_list(data_dir, p, require_labels=False)) for p in lists]
    report = DatasetCheck(dataset, [p for p, _ in pairs_per_list])
    report.class_pixels = np.zeros(dataset.num_classes, np.int64)
    report.class_images = np.zeros(dataset.num_classes, np.int64)
    report.errors.extend(_duplicates(pairs_per_list))
    unique = list({pair.image: pair for _, pairs in pairs_per_list for pair in pairs}.values())
    report.pairs = len(unique)
    for result in parallel_map(check_pair, unique, workers=workers, desc="checking", progress=progress):
        _add_pair(report, result)
    modes = set(report.label_modes)
    if len(modes) > 1:
        report.warnings.append(f"labels come in several modes: {dict(report.label_modes)}")
    absent = [f"{i} {dataset.class_names[i]}" for i in np.nonzero(report.class_pixels == 0)[0]]
    if absent and report.labelled:
        report.warnings.append(f"classes that never appear: {', '.join(absent)}")
    return report


def format_report(report: DatasetCheck, *, max_errors: int = 50) -> str:
    """The summary table, then warnings and errors (at most ``max_errors`` of them)."""
    names = report.dataset.class_names
    lines = [
        f"dataset {report.dataset.name}: {report.dataset.num_classes} classes, ignore label {report.dataset.ignore_label}",
        f"lists: {', '.join(str(p) for p in report.lists)}",
        f"images: {report.pairs}  labelled: {report.labelled}  label modes: "
        + (", ".join(f"{m} {c}" for m, c in sorted(report.label_modes.items())) or "-"),
    ]
    if report.image_sizes:
        sizes = sorted(report.image_sizes.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{w}x{h} ({c})" for (w, h), c in sizes[:3])
        lines.append(f"image sizes: {shown}" + (f" and {len(sizes) - 3} more" if len(sizes) > 3 else ""))
    total = max(1, report.labelled_pixels)
    if report.labelled:
        lines.append("")
        lines.append(f"{'label':>5}  {'class':<16} {'pixels':>14} {'share':>7} {'images':>7}")
        for index, name in enumerate(names):
            pixels = int(report.class_pixels[index])
            lines.append(
                f"{index:>5}  {name[:16]:<16} {pixels:>14,} {100 * pixels / total:>6.2f}% {report.class_images[index]:>7}"
            )
        lines.append(
            f"{report.dataset.ignore_label:>5}  {'(ignore)':<16} {report.ignore_pixels:>14,} "
            f"{100 * report.ignore_pixels / total:>6.2f}%"
        )
        bad = sum(report.out_of_range.values())
        values = ", ".join(str(v) for v in sorted(report.out_of_range)) or "-"
        lines.append(f"{'-':>5}  {'out of range':<16} {bad:>14,} {100 * bad / total:>6.2f}%  values: {values}")
    for warning in report.warnings:
        lines.append(f"warning: {warning}")
    if report.errors:
        lines.append("")
        lines.append(f"{len(report.errors)} error(s):")
        lines.extend(f"  {e}" for e in report.errors[:max_errors])
        if len(report.errors) > max_errors:
            lines.append(f"  ... and {len(report.errors) - max_errors} more (see --report)")
    else:
        lines.append("")
        lines.append("OK: no errors")
    return "\n".join(lines)
