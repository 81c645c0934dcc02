"""The steps every ``deeplab data prepare-*`` shares: find the download, convert labels, write lists.

A dataset module (``prepare_cityscapes`` ...) only describes its download in a :class:`DatasetLayout`
(where its files are, which label table applies, the official counts); :func:`prepare_dataset`
runs the rest for all of them: it extracts archives (through :mod:`.archives`, which refuses members that
escape), converts the labels in worker processes (:mod:`.parallel`) with a progress line,
rewrites nothing that is already correct (:mod:`.label_files`), writes the list files and the
dataset description, and compares the image counts with the official ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ...dataset_info import DatasetInfo, load_dataset_info
from ...errors import DeepLabError
from ...images import label_image, save_image
from .archives import extract_archive, is_archive
from .label_files import label_png_is_current, write_text_if_changed
from .label_tables import IGNORE, lookup_table
from .parallel import parallel_map

LabelReader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class LabelSpace:
    """How a dataset's stored label values become training labels.

    Args:
        info: the built-in description of the training label space (names, palette).
        mapping: stored value -> training label (255 = ignore), from :mod:`.label_tables`.
        reader: a module-level function reading a stored label file as an integer array.
    """

    info: DatasetInfo
    mapping: dict[int, int]
    reader: LabelReader

    def convert(self, stored: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
        """The training labels of ``stored`` and the stored values the official table lacks."""
        stored = np.asarray(stored).astype(np.int64, copy=False)
        values = np.unique(stored)
        unknown = tuple(int(v) for v in values if int(v) not in self.mapping)
        table = lookup_table(self.mapping)
        labels = np.where((stored >= 0) & (stored < 256), table[np.clip(stored, 0, 255)], IGNORE)
        return labels.astype(np.uint8), unknown


@dataclass(frozen=True)
class Sample:
    """One image with its official label file and where its training label goes."""

    name: str
    image: Path
    label_source: Path
    label_output: Path


@dataclass(frozen=True)
class LabelJob:
    sample: Sample
    space: LabelSpace


@dataclass(frozen=True)
class JobResult:
    name: str
    status: str  # "written", "unchanged", "size" (image and label sizes differ) or "error: ..."
    unknown: tuple[int, ...] = ()
    detail: str = ""


@dataclass
class PreparedDataset:
    """What a ``prepare_*`` function did; train with ``--data-dir data_dir --data-list lists_dir/train.txt``."""

    data_dir: Path
    lists_dir: Path
    description: Path
    counts: dict[str, int] = field(default_factory=dict)
    written: int = 0
    unchanged: int = 0
    lists_written: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class FoundSplits:
    """What a layout's search found under the dataset root.

    Args:
        splits: split name -> its samples (sorted; the list keeps this order).
        images_only: split name -> images without published labels (e.g. Cityscapes test).
        notes: warnings from the search (labels without an image), shown before the others.
    """

    splits: dict[str, list[Sample]]
    images_only: dict[str, list[Path]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetLayout:
    """Everything one official download differs in; :func:`prepare_dataset` does the rest.

    Args:
        official: the download's name in the count warnings (e.g. "Cityscapes fine").
        what: its name when it is not found (e.g. "Cityscapes").
        root_names: where the dataset root may be under each source folder ("" = the folder itself).
        required: the paths every dataset root holds.
        space: the label table and training label space.
        find_splits: the dataset root -> the samples of each split.
        counts: split name -> the image count of the full official download.
        lists_subdir: the default lists folder under the root.
        archive_dest, refuse: as for :func:`resolve_sources`.
    """

    official: str
    what: str
    root_names: tuple[str, ...]
    required: tuple[str, ...]
    space: LabelSpace
    find_splits: Callable[[Path], FoundSplits]
    counts: dict[str, int]
    lists_subdir: str = "lists"
    archive_dest: Callable[[Path, Path], Path] | None = None
    refuse: Callable[[Path], str | None] | None = None


def prepare_dataset(
    layout: DatasetLayout,
    sources: Sequence[str | Path],
    *,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Build a dataset's training labels, lists and description from its official download.

    Args:
        layout: the dataset (e.g. :func:`.prepare_cityscapes.layout`).
        sources: the dataset folder or its official archives.
        extract_to: where archives are extracted (default: beside each archive).
        lists_dir: where the lists and the description go (default: ``ROOT/lists``).
        workers: worker processes (None: one per core, at most 8).
        progress: show a progress line on stderr.
    """
    folders = resolve_sources(sources, extract_to, archive_dest=layout.archive_dest, refuse=layout.refuse)
    root = find_root(folders, layout.root_names, layout.required, layout.what)
    found = layout.find_splits(root)
    # A split without published labels (Cityscapes test) is compared only when its folder is there.
    expected = {k: n for k, n in layout.counts.items() if k in found.splits or k in found.images_only}
    result = write_outputs(
        root, lists_dir if lists_dir is not None else root / layout.lists_subdir, layout.space, found.splits,
        images_only=found.images_only, expected=expected, official=layout.official, workers=workers, progress=progress,
    )  # fmt: skip
    result.warnings[:0] = found.notes
    return result


# ---------------------------------------------------------------- finding the download


def resolve_sources(
    sources: Sequence[str | Path],
    extract_to: str | Path | None,
    *,
    archive_dest: Callable[[Path, Path], Path] | None = None,
    refuse: Callable[[Path], str | None] | None = None,
) -> list[Path]:
    """The folders to look in: each source folder, and where each source archive was extracted.

    Args:
        sources: folders and/or official archives.
        extract_to: where archives are extracted (default: beside each archive).
        archive_dest: for datasets whose archives belong in sub-folders (COCO-Stuff), maps
            (archive, extraction root) to the folder to extract into.
        refuse: returns a message for a source that cannot be used as it is (e.g. a .rar).
    """
    folders: list[Path] = []
    for spec in map(Path, sources):
        message = refuse(spec) if refuse else None
        if message:
            raise DeepLabError(f"{spec}: {message}")
        if is_archive(spec):
            root = Path(extract_to) if extract_to is not None else spec.parent
            dest = archive_dest(spec, root) if archive_dest else root
            extract_archive(spec, dest)
            folders.append(root)
        elif spec.is_dir():
            folders.append(spec)
        else:
            raise DeepLabError(f"not found (or not a folder or a .tar/.tgz/.zip archive): {spec}")
    return list(dict.fromkeys(folders))


def find_root(folders: Iterable[Path], subdirs: tuple[str, ...], required: tuple[str, ...], what: str) -> Path:
    """The first ``folder/subdir`` holding every path of ``required``."""
    folders = list(folders)
    for folder in folders:
        for sub in subdirs:
            root = folder / sub if sub else folder
            if all((root / r).exists() for r in required):
                return root
    looked = ", ".join(str(f / s) if s else str(f) for f in folders for s in subdirs)
    raise DeepLabError(f"no {what} download found: looked for {', '.join(required)} in {looked}")


# ---------------------------------------------------------------- converting the labels


def convert_label(job: LabelJob) -> JobResult:
    """Write one training label PNG unless an identical one is there (run in a worker process)."""
    sample, space = job.sample, job.space
    try:
        labels, unknown = space.convert(space.reader(sample.label_source))
        with Image.open(sample.image) as img:  # the header only: is the label the image's size?
            width, height = img.size
        if labels.shape != (height, width):
            detail = f"image {width}x{height}, label {labels.shape[1]}x{labels.shape[0]}"
            return JobResult(sample.name, "size", unknown, detail)
        if label_png_is_current(sample.label_output, labels, space.info.palette_bytes()):
            return JobResult(sample.name, "unchanged", unknown)
        save_image(label_image(labels, space.info), sample.label_output)
        return JobResult(sample.name, "written", unknown)
    except DeepLabError as exc:
        return JobResult(sample.name, f"error: {exc}")
    except OSError as exc:  # the image header could not be read
        return JobResult(sample.name, f"error: {sample.image}: {exc}")


def _convert_all(samples: list[Sample], space: LabelSpace, result: PreparedDataset, workers, progress) -> set[str]:
    """Convert every label; returns the names left out (size mismatch). Raises on any error."""
    jobs = [LabelJob(s, space) for s in samples]
    errors, mismatched, unknown = [], {}, {}
    for r in parallel_map(convert_label, jobs, workers=workers, desc=f"{space.info.name} labels", progress=progress):
        if r.status == "written":
            result.written += 1
        elif r.status == "unchanged":
            result.unchanged += 1
        elif r.status == "size":
            mismatched[r.name] = r.detail
        else:
            errors.append(f"{r.name}: {r.status}")
        for value in r.unknown:
            unknown.setdefault(value, r.name)
    if errors:
        raise DeepLabError(f"{len(errors)} labels could not be converted; first: {errors[0]}")
    if mismatched:
        examples = ", ".join(f"{name} ({detail})" for name, detail in list(mismatched.items())[:3])
        result.warnings.append(
            f"{len(mismatched)} labels differ in size from their image and are left out of the lists (e.g. {examples})"
        )
    if unknown:
        values = ", ".join(f"{v} (e.g. in {name})" for v, name in sorted(unknown.items())[:10])
        result.warnings.append(f"label values outside the official table were set to {IGNORE}: {values}")
    return set(mismatched)


# ---------------------------------------------------------------- lists, description, counts


def list_line(data_dir: Path, image: Path, label: Path | None = None) -> str:
    """One list entry in the original format: paths relative to the data dir, with a leading slash."""
    entry = "/" + image.relative_to(data_dir).as_posix()
    if any(c.isspace() for c in entry):
        raise DeepLabError(f"{image}: a path with white space cannot go into a list file")
    if label is None:
        return entry + "\n"
    return f"{entry} /{label.relative_to(data_dir).as_posix()}\n"


class ListsRecord(Protocol):
    """Where a prepare function records its lists (:class:`PreparedDataset`, VOC's ``PrepareResult``)."""

    lists_dir: Path
    counts: dict[str, int]
    lists_written: list[str]


def write_list(result: ListsRecord, split: str, lines: Sequence[str]) -> None:
    """Write ``lists_dir/SPLIT.txt`` unless it already holds ``lines``, recording its entry count."""
    result.counts[split] = len(lines)
    if write_text_if_changed(result.lists_dir / f"{split}.txt", "".join(lines)):
        result.lists_written.append(split)


def write_outputs(
    data_dir: Path,
    lists_dir: str | Path | None,
    space: LabelSpace,
    splits: dict[str, list[Sample]],
    *,
    images_only: dict[str, list[Path]] | None = None,
    expected: dict[str, int] | None = None,
    official: str = "",
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Convert the labels of every split, then write the lists, the description and the count warnings.

    Args:
        data_dir: the dataset root every list path is relative to.
        lists_dir: where lists go (default: ``data_dir/lists``).
        space: the label table and training label space.
        splits: split name -> its samples (sorted; the list keeps this order).
        images_only: split name -> images without labels (e.g. Cityscapes test).
        expected: split name -> the image count of the full official download.
        official: what ``expected`` counts, for the warning (e.g. "Cityscapes gtFine").
    """
    lists = Path(lists_dir) if lists_dir is not None else data_dir / "lists"
    result = PreparedDataset(data_dir, lists, lists / f"{space.info.name}.json")
    everything = sorted({s.label_output: s for ss in splits.values() for s in ss}.values(), key=lambda s: s.name)
    left_out = _convert_all(everything, space, result, workers, progress)
    for split, samples in splits.items():
        kept = [s for s in samples if s.name not in left_out]
        write_list(result, split, [list_line(data_dir, s.image, s.label_output) for s in kept])
    for split, images in (images_only or {}).items():
        write_list(result, split, [list_line(data_dir, p) for p in images])
    if write_text_if_changed(result.description, load_dataset_info(space.info.name).to_json()):
        result.lists_written.append(result.description.name)
    found = {split: len(samples) for split, samples in splits.items()}
    found.update({split: len(images) for split, images in (images_only or {}).items()})
    result.warnings.extend(count_warnings(found, expected or {}, official))
    return result


def count_warnings(found: dict[str, int], expected: dict[str, int], official: str) -> list[str]:
    """One warning per split whose image count is not the official one."""
    return [
        f"{split}: {found.get(split, 0)} images found, the official {official} {split} split has {count:,}; "
        "is the download complete?"
        for split, count in expected.items()
        if found.get(split, 0) != count
    ]


def pair_by_name(
    labels: Iterable[Path],
    image_of: Callable[[Path], Path],
    output_of: Callable[[Path], Path],
    name_of: Callable[[Path], str] | None = None,
) -> tuple[list[Sample], list[Path]]:
    """Samples for the label files whose image exists, and the labels whose image is missing.

    Args:
        labels: the official label files of one split.
        image_of, output_of: a label file's image, and where its training label goes.
        name_of: a sample's name (default: the label's file stem); names must be unique.
    """
    samples, orphans = [], []
    for label in sorted(labels):
        image = image_of(label)
        if image.is_file():
            samples.append(Sample(name_of(label) if name_of else label.stem, image, label, output_of(label)))
        else:
            orphans.append(label)
    return samples, orphans


def orphan_warning(orphans: list[Path], what: str) -> list[str]:
    """The warning for labels that have no image (none when there are none)."""
    if not orphans:
        return []
    return [f"{len(orphans)} {what} have no image and are left out (e.g. {orphans[0]})"]


def pair_annotation_folders(root: Path, splits: dict[str, str], output_dir: str) -> FoundSplits:
    """The layout ADE20K and COCO-Stuff share: ``annotations/FOLDER/NAME.png`` labels ``images/FOLDER/NAME.jpg``.

    Args:
        root: the dataset root.
        splits: split name -> its folder name (e.g. ``{"train": "training"}``).
        output_dir: the folder under ``root`` the training labels go to, as ``output_dir/FOLDER/NAME.png``.
    """
    found = FoundSplits({})
    for split, folder in splits.items():
        found.splits[split], orphans = pair_by_name(
            (root / "annotations" / folder).glob("*.png"),
            lambda label, f=folder: root / "images" / f / f"{label.stem}.jpg",
            lambda label, f=folder: root / output_dir / f / label.name,
        )
        found.notes += orphan_warning(orphans, f"{folder} labels")
    return found
