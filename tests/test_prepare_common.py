"""prepare_dataset: the pipeline every ``deeplab data prepare-*`` runs, on a toy layout.

The dataset commands are tested end to end on miniatures of the official downloads in
test_prepare_datasets.py; this file checks the generic parts a layout relies on: its own search,
its default lists folder, the order of the warnings and which official counts are compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_resnet.data.tools.prepare_common import (
    DatasetLayout,
    FoundSplits,
    LabelSpace,
    pair_annotation_folders,
    prepare_dataset,
)
from deeplab_resnet.dataset_info import load_dataset_info
from deeplab_resnet.images import read_label

# stored value -> training label: 1 and 2 swap, 0 stays, every other value (here 7) is ignored.
TOY_TABLE = {0: 0, 1: 2, 2: 1}


def _write_pair(root: Path, folder: str, name: str, stored: np.ndarray) -> None:
    (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (stored.shape[1], stored.shape[0])).save(root / "images" / folder / f"{name}.jpg")
    Image.fromarray(stored.astype(np.uint8), mode="L").save(root / "annotations" / folder / f"{name}.png")


def _toy_layout(found_extra: dict[str, list[Path]] | None = None) -> DatasetLayout:
    def find_splits(root: Path) -> FoundSplits:
        found = pair_annotation_folders(root, {"train": "tr", "val": "va"}, "converted")
        found.images_only.update(found_extra or {})
        return found

    return DatasetLayout(
        official="Toy",
        what="Toy dataset",
        root_names=("", "toy"),
        required=("images", "annotations"),
        space=LabelSpace(load_dataset_info("voc12"), dict(TOY_TABLE), read_label),
        find_splits=find_splits,
        counts={"train": 2, "val": 5, "test": 9},
        lists_subdir="toy_lists",
    )


def test_prepare_dataset_converts_pairs_and_lists(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    a = np.array([[0, 1], [2, 7]])
    b = np.array([[2, 2, 1]])
    _write_pair(root, "tr", "a", a)
    _write_pair(root, "tr", "b", b)
    _write_pair(root, "va", "c", np.array([[1]]))
    # a label without its image: reported first (the search's note), left out of the list
    (root / "annotations" / "va" / "orphan.png").write_bytes((root / "annotations" / "va" / "c.png").read_bytes())

    result = prepare_dataset(_toy_layout(), [tmp_path], workers=1, progress=False)

    assert result.data_dir == root and result.lists_dir == root / "toy_lists"
    for name, folder, stored in (("a", "tr", a), ("b", "tr", b)):
        expected = np.vectorize(lambda v: TOY_TABLE.get(int(v), 255))(stored)
        np.testing.assert_array_equal(read_label(root / "converted" / folder / f"{name}.png"), expected)
    assert (root / "toy_lists" / "train.txt").read_text() == (
        "/images/tr/a.jpg /converted/tr/a.png\n/images/tr/b.jpg /converted/tr/b.png\n"
    )
    assert (root / "toy_lists" / "val.txt").read_text() == "/images/va/c.jpg /converted/va/c.png\n"
    assert result.counts == {"train": 2, "val": 1}
    assert result.written == 3 and result.unchanged == 0
    assert result.warnings[0].startswith("1 va labels have no image")
    # the value 7 is outside the table; val has 1 of the official 5; test was never found, so not compared
    assert any("outside the official table" in w and "7" in w for w in result.warnings)
    assert [w.split(":")[0] for w in result.warnings if "the official Toy" in w] == ["val"]

    again = prepare_dataset(_toy_layout(), [tmp_path], workers=1, progress=False)
    assert (again.written, again.unchanged, again.lists_written) == (0, 3, [])


def test_prepare_dataset_images_only_split_is_listed_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    _write_pair(root, "tr", "a", np.array([[0, 1]]))
    _write_pair(root, "tr", "b", np.array([[1, 0]]))
    (root / "annotations" / "va").mkdir()
    test_image = root / "images" / "te" / "t.jpg"
    test_image.parent.mkdir(parents=True)
    Image.new("RGB", (1, 1)).save(test_image)

    lists = tmp_path / "elsewhere"
    result = prepare_dataset(_toy_layout({"test": [test_image]}), [root], lists_dir=lists, workers=1, progress=False)

    assert result.lists_dir == lists and (lists / "test.txt").read_text() == "/images/te/t.jpg\n"
    assert result.counts == {"train": 2, "val": 0, "test": 1}
    counted = sorted(w.split(":")[0] for w in result.warnings if "the official Toy" in w)
    assert counted == ["test", "val"]  # train has its official 2
