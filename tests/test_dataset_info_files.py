"""Dataset description files: built-ins on disk, validation with clear errors, JSON/YAML round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deeplab_resnet.cli import main
from deeplab_resnet.dataset_info import CAMVID, VOC, DatasetInfo, load_dataset_info, save_dataset_info
from deeplab_resnet.errors import DeepLabError

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


@pytest.mark.parametrize("name, builtin", [("camvid", CAMVID), ("voc12", VOC)])
def test_shipped_description_files_are_the_builtins(name: str, builtin: DatasetInfo) -> None:
    info = load_dataset_info(DATASETS / f"{name}.json")
    assert info == builtin and info.num_classes == builtin.num_classes


def test_describe_prints_a_file_that_loads_back(tmp_path: Path, capsys) -> None:
    assert main(["data", "describe", "camvid"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "c.json").write_text(text)
    assert load_dataset_info(tmp_path / "c.json") == CAMVID
    assert json.loads(text)["ignore_label"] == 11


def test_yaml_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    info = DatasetInfo("roads", ("sky", "road", "car"), ((1, 2, 3), (4, 5, 6), (7, 8, 9)), (1.5, 2.5, 3.5), 3)
    save_dataset_info(info, tmp_path / "roads.yaml")
    assert load_dataset_info(tmp_path / "roads.yaml") == info


def test_minimal_description_takes_defaults(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('{"class_names": ["bg", "thing"], "description": "two classes"}')
    info = load_dataset_info(tmp_path / "d.json")
    assert info.name == "d" and info.ignore_label == 255 and info.palette == VOC.palette[:2]
    assert info.mean_bgr == VOC.mean_bgr and info.extra == {"description": "two classes"}


@pytest.mark.parametrize(
    "content, message",
    [
        ({"class_names": ["a", "b"], "mean_rgb": [1, 2, 3]}, "give the mean as 'mean_bgr'"),
        ({"class_names": ["a", "b"], "ignore": 255}, "unknown key\\(s\\) ignore"),
        ({"class_names": ["a", "b"], "ignore_label": 1}, "ignore_label 1 is class 'b'"),
        ({"class_names": ["a", "b"], "ignore_label": 300}, "must be 0..255"),
        ({"class_names": ["a", "b"], "ignore_label": "x"}, "ignore_label must be an integer"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "num_classes=3 but 2 class_names"),
        ({"class_names": ["a", "a"]}, "distinct \\(repeated: a\\)"),
        ({"class_names": "ab"}, "must be a list of names"),
        ({"class_names": ["a", "b"], "palette": [[0, 0, 0], [0, 0, 256]]}, "palette colour 1 \\[0, 0, 256\\]"),
        ({"class_names": ["a", "b"], "palette": [[0, 0, 0]]}, "palette has 1 colours for 2 classes"),
        ({"class_names": ["a", "b"], "mean_bgr": [1, 2]}, "mean_bgr \\[b,g,r\\]"),
        ({"names": ["a"]}, "unknown key"),
    ],
)
def test_invalid_descriptions_are_clear_errors(tmp_path: Path, content: dict, message: str) -> None:
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(DeepLabError, match=message):
        load_dataset_info(tmp_path / "bad.json")


def test_unreadable_files_are_clear_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.json").write_text('{"class_names": ["a",')
    with pytest.raises(DeepLabError, match="not a valid dataset description"):
        load_dataset_info(tmp_path / "broken.json")
    assert main(["data", "describe", str(tmp_path / "missing.json")]) == 2
    assert "dataset description not found" in capsys.readouterr().err


def test_weight_metadata_stays_lenient() -> None:
    """Weight files store to_dict(); reading them back must not apply the file-level strictness."""
    d = CAMVID.to_dict()
    d["future_field"] = 1
    assert DatasetInfo.from_dict(d) == CAMVID
