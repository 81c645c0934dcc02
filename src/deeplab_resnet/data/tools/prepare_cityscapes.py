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

from collections.abc import Sequence
from pathlib import Path

from ...dataset_info import load_dataset_info
from ...images import read_label
from .label_tables import CITYSCAPES_ID_TO_TRAIN
from .prepare_common import (
    LabelSpace,
    PreparedDataset,
    find_root,
    orphan_warning,
    pair_by_name,
    resolve_sources,
    write_outputs,
)

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


def prepare_cityscapes(
    sources: Sequence[str | Path],
    *,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Build the Cityscapes ``trainIds`` labels, lists and description (see the module docstring).

    Args:
        sources: the dataset folder (holding ``leftImg8bit/`` and ``gtFine/``) or the two zips.
        extract_to: where archives are extracted (default: beside each archive).
        lists_dir: where the lists and the description go (default: ``ROOT/lists``).
        workers: worker processes (None: one per core, at most 8).
        progress: show a progress line on stderr.
    """
    folders = resolve_sources(sources, extract_to)
    root = find_root(folders, ("", "cityscapes"), ("leftImg8bit", "gtFine"), "Cityscapes")
    splits, notes = {}, []
    for split in ("train", "val"):
        splits[split], orphans = _cityscapes_split(root, split)
        notes += orphan_warning(orphans, f"{split} labels")
    test_dir = root / "leftImg8bit" / "test"
    images_only = {"test": sorted(test_dir.glob("*/*_leftImg8bit.png"))} if test_dir.is_dir() else {}
    result = write_outputs(
        root, lists_dir, cityscapes_space(), splits, images_only=images_only,
        expected=CITYSCAPES_COUNTS if images_only else {k: CITYSCAPES_COUNTS[k] for k in ("train", "val")},
        official="Cityscapes fine", workers=workers, progress=progress,
    )  # fmt: skip
    result.warnings[:0] = notes
    return result
