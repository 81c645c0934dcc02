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

from pathlib import Path

from ...dataset_info import load_dataset_info
from ...errors import DeepLabError
from ...images import read_label
from .label_tables import COCOSTUFF_STORED_TO_171, COCOSTUFF_STORED_TO_182
from .prepare_common import DatasetLayout, LabelSpace, pair_annotation_folders

COCOSTUFF_COUNTS = {"train": 118287, "val": 5000}
SPLITS = {"train": "train2017", "val": "val2017"}


def _archive_dest(archive: Path, root: Path) -> Path:
    """The README's layout: the image zips go under ``images/``, the stuff+thing maps under ``annotations/``."""
    return root / ("annotations" if archive.name.lower().startswith("stuffthingmaps") else "images")


def layout(classes: int = 171) -> DatasetLayout:
    """COCO-Stuff for :func:`.prepare_common.prepare_dataset`: the ``dataset`` folder (holding ``images/``
    and ``annotations/``) or the three zips.

    Args:
        classes: 171 (the annotated classes, contiguous) or 182 (the stored IDs unchanged).
    """
    if classes not in (171, 182):
        raise DeepLabError(f"--classes must be 171 or 182 for COCO-Stuff, got {classes}")
    mapping = COCOSTUFF_STORED_TO_171 if classes == 171 else COCOSTUFF_STORED_TO_182
    info = load_dataset_info("cocostuff" if classes == 171 else "cocostuff182")
    return DatasetLayout(
        official="COCO-Stuff-164k", what="COCO-Stuff", root_names=("", "dataset"), required=("images", "annotations"),
        space=LabelSpace(info, dict(mapping), read_label),
        find_splits=lambda root: pair_annotation_folders(root, SPLITS, f"annotations{classes}"),
        counts=COCOSTUFF_COUNTS, lists_subdir="lists" if classes == 171 else "lists182", archive_dest=_archive_dest,
    )  # fmt: skip
