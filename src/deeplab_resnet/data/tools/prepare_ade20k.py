"""ADE20K (the SceneParsing benchmark, 150 classes): stored 1..150 become 0..149, 0 ("other") 255.

The official download (sceneparsing.csail.mit.edu): ``ADEChallengeData2016.zip``::

    ADEChallengeData2016/images/{training,validation}/ADE_train_00000001.jpg ...
    ADEChallengeData2016/annotations/{training,validation}/ADE_train_00000001.png ...

Writes ``annotations_trainIds/SPLIT/NAME.png`` and the lists ``train.txt`` (20,210) and
``val.txt`` (2,000). The benchmark does not score "other", so it becomes the ignore label.
"""

from __future__ import annotations

from ...dataset_info import load_dataset_info
from ...images import read_label
from .label_tables import ADE20K_STORED_TO_TRAIN
from .prepare_common import DatasetLayout, LabelSpace, pair_annotation_folders

ADE20K_COUNTS = {"train": 20210, "val": 2000}
SPLITS = {"train": "training", "val": "validation"}


def layout() -> DatasetLayout:
    """ADE20K for :func:`.prepare_common.prepare_dataset`: the ``ADEChallengeData2016`` folder (or its
    parent) or the zip."""
    return DatasetLayout(
        official="ADE20K SceneParsing", what="ADE20K SceneParsing", root_names=("", "ADEChallengeData2016"),
        required=("images", "annotations"),
        space=LabelSpace(load_dataset_info("ade20k"), dict(ADE20K_STORED_TO_TRAIN), read_label),
        find_splits=lambda root: pair_annotation_folders(root, SPLITS, "annotations_trainIds"),
        counts=ADE20K_COUNTS,
    )  # fmt: skip
