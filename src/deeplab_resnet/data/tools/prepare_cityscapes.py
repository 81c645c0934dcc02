"""Cityscapes (fine annotations): labels in the 19 Cityscapes ``trainIds``.

The official Cityscapes download (www.cityscapes-dataset.com, after registration):
``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``, extracted side by side::

    leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png   (the 34 IDs)

Writes ``gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png`` (the name cityscapesScripts'
own conversion uses) through the table in :mod:`.label_tables`, and the lists ``train.txt``
(2,975), ``val.txt`` (500) and ``test.txt`` (1,525 images; Cityscapes publishes no test labels).
"""

from __future__ import annotations

from pathlib import Path

from ...dataset_info import load_dataset_info
from ...images import read_label
from .label_tables import CITYSCAPES_ID_TO_TRAIN
from .prepare_common import DatasetLayout, FoundSplits, LabelSpace, orphan_warning, pair_by_name

CITYSCAPES_COUNTS = {"train": 2975, "val": 500, "test": 1525}
LABEL_IDS = "_gtFine_labelIds.png"
LABEL_TRAIN_IDS = "_gtFine_labelTrainIds.png"


def cityscapes_space(name: str = "cityscapes") -> LabelSpace:
    return LabelSpace(load_dataset_info(name), dict(CITYSCAPES_ID_TO_TRAIN), read_label)


def _cityscapes_split(root: Path, split: str):
    def image_of(label: Path) -> Path:
        prefix = label.name[: -len(LABEL_IDS)]
        return root / "leftImg8bit" / split / label.parent.name / f"{prefix}_leftImg8bit.png"

    def output_of(label: Path) -> Path:
        return label.with_name(label.name[: -len(LABEL_IDS)] + LABEL_TRAIN_IDS)

    labels = (root / "gtFine" / split).glob(f"*/*{LABEL_IDS}")
    return pair_by_name(labels, image_of, output_of, name_of=lambda p: p.name[: -len(LABEL_IDS)])


def _find_splits(root: Path) -> FoundSplits:
    found = FoundSplits({})
    for split in ("train", "val"):
        found.splits[split], orphans = _cityscapes_split(root, split)
        found.notes += orphan_warning(orphans, f"{split} labels")
    test_dir = root / "leftImg8bit" / "test"
    if test_dir.is_dir():
        found.images_only["test"] = sorted(test_dir.glob("*/*_leftImg8bit.png"))
    return found


def layout() -> DatasetLayout:
    """Cityscapes for :func:`.prepare_common.prepare_dataset`: the dataset folder (holding
    ``leftImg8bit/`` and ``gtFine/``) or the two zips."""
    return DatasetLayout(
        official="Cityscapes fine", what="Cityscapes", root_names=("", "cityscapes"),
        required=("leftImg8bit", "gtFine"), space=cityscapes_space(), find_splits=_find_splits,
        counts=CITYSCAPES_COUNTS,
    )  # fmt: skip
