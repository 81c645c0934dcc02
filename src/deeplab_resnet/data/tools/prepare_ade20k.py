"""ADE20K (the SceneParsing benchmark, 150 classes): stored 1..150 become 0..149, 0 ("other") 255.

The official download (sceneparsing.csail.mit.edu): ``ADEChallengeData2016.zip``::

    ADEChallengeData2016/images/{training,validation}/ADE_train_00000001.jpg ...
    ADEChallengeData2016/annotations/{training,validation}/ADE_train_00000001.png ...

Writes ``annotations_trainIds/SPLIT/NAME.png`` and the lists ``train.txt`` (20,210) and
``val.txt`` (2,000). The benchmark does not score "other", so it becomes the ignore label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...dataset_info import load_dataset_info
from ...images import read_label
from .label_tables import ADE20K_STORED_TO_TRAIN
from .prepare_common import (
    LabelSpace,
    PreparedDataset,
    find_root,
    orphan_warning,
    pair_by_name,
    resolve_sources,
    write_outputs,
)

ADE20K_COUNTS = {"train": 20210, "val": 2000}
SPLITS = {"train": "training", "val": "validation"}


def prepare_ade20k(
    sources: Sequence[str | Path],
    *,
    extract_to: str | Path | None = None,
    lists_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedDataset:
    """Build ADE20K's labels, lists and description (see the module docstring).

    Args:
        sources: the ``ADEChallengeData2016`` folder (or its parent) or the zip.
        extract_to, lists_dir, workers, progress: as for :func:`.prepare_cityscapes.prepare_cityscapes`.
    """
    folders = resolve_sources(sources, extract_to)
    root = find_root(folders, ("", "ADEChallengeData2016"), ("images", "annotations"), "ADE20K SceneParsing")
    space = LabelSpace(load_dataset_info("ade20k"), dict(ADE20K_STORED_TO_TRAIN), read_label)
    splits, notes = {}, []
    for split, folder in SPLITS.items():
        splits[split], orphans = pair_by_name(
            (root / "annotations" / folder).glob("*.png"),
            lambda label, f=folder: root / "images" / f / f"{label.stem}.jpg",
            lambda label, f=folder: root / "annotations_trainIds" / f / label.name,
        )
        notes += orphan_warning(orphans, f"{folder} labels")
    result = write_outputs(
        root, lists_dir, space, splits,
        expected=ADE20K_COUNTS, official="ADE20K SceneParsing", workers=workers, progress=progress,
    )  # fmt: skip
    result.warnings[:0] = notes
    return result
