"""GTA5 ("Playing for Data"): its labels store Cityscapes IDs, written as the 19 Cityscapes ``trainIds``.

The official download (download.visinf.tu-darmstadt.de/data/from_games): ``NN_images.zip`` and
``NN_labels.zip`` (NN = 01..10), extracted together::

    images/00001.png ... 24966.png      labels/00001.png ...   (palette PNGs of Cityscapes IDs)

Writes ``labels_trainIds/NNNNN.png`` and ``train.txt`` with all 24,966 images: domain-adaptation
work trains on all of GTA5 and evaluates on Cityscapes val. A few GTA5 labels differ in size from
their image; they are reported and left out of the list.
"""

from __future__ import annotations

from pathlib import Path

from .prepare_cityscapes import cityscapes_space
from .prepare_common import DatasetLayout, FoundSplits, orphan_warning, pair_by_name

GTA5_COUNTS = {"train": 24966}


def _find_splits(root: Path) -> FoundSplits:
    samples, orphans = pair_by_name(
        (root / "labels").glob("*.png"),
        lambda label: root / "images" / label.name,
        lambda label: root / "labels_trainIds" / label.name,
    )
    return FoundSplits({"train": samples}, notes=orphan_warning(orphans, "labels"))


def layout() -> DatasetLayout:
    """GTA5 for :func:`.prepare_common.prepare_dataset`: the dataset folder (holding ``images/`` and
    ``labels/``) or the ``NN_*.zip`` parts."""
    return DatasetLayout(
        official="GTA5", what="GTA5", root_names=("", "GTA5", "gta5"), required=("images", "labels"),
        space=cityscapes_space("gta5"), find_splits=_find_splits, counts=GTA5_COUNTS,
    )  # fmt: skip
