"""COCO-Stuff-164k: the stuff+thing maps, written in the 171 annotated classes (or all 182 IDs).

The official download (github.com/nightrome/cocostuff): ``train2017.zip`` and ``val2017.zip``
(COCO's images) and ``stuffthingmaps_trainval2017.zip``, laid out as its README does::

    dataset/images/{train2017,val2017}/NAME.jpg
    dataset/annotations/{train2017,val2017}/NAME.png    (ID - 1 = 0..181; 255 = unlabeled)

Given the zips, they are extracted into that layout. Writes ``annotations171/SPLIT/NAME.png``
(the 171 classes COCO annotates, in ID order: the 11 IDs COCO dropped never occur) and the lists
``lists/train.txt`` (118,287) and ``lists/val.txt`` (5,000). With ``classes=182`` it keeps the
stored IDs as they are, in ``annotations182/`` and ``lists182/``, as some DeepLab-v2 ports train.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...dataset_info import load_dataset_info
from ...errors import DeepLabError
from ...images import read_label
from .label_tables import COCOSTUFF_STORED_TO_171, COCOSTUFF_STORED_TO_182
from .prepare_common import (
    LabelSpace,
    PreparedDataset,
    find_root,
    orphan_warning,
    pair_by_name,
    resolve_sources,
    write_outputs,
)

COCOSTUFF_COUNTS = {"train": 118287, "val": 5000}
SPLITS = {"train": "train2017", "val": "val2017"}


def _archive_dest(archive: Path, root: Path) -> Path:
    """The README's layout: the image zips go under ``images/``, the stuff+thing maps under ``annotations/``."""
    return root / ("annotations" if archive.name.lower().startswith("stuffthingmaps") else "images")


def prepare_cocostuff(
    sources: Sequence[str | Path],
    *,
    classes: int = 171,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Build COCO-Stuff-164k labels, lists and description (see the module docstring).

    Args:
        sources: the ``dataset`` folder (holding ``images/`` and ``annotations/``) or the three zips.
        classes: 171 (the annotated classes, contiguous) or 182 (the stored IDs unchanged).
        extract_to, lists_dir, workers, progress: as for :func:`.prepare_cityscapes.prepare_cityscapes`.
    """
    if classes not in (171, 182):
        raise DeepLabError(f"--classes must be 171 or 182 for COCO-Stuff, got {classes}")
    folders = resolve_sources(sources, extract_to, archive_dest=_archive_dest)
    root = find_root(folders, ("", "dataset"), ("images", "annotations"), "COCO-Stuff")
    mapping = COCOSTUFF_STORED_TO_171 if classes == 171 else COCOSTUFF_STORED_TO_182
    space = LabelSpace(load_dataset_info("cocostuff" if classes == 171 else "cocostuff182"), dict(mapping), read_label)
    splits, notes = {}, []
    for split, folder in SPLITS.items():
        splits[split], orphans = pair_by_name(
            (root / "annotations" / folder).glob("*.png"),
            lambda label, f=folder: root / "images" / f / f"{label.stem}.jpg",
            lambda label, f=folder: root / f"annotations{classes}" / f / label.name,
        )
        notes += orphan_warning(orphans, f"{folder} labels")
    lists = lists_dir if lists_dir is not None else root / ("lists" if classes == 171 else "lists182")
    result = write_outputs(
        root, lists, space, splits,
        expected=COCOSTUFF_COUNTS, official="COCO-Stuff-164k", workers=workers, progress=progress,
    )  # fmt: skip
    result.warnings[:0] = notes
    return result
