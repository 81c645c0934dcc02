"""``deeplab data check``: the real fixtures pass; a corrupted copy names each problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.data.check import PairCheck, check_dataset, check_pair, format_report
from deeplab_resnet.data.lists import read_list
from deeplab_resnet.dataset_info import CAMVID, VOC


def _numpy_histogram(data_dir: Path, list_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent count: pixels per class and images per class, straight from the PNGs."""
    pixels, images = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for line in list_path.read_text().splitlines():
        labels = np.asarray(Image.open(str(data_dir) + line.split()[1]))
        for c in range(num_classes):
            n = int((labels == c).sum())
            pixels[c] += n
            images[c] += n > 0
    return pixels, images


def test_voc_fixture_passes_with_exact_histograms(voc_fixture: Path, capsys) -> None:
    list_path = voc_fixture / "list_all.txt"
    report = check_dataset(voc_fixture, [list_path], VOC, workers=2, progress=False)
    assert report.ok and report.pairs == report.labelled == 31
    pixels, images = _numpy_histogram(voc_fixture, list_path, 21)
    np.testing.assert_array_equal(report.class_pixels, pixels)
    np.testing.assert_array_equal(report.class_images, images)
    assert report.label_modes == {"P": 31} and not report.out_of_range
    assert report.ignore_pixels == sum(
        int((np.asarray(Image.open(p.label)) == 255).sum()) for p in read_list(voc_fixture, list_path)
    )
    assert main(["data", "check", "--data-dir", str(voc_fixture), "--data-list", str(list_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"   15  person           {pixels[15]:>14,}" in out and "OK: no errors" in out
    assert "classes that never appear: 13 horse, 19 train" in out  # a warning, not an error


def test_camvid_val_passes_with_camvid_description(camvid: Path, capsys) -> None:
    args = ["data", "check", "--data-dir", str(camvid), "--data-list", str(camvid / "list_val.txt")]
    assert main(args + ["--dataset", "camvid", "--workers", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    pixels, _ = _numpy_histogram(camvid, camvid / "list_val.txt", 11)
    assert f"    3  road             {pixels[3]:>14,}" in out
    assert "ignore label 11" in out and "OK: no errors" in out


@pytest.mark.slow
def test_camvid_train_and_val_pass(camvid: Path) -> None:
    report = check_dataset(camvid, [camvid / "list_train.txt", camvid / "list_val.txt"], CAMVID, progress=False)
    assert report.ok and report.pairs == 468 and report.label_modes == {"L": 468}


def _corrupted_copy(voc_fixture: Path, tmp: Path) -> tuple[Path, dict[str, str]]:
    """Eight pairs of the fixture, six of them broken in a different way each."""
    lines = (voc_fixture / "list_all.txt").read_text().splitlines()[:8]
    for d in ("JPEGImages", "SegmentationClassAug"):
        (tmp / d).mkdir()
    names = [line.split()[0][len("/JPEGImages/") : -4] for line in lines]
    for name in names:
        shutil.copy(voc_fixture / "JPEGImages" / f"{name}.jpg", tmp / "JPEGImages")
        shutil.copy(voc_fixture / "SegmentationClassAug" / f"{name}.png", tmp / "SegmentationClassAug")
    lab = tmp / "SegmentationClassAug"
    truncated, rgb, small, missing, bad_value = names[:5]
    data = (lab / f"{truncated}.png").read_bytes()
    (lab / f"{truncated}.png").write_bytes(data[: len(data) // 2])
    Image.open(lab / f"{rgb}.png").convert("RGB").save(lab / f"{rgb}.png")
    Image.open(lab / f"{small}.png").resize((50, 40), Image.NEAREST).save(lab / f"{small}.png")
    (tmp / "JPEGImages" / f"{missing}.jpg").unlink()
    img = Image.open(lab / f"{bad_value}.png")
    arr = np.asarray(img).copy()
    arr[:3, :4] = 37
    fixed = Image.fromarray(arr, "P")
    fixed.putpalette(img.getpalette())
    fixed.save(lab / f"{bad_value}.png")
    (tmp / "list.txt").write_text("\n".join(lines + [lines[6]]) + "\n")  # line 9 repeats line 7
    expected = {
        "truncated": f"{truncated}.png: damaged or truncated image",
        "rgb": f"{rgb}.png: label is an RGB colour image",
        "size": f"{small}.png: size 50x40 differs from its image",
        "missing": f"file not found: {tmp}/JPEGImages/{missing}.jpg",
        "label 37": f"{bad_value}.png: label values outside 0..20 and the ignore label 255: 37 (12 px)",
        "duplicate": f"list.txt:9: duplicate entry {tmp}/JPEGImages/{names[6]}.jpg (first on line 7)",
    }
    return tmp, expected


def test_corrupted_copy_names_each_problem(voc_fixture: Path, tmp_path: Path, capsys) -> None:
    data_dir, expected = _corrupted_copy(voc_fixture, tmp_path)
    report = check_dataset(data_dir, [data_dir / "list.txt"], VOC, workers=1, progress=False)
    assert not report.ok and len(report.errors) == len(expected)
    assert report.out_of_range == {37: 12}
    report_path = tmp_path / "report.json"
    args = ["data", "check", "--data-dir", str(data_dir), "--data-list", str(data_dir / "list.txt"), "--quiet"]
    assert main(args + ["--report", str(report_path)]) == 1
    out = capsys.readouterr().out
    for problem, text in expected.items():
        assert text in out, problem
    assert "6 error(s):" in out and "RGB 1" in out  # the label modes line counts the RGB mask
    import json

    assert json.loads(report_path.read_text())["out_of_range"] == {"37": 12}


def test_overlapping_lists_are_an_error(voc_fixture: Path, tmp_path: Path) -> None:
    lines = (voc_fixture / "list_all.txt").read_text().splitlines()[:3]
    (tmp_path / "train.txt").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[1:]) + "\n")
    report = check_dataset(voc_fixture, [tmp_path / "train.txt", tmp_path / "val.txt"], VOC, workers=1, progress=False)
    assert report.pairs == 3
    assert len(report.errors) == 1 and "lists overlap" in report.errors[0] and lines[1].split()[0] in report.errors[0]


def test_check_pair_keeps_its_interface(voc_fixture: Path) -> None:
    pair = read_list(voc_fixture, voc_fixture / "list_all.txt")[0]
    result = check_pair(pair)
    assert isinstance(result, PairCheck) and result.errors == [] and result.label_mode == "P"
    assert result.histogram is not None and result.histogram.shape == (256,)
    assert result.out_of_range(21, 255) == 0
    assert result.image_size == Image.open(pair.image).size


def test_num_classes_override_turns_values_out_of_range(voc_fixture: Path) -> None:
    from dataclasses import replace

    report = check_dataset(voc_fixture, [voc_fixture / "list_val.txt"], VOC, workers=1, progress=False)
    small = replace(VOC, class_names=VOC.class_names[:15], palette=VOC.palette[:15])
    narrow = check_dataset(voc_fixture, [voc_fixture / "list_val.txt"], small, workers=1, progress=False)
    assert narrow.out_of_range == {v: int(report.class_pixels[v]) for v in range(15, 21) if report.class_pixels[v] > 0}
    assert not narrow.ok and "out of range" in format_report(narrow)
