"""List files: the one parser behind training, evaluation, segment's list inputs and VOC split files."""

from __future__ import annotations

from pathlib import Path

import pytest

from deeplab_resnet.cli import main
from deeplab_resnet.data.lists import list_entries, read_list, read_text_lines
from deeplab_resnet.data.tools.prepare_voc import read_ids
from deeplab_resnet.errors import DeepLabError

BOM = b"\xef\xbb\xbf"


def test_pairs_are_joined_by_concatenation_with_line_numbers(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("# comment\n\n/JPEGImages/a.jpg /Seg/a.png\nJPEGImages/b.jpg\tSeg/b.png\n")
    pairs = read_list(tmp_path, tmp_path / "list.txt")
    assert [(p.image, p.label, p.line) for p in pairs] == [
        (tmp_path / "JPEGImages/a.jpg", tmp_path / "Seg/a.png", 3),
        (tmp_path / "JPEGImages/b.jpg", tmp_path / "Seg/b.png", 4),
    ]


def test_byte_order_mark_is_not_part_of_the_first_path(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_bytes(BOM + b"/a.jpg /a.png\r\n/b.jpg /b.png\r\n")
    pairs = read_list(tmp_path, tmp_path / "list.txt")
    assert pairs[0].image == tmp_path / "a.jpg" and pairs[1].label == tmp_path / "b.png"
    assert read_text_lines(tmp_path / "list.txt") == ["/a.jpg /a.png", "/b.jpg /b.png"]


def test_undecodable_byte_is_one_error_naming_file_and_line(tmp_path: Path) -> None:
    # With a BOM too, so the line count is taken on the right bytes.
    (tmp_path / "list.txt").write_bytes(BOM + b"/a.jpg /a.png\n# ok\n/caf\xe9.jpg /caf\xe9.png\n")
    with pytest.raises(DeepLabError) as info:
        read_list(tmp_path, tmp_path / "list.txt")
    assert str(info.value) == f"{tmp_path / 'list.txt'}:3: byte 0xe9 is not UTF-8; save the list file as UTF-8"


def test_missing_and_malformed_lists(tmp_path: Path) -> None:
    with pytest.raises(DeepLabError, match="list file not found"):
        read_list(tmp_path, tmp_path / "nope.txt")
    (tmp_path / "three.txt").write_text("/a.jpg /a.png\n/b.jpg /b.png /extra\n")
    with pytest.raises(DeepLabError, match=r"three.txt:2: expected 'IMAGE \[LABEL\]', got 3 fields"):
        read_list(tmp_path, tmp_path / "three.txt")
    (tmp_path / "images.txt").write_text("/a.jpg\n")
    with pytest.raises(DeepLabError, match=r"images.txt:1: no label path"):
        read_list(tmp_path, tmp_path / "images.txt")
    assert read_list(tmp_path, tmp_path / "images.txt", require_labels=False)[0].label is None
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DeepLabError, match="the list is empty"):
        read_list(tmp_path, tmp_path / "empty.txt")
    assert list_entries(tmp_path / "empty.txt") == []


def test_voc_split_files_use_the_same_reader(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_bytes(BOM + b"2007_000032\n\n2007_000039 1\n")
    assert read_ids(tmp_path / "train.txt") == ["2007_000032", "2007_000039"]
    (tmp_path / "bad.txt").write_bytes(b"2007_000032\n2007_\xff\n")
    with pytest.raises(DeepLabError, match=r"bad.txt:2: byte 0xff is not UTF-8; save the split file as UTF-8"):
        read_ids(tmp_path / "bad.txt")


def test_segment_list_input_with_bom_and_with_latin1(tmp_path: Path, tiny_weights, voc_fixture, capsys) -> None:
    listed = tmp_path / "list.txt"
    listed.write_bytes(BOM + b"/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n")
    args = ["segment", str(listed), "--data-dir", str(voc_fixture), "--weights", str(tiny_weights), "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "2007_000032.png").is_file()
    listed.write_bytes(b"/JPEGImages/\xe9t\xe9.jpg\n")
    assert main([*args, "-o", str(tmp_path / "out2")]) == 2
    # the "backend: ..." line of --backend auto (first run) is information, not part of the error
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("backend: ")]
    assert len(err) == 1 and f"{listed}:1: byte 0xe9 is not UTF-8" in err[0]
