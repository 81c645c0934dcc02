"""``deeplab data convert-masks``: colour masks back to exactly the class indices they were drawn from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.data.tools.convert_masks import colours_to_labels, convert_masks, load_colour_table
from deeplab_resnet.dataset_info import CAMVID, VOC, VOID_COLOUR, voc_palette
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.images import colorize, read_label


def _labels(seed: int, num_classes: int, ignore: int) -> np.ndarray:
    labels = np.random.default_rng(seed).integers(0, num_classes, size=(9, 13), dtype=np.uint8)
    labels[0, :] = ignore
    return labels


def _rgb(labels: np.ndarray, palette: list[tuple[int, int, int]], ignore_colour, ignore: int) -> np.ndarray:
    """Independent drawing of a colour mask (a plain lookup, not the code under test)."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    table[ignore] = ignore_colour
    return table[labels]


def test_voc_colours_round_trip_with_void(tmp_path: Path) -> None:
    src = tmp_path / "masks" / "sub"
    src.mkdir(parents=True)
    expected = {}
    for i in range(3):
        labels = _labels(i, 21, 255)
        Image.fromarray(_rgb(labels, voc_palette(21), VOID_COLOUR, 255)).save(src / f"m{i}.png")
        expected[f"m{i}"] = labels
    out = tmp_path / "out"
    assert main(["data", "convert-masks", str(tmp_path / "masks"), str(out), "--workers", "2", "--quiet"]) == 0
    for name, labels in expected.items():
        img = Image.open(out / "sub" / f"{name}.png")
        assert img.mode == "P" and img.getpalette()[:63] == VOC.palette_bytes()[:63]
        np.testing.assert_array_equal(np.asarray(img), labels)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    result = convert_masks(tmp_path / "masks", out, load_colour_table(None), workers=1, progress=False)
    assert (result.written, result.unchanged) == (0, 3)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes


def test_unknown_colours_are_reported_and_only_mapped_when_asked(tmp_path: Path, capsys) -> None:
    labels = _labels(5, 21, 255)
    rgb = _rgb(labels, voc_palette(21), VOID_COLOUR, 255)
    rgb[2, :4] = (1, 2, 3)
    rgb[5, 5] = (250, 0, 250)
    (tmp_path / "in").mkdir()
    Image.fromarray(rgb).save(tmp_path / "in" / "x.png")
    args = ["data", "convert-masks", str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "1", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "(1, 2, 3): 4 px" in err and "(250, 0, 250): 1 px" in err and "--unknown-to-ignore" in err
    assert not (tmp_path / "out" / "x.png").exists()  # nothing guessed, nothing written

    assert main(args + ["--unknown-to-ignore"]) == 0
    labels[2, :4] = 255
    labels[5, 5] = 255
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "x.png"), labels)


def test_camvid_description_round_trips_a_real_annotation(camvid: Path, tmp_path: Path) -> None:
    labels = read_label(camvid / "valannot" / sorted(p.name for p in (camvid / "valannot").iterdir())[0])
    assert set(np.unique(labels)) <= set(range(12))
    (tmp_path / "in").mkdir()
    Image.fromarray(colorize(labels, CAMVID)).save(tmp_path / "in" / "a.png")
    table = load_colour_table(str(Path(__file__).parents[1] / "datasets" / "camvid.json"))
    result = convert_masks(tmp_path / "in", tmp_path / "out", table, workers=1, progress=False)
    assert result.written == 1 and not result.unknown
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "a.png"), labels)


def test_csv_and_json_colour_tables(tmp_path: Path) -> None:
    colours = [(10, 20, 30), (200, 0, 0), (0, 0, 0)]
    # CamVid's class_dict.csv style: name,r,g,b with the row order as the label.
    (tmp_path / "classes.csv").write_text(
        "name,r,g,b\n" + "".join(f"c{i},{r},{g},{b}\n" for i, (r, g, b) in enumerate(colours))
    )
    (tmp_path / "labelled.csv").write_text("r,g,b,label\n10,20,30,2\n200,0,0,0\n0,0,0,255\n")
    (tmp_path / "map.json").write_text(json.dumps({"#0a141e": 2, "200,0,0": 0, "0, 0, 0": 255}))
    rgb = np.array([[colours[0], colours[1], colours[2], colours[0]]], np.uint8)
    by_row, missing = colours_to_labels(rgb, load_colour_table(str(tmp_path / "classes.csv")), None)
    assert by_row.tolist() == [[0, 1, 2, 0]] and not missing
    for name in ("labelled.csv", "map.json"):
        labels, missing = colours_to_labels(rgb, load_colour_table(str(tmp_path / name)), None)
        assert labels.tolist() == [[2, 0, 255, 2]] and not missing, name


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,r,g\nx,1,2\n", "must name the columns"),
        ("r,g,b\n1,2,300\n", "not r,g,b"),
        ("r,g,b,label\n1,2,3,x\n", "not an integer"),
    ],
)
def test_bad_colour_tables_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(DeepLabError, match=message):
        load_colour_table(str(tmp_path / "t.csv"))


def test_palette_masks_keep_label_indices_and_convert_arbitrary_ones(tmp_path: Path) -> None:
    labels = _labels(9, 21, 255)
    (tmp_path / "in").mkdir()
    voc_style = Image.fromarray(labels, "P")
    voc_style.putpalette(VOC.palette_bytes())
    voc_style.save(tmp_path / "in" / "voc_style.png")
    # An editor's indexed PNG: the same colours, numbered in another order.
    order = np.random.default_rng(1).permutation(256).astype(np.uint8)
    shuffled = Image.fromarray(order[labels], "P")
    table = np.asarray(VOC.palette_bytes(), np.uint8).reshape(256, 3)
    inverse = np.argsort(order)
    shuffled.putpalette(table[inverse].ravel().tolist())
    shuffled.save(tmp_path / "in" / "editor.png")
    assert not np.array_equal(np.asarray(shuffled), labels)
    result = convert_masks(tmp_path / "in", tmp_path / "out", load_colour_table(None), workers=1, progress=False)
    assert result.written == 2 and not result.unknown and not result.errors
    for name in ("voc_style", "editor"):
        np.testing.assert_array_equal(read_label(tmp_path / "out" / f"{name}.png"), labels, err_msg=name)


def test_convert_masks_reads_a_csv_written_with_a_byte_order_mark(tmp_path: Path, capsys) -> None:
    """Excel saves "CSV UTF-8" with a BOM; the header's first column must still read as ``r``."""
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    colours = np.array([(10, 20, 30), (200, 0, 0), (0, 0, 0)], np.uint8)
    (tmp_path / "in").mkdir()
    Image.fromarray(colours[labels]).save(tmp_path / "in" / "m.png")
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbfr,g,b,label\r\n10,20,30,0\r\n200,0,0,1\r\n0,0,0,2\r\n")
    args = ["data", "convert-masks", str(tmp_path / "in"), str(tmp_path / "out"), "--colours", str(tmp_path / "t.csv")]
    assert main(args + ["--workers", "1", "--quiet"]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "m.png"), labels)


def test_convert_masks_names_the_line_of_a_non_utf8_csv(tmp_path: Path, capsys) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "in" / "m.png")
    (tmp_path / "t.csv").write_bytes(b"name,r,g,b\nbackground,0,0,0\ncaf\xe9,1,2,3\n")  # Latin-1 e-acute
    args = ["data", "convert-masks", str(tmp_path / "in"), str(tmp_path / "out"), "--colours", str(tmp_path / "t.csv")]
    assert main(args + ["--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{tmp_path / 't.csv'}:3: byte 0xe9 is not UTF-8" in err
    assert "Traceback" not in err
