"""One rule for classes / ignore label / mean / palette, and every command follows it.

The same options go through train's ``resolve_dataset``, ``evaluate --predictions``,
``data check``, ``convert`` and ``load_model``; each must give the answer written in the table
(the expected values are spelled out by hand from docs/original.md §2 and §7, not computed by the
code under test).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import tiny_model
from fixtures_weights import caffe_layers, random_tf_arrays, tf_variables, write_caffemodel

from deeplab_resnet import DeepLabError, load_model, save_weights
from deeplab_resnet.cli import build_parser
from deeplab_resnet.commands import data as data_command
from deeplab_resnet.commands import evaluate as evaluate_command
from deeplab_resnet.commands.common import dataset_from_args
from deeplab_resnet.dataset_info import DatasetInfo, load_dataset_info
from deeplab_resnet.training.loop import TrainConfig, resolve_dataset
from deeplab_resnet.weights.native import read_native

IMG_MEAN = (104.00698793, 116.66876762, 122.67891434)  # docs/original.md §2
VOC_FIRST = ("background", "aeroplane", "bicycle")  # docs/original.md §7
# The VOC colour map's first colours (docs/original.md §7): 0 black, then the interleaved bits.
VOC_COLOURS = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128))
STREET = {
    "name": "street",
    "class_names": ["road", "car", "person"],
    "palette": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
    "mean_bgr": [10.0, 20.0, 30.0],
    "ignore_label": 7,
}


def generic(n: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(n))


# (--dataset, --num-classes, --ignore-label) -> expected fields, or the error's text.
CASES = [
    ((None, None, None), {"n": 21, "first": VOC_FIRST, "ignore": 255, "mean": IMG_MEAN, "colours": VOC_COLOURS}),
    (("voc12", 21, None), {"n": 21, "first": VOC_FIRST, "ignore": 255, "mean": IMG_MEAN}),
    ((None, None, 254), {"n": 21, "first": VOC_FIRST, "ignore": 254, "mean": IMG_MEAN}),
    ((None, 5, None), {"names": generic(5), "ignore": 255, "mean": IMG_MEAN, "colours": VOC_COLOURS[:5]}),
    (("camvid", None, None), {"n": 11, "first": ("sky", "building", "pole"), "ignore": 11, "mean": IMG_MEAN}),
    (("camvid", 11, 200), {"n": 11, "first": ("sky", "building", "pole"), "ignore": 200}),
    (("camvid", 5, None), {"names": generic(5), "ignore": 11, "mean": IMG_MEAN, "colours": VOC_COLOURS[:5]}),
    (("street", None, None), {"names": ("road", "car", "person"), "ignore": 7, "mean": (10.0, 20.0, 30.0),
                              "colours": ((1, 2, 3), (4, 5, 6), (7, 8, 9))}),
    (("street", 5, None), {"names": generic(5), "ignore": 7, "mean": (10.0, 20.0, 30.0), "colours": VOC_COLOURS[:5]}),
    (("street", 7, 255), {"names": generic(7), "ignore": 255, "mean": (10.0, 20.0, 30.0), "colours": VOC_COLOURS}),
    (("street", 8, None), "ignore label 7 of dataset 'street' a class"),
    (("camvid", 12, None), "ignore label 11 of dataset 'camvid' a class"),
    ((None, None, 3), "--ignore-label 3 is class 'bird'"),
    ((None, None, 300), "--ignore-label 300: must be 0..255"),
    ((None, 300, None), "--num-classes 300: must be 1..255"),
    ((None, 0, None), "--num-classes 0: must be 1..255"),
]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("rule")
    street = tmp / "street.json"
    street.write_text(json.dumps(STREET))
    native = tmp / "voc_tiny.safetensors"
    save_weights(tiny_model(), native)  # 21 classes, VOC metadata
    caffemodel = tmp / "voc_tiny.caffemodel"
    write_caffemodel(caffemodel, caffe_layers(random_tf_arrays(tf_variables((1, 1, 1, 1), width=8), seed=3)))
    return {"street": street, "native": native, "caffemodel": caffemodel, "tmp": tmp}


def _options(spec, num_classes, ignore_label) -> list[str]:
    opts = []
    for flag, value in (("--dataset", spec), ("--num-classes", num_classes), ("--ignore-label", ignore_label)):
        if value is not None:
            opts += [flag, str(value)]
    return opts


def via_train(spec, num_classes, ignore_label, files) -> DatasetInfo:
    return resolve_dataset(TrainConfig(dataset=spec, num_classes=num_classes, ignore_label=ignore_label), None)


def via_evaluate_predictions(spec, num_classes, ignore_label, files) -> DatasetInfo:
    argv = ["evaluate", "--data-dir", "d", "--data-list", "l", "--predictions", "p"]
    return evaluate_command.dataset_from_args(
        build_parser().parse_args(argv + _options(spec, num_classes, ignore_label))
    )


def via_data_check(spec, num_classes, ignore_label, files) -> DatasetInfo:
    argv = ["data", "check", "--data-dir", "d", "--data-list", "l"]
    return data_command.dataset_from_args(build_parser().parse_args(argv + _options(spec, num_classes, ignore_label)))


def _new_classifier(num_classes) -> bool:
    return num_classes not in (None, 21)  # the tiny files have 21 classes


def via_convert(spec, num_classes, ignore_label, files) -> DatasetInfo:
    dst = files["tmp"] / "converted.safetensors"
    dst.unlink(missing_ok=True)
    argv = ["convert", str(files["caffemodel"]), str(dst), *_options(spec, num_classes, ignore_label)]
    if _new_classifier(num_classes) or spec in ("camvid", str(files["street"])):
        argv.append("--not-restore-last")
    args = build_parser().parse_args(argv)
    assert args._run(args) == 0
    return read_native(dst)[1].dataset


def via_load_model(spec, num_classes, ignore_label, files) -> DatasetInfo:
    new = _new_classifier(num_classes) or spec in ("camvid", str(files["street"]))
    model = load_model(
        files["native"], dataset=spec, num_classes=num_classes, ignore_label=ignore_label, not_restore_last=new
    )
    return model.dataset


PLACES = [via_train, via_evaluate_predictions, via_data_check, via_convert, via_load_model]


def _check(info: DatasetInfo, want: dict) -> None:
    if "names" in want:
        assert info.class_names == want["names"]
    else:
        assert info.num_classes == want["n"] and info.class_names[:3] == want["first"]
    assert info.ignore_label == want["ignore"]
    if "mean" in want:
        assert info.mean_bgr == pytest.approx(want["mean"], abs=1e-9)
    if "colours" in want:
        assert info.palette[: len(want["colours"])] == want["colours"]
    assert len(info.palette) >= info.num_classes


@pytest.mark.parametrize("place", PLACES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("options, want", CASES, ids=lambda v: str(v) if isinstance(v, tuple) else "")
def test_every_command_applies_the_same_rule(files, place, options, want) -> None:
    spec, num_classes, ignore_label = options
    spec = str(files["street"]) if spec == "street" else spec
    if isinstance(want, str):
        with pytest.raises(DeepLabError, match=re.escape(want)):
            place(spec, num_classes, ignore_label, files)
    else:
        _check(place(spec, num_classes, ignore_label, files), want)


def test_an_explicit_description_wins_over_the_weights_metadata(tmp_path, files) -> None:
    """Weights that carry their own description: train (restoring) and load_model agree."""
    street = load_dataset_info(files["street"])
    path = tmp_path / "street.safetensors"
    save_weights(tiny_model(num_classes=3, dataset=street), path)
    meta_dataset = read_native(path)[1].dataset
    for spec, num_classes, want in (
        (None, None, {"names": ("road", "car", "person"), "ignore": 7, "mean": (10.0, 20.0, 30.0)}),
        ("voc12", None, {"n": 21, "first": VOC_FIRST, "ignore": 255, "mean": IMG_MEAN}),
        (None, 5, {"names": generic(5), "ignore": 7, "mean": (10.0, 20.0, 30.0), "colours": VOC_COLOURS[:5]}),
    ):
        cfg = TrainConfig(dataset=spec, num_classes=num_classes)
        _check(resolve_dataset(cfg, meta_dataset), want)
        loaded = load_model(path, dataset=spec, num_classes=num_classes, not_restore_last=bool(spec or num_classes))
        _check(loaded.dataset, want)


def test_load_model_still_refuses_another_class_count_without_not_restore_last(files) -> None:
    with pytest.raises(DeepLabError, match="the weights have 21 classes but 11 were asked for"):
        load_model(files["native"], dataset="camvid")


def test_commands_without_weights_share_one_dataset_function() -> None:
    """``evaluate --predictions`` and ``data check`` read their options through the same function."""
    assert evaluate_command.dataset_from_args is dataset_from_args
    assert data_command.dataset_from_args is dataset_from_args
