"""A dataset description's own crop and scale defaults for ``deeplab train`` (flags given win)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deeplab_resnet.cli import main
from deeplab_resnet.data.transforms import TrainTransform
from deeplab_resnet.dataset_info import VOC, DatasetInfo
from deeplab_resnet.errors import DeepLabError


def description(tmp_path, training) -> str:
    d = VOC.to_dict()
    d["training"] = training
    path = tmp_path / "voc_with_defaults.json"
    path.write_text(json.dumps(d))
    return str(path)


def train(voc_fixture, run, dataset, *extra) -> int:
    return main([
        "train", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_train.txt"),
        "--model", "deeplab_v2_resnet_tiny", "--batch-size", "1", "--num-steps", "1", "--num-workers", "0",
        "--snapshot-dir", str(run), "--no-progress", "--no-tensorboard", "--no-check-data", "--dataset", dataset,
        "--random-scale", *extra,
    ])  # fmt: skip


def test_the_descriptions_defaults_apply_unless_a_flag_is_given(tmp_path, voc_fixture):
    dataset = description(tmp_path, {"input_size": [33, 49], "scale_range": [0.9, 1.1]})
    assert train(voc_fixture, tmp_path / "a", dataset) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["input_size"] == "33,49" and saved["scale_range"] == [0.9, 1.1]
    assert train(voc_fixture, tmp_path / "b", dataset, "--input-size", "17,17") == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["input_size"] == "17,17" and saved["scale_range"] == [0.9, 1.1]


def test_without_defaults_the_original_recipe_stays(tmp_path, voc_fixture):
    assert train(voc_fixture, tmp_path / "c", "voc12") == 0
    saved = json.loads((tmp_path / "c" / "config.json").read_text())
    assert saved["input_size"] is None and saved["scale_range"] is None  # 321,321 and U(0.5, 1.5)


@pytest.mark.parametrize(
    "training",
    [{"input_size": [0, 10]}, {"input_size": [10]}, {"scale_range": [1.5, 0.5]}, {"scale_range": [0, 1]},
     {"crop": [3, 3]}, [1, 2]],
)  # fmt: skip
def test_bad_training_defaults_are_one_line(training):
    d = VOC.to_dict() | {"training": training}
    with pytest.raises(DeepLabError, match="training"):
        DatasetInfo.from_dict(d, "bad", strict=True)


def test_the_scale_is_drawn_from_the_range():
    image = np.zeros((100, 60, 3), np.uint8)
    label = np.zeros((100, 60), np.uint8)
    heights = set()
    for seed in range(40):
        transform = TrainTransform((200, 200), (0.0, 0.0, 0.0), random_scale=True, scale_range=(0.9, 1.1))
        x, y = transform(image, label, np.random.default_rng(seed))
        valid = (y != 255).sum(0)  # label columns inside the rescaled image (the rest is padding)
        heights.add(int(valid.max()))
    assert min(heights) >= 90 and max(heights) <= 110 and len(heights) > 5
