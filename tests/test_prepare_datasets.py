"""``deeplab data prepare-{cityscapes,gta5,synthia,cocostuff,ade20k}`` on miniature official layouts.

Each miniature is built here the way the official download lays it out (zips where the dataset
ships zips, SYNTHIA's 16-bit PNGs written by a PNG encoder in this file), with labels drawn with
every ID of the official table, the ones that map to ignore included. The expected training labels
come from tables typed into this file from the official sources, not from the package.
"""

from __future__ import annotations

import hashlib
import json
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.dataset_info import load_dataset_info

# cityscapesScripts labels.py: the 19 evaluated IDs and their trainIds; every other ID is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                        24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
# SYNTHIA README IDs -> Cityscapes trainIds (road 3->0, sidewalk 4->1, building 2->2, wall 21->3,
# fence 5->4, pole 7->5, light 15->6, sign 9->7, vegetation 6->8, sky 1->10, pedestrian 10->11,
# rider 17->12, car 8->13, bus 19->15, motorcycle 12->17, bicycle 11->18); 0, 13, 14, 16, 18, 20, 22 ignored.
SYNTHIA_TRAIN_IDS = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12,
                     8: 13, 19: 15, 12: 17, 11: 18}  # fmt: skip
# COCO-Stuff labels.md: thing IDs "Removed from COCO".
COCO_UNUSED = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91]


def expected_labels(stored: np.ndarray, table: dict[int, int]) -> np.ndarray:
    """Pixel by pixel, with a plain loop: the stored value through ``table``, 255 where it has none."""
    out = np.empty(stored.shape, np.uint8)
    for index, value in np.ndenumerate(stored):
        out[index] = table.get(int(value), 255)
    return out


def id_map(shape: tuple[int, int], ids: list[int], seed: int) -> np.ndarray:
    """A label map holding every one of ``ids`` at least once, in a random arrangement."""
    rng = np.random.default_rng(seed)
    flat = np.resize(np.asarray(ids), shape[0] * shape[1])
    return rng.permutation(flat).reshape(shape)


def read_png(path: Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as img:
        return np.asarray(img).copy(), img.mode


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)
    return path


def zip_folder(folder: Path, archive: Path, arcroot: str = "") -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, (Path(arcroot) / path.relative_to(folder)).as_posix())
    return archive


def checksums(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of every file under ``root``."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(args: list[str], capsys, workers: int = 1) -> tuple[int, str, str]:
    code = main(["data", *args, "--workers", str(workers), "--quiet"])
    out = capsys.readouterr()
    return code, out.out, out.err


def list_entries(path: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------- Cityscapes


def build_cityscapes(root: Path, camvid: Path) -> dict[str, np.ndarray]:
    """Two train images, one val, one test (real CamVid pixels); returns the stored labelIds."""
    frames = sorted((camvid / "train").glob("*.png"))[:4]
    layout = [("train", "aachen", "aachen_000000_000019"), ("train", "bochum", "bochum_000000_000313"),
              ("val", "lindau", "lindau_000000_000019"), ("test", "berlin", "berlin_000000_000019")]  # fmt: skip
    stored = {}
    for n, ((split, city, stem), frame) in enumerate(zip(layout, frames)):
        image = np.asarray(Image.open(frame).convert("RGB"))[:12, :16]
        save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
        if split != "test":
            ids = id_map((12, 16), list(range(34)) + [40], seed=n)  # 40: in no table
            save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids, "L")
            stored[f"{split}/{city}/{stem}"] = ids
    return stored


def test_cityscapes_from_the_official_zips(tmp_path: Path, capsys) -> None:
    camvid = shared_path("data", "camvid")
    stored = build_cityscapes(tmp_path / "src", camvid)
    downloads = tmp_path / "downloads"
    left = zip_folder(tmp_path / "src" / "leftImg8bit", downloads / "leftImg8bit_trainvaltest.zip", "leftImg8bit")
    fine = zip_folder(tmp_path / "src" / "gtFine", downloads / "gtFine_trainvaltest.zip", "gtFine")
    root = tmp_path / "cityscapes"

    code, out, err = run(["prepare-cityscapes", str(left), str(fine), "--extract-to", str(root)], capsys)
    assert code == 0, err
    assert "labels: 3 written, 0 already up to date" in out
    for key, ids in stored.items():
        split, city, stem = key.split("/")
        labels, mode = read_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png")
        assert mode == "P"
        np.testing.assert_array_equal(labels, expected_labels(ids, CITYSCAPES_TRAIN_IDS))
    lists = root / "lists"
    assert list_entries(lists / "train.txt") == [
        ("/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
         "/gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"),
        ("/leftImg8bit/train/bochum/bochum_000000_000313_leftImg8bit.png",
         "/gtFine/train/bochum/bochum_000000_000313_gtFine_labelTrainIds.png"),
    ]  # fmt: skip
    assert list_entries(lists / "val.txt") == [
        ("/leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png",
         "/gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png"),
    ]  # fmt: skip
    assert list_entries(lists / "test.txt") == [("/leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png",)]
    assert json.loads((lists / "cityscapes.json").read_text())["class_names"][:3] == ["road", "sidewalk", "building"]
    # The miniature is not the official 2,975 / 500 / 1,525, and 40 is in no table: both are said.
    assert "train: 2 images found, the official Cityscapes fine train split has 2,975" in err
    assert "val: 1 images found, the official Cityscapes fine val split has 500" in err
    assert "label values outside the official table were set to 255: 40" in err

    # The prepared tree passes 'data check' with the built-in description.
    assert main(["data", "check", "--data-dir", str(root), "--data-list", str(lists / "train.txt"),
                 "--dataset", "cityscapes", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()

    before = checksums(root)
    code, out, err = run(["prepare-cityscapes", str(left), str(fine), "--extract-to", str(root)], capsys, workers=2)
    assert code == 0 and "labels: 0 written, 3 already up to date" in out
    assert checksums(root) == before  # nothing rewritten: same bytes, same modification times


def test_cityscapes_damaged_label_is_rewritten(tmp_path: Path, capsys) -> None:
    camvid = shared_path("data", "camvid")
    stored = build_cityscapes(tmp_path, camvid)
    assert run(["prepare-cityscapes", str(tmp_path)], capsys)[0] == 0
    target = tmp_path / "gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png"
    target.write_bytes(target.read_bytes()[:40])  # an interrupted write of an older tool
    code, out, _ = run(["prepare-cityscapes", str(tmp_path)], capsys)
    assert code == 0 and "labels: 1 written, 2 already up to date" in out
    np.testing.assert_array_equal(
        read_png(target)[0], expected_labels(stored["val/lindau/lindau_000000_000019"], CITYSCAPES_TRAIN_IDS)
    )


# ---------------------------------------------------------------- GTA5


def test_gta5_palette_labels_and_a_size_mismatch(tmp_path: Path, capsys) -> None:
    root = tmp_path / "gta5"
    palette = [v for i in range(256) for v in (i, 255 - i, i // 2)]
    stored = {}
    for n, name in enumerate(["00001", "00002", "00003"]):
        save(root / "images" / f"{name}.png", np.full((10, 14, 3), 40 * n, np.uint8))
        ids = id_map((10, 14) if name != "00003" else (10, 13), list(range(34)), seed=10 + n)
        img = Image.fromarray(ids.astype(np.uint8), "P")
        img.putpalette(palette)
        (root / "labels").mkdir(exist_ok=True)
        img.save(root / "labels" / f"{name}.png")
        stored[name] = ids
    code, out, err = run(["prepare-gta5", str(root)], capsys)
    assert code == 0, err
    for name in ("00001", "00002"):
        labels, mode = read_png(root / "labels_trainIds" / f"{name}.png")
        assert mode == "P"
        np.testing.assert_array_equal(labels, expected_labels(stored[name], CITYSCAPES_TRAIN_IDS))
    assert [e[0] for e in list_entries(root / "lists" / "train.txt")] == ["/images/00001.png", "/images/00002.png"]
    assert (
        "1 labels differ in size from their image and are left out of the lists (e.g. 00003 (image 14x10, label 13x10))"
        in err
    )
    assert "train: 3 images found, the official GTA5 train split has 24,966" in err


# ---------------------------------------------------------------- SYNTHIA


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def write_png48(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG as SYNTHIA stores its labels, rows filtered None/Sub/Up/Paeth in turn."""
    height, width, _ = rgb.shape
    rows = [rgb[y].astype(">u2").tobytes() for y in range(height)]
    bpp, data = 6, b""
    for y, row in enumerate(rows):
        prev = rows[y - 1] if y else bytes(len(row))
        kind = y % 5 if y % 5 != 3 else 0  # 0 None, 1 Sub, 2 Up, 4 Paeth
        out = bytearray()
        for i, x in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up_left = prev[i - bpp] if i >= bpp else 0
            predictor = {0: 0, 1: left, 2: prev[i], 4: _paeth(left, prev[i], up_left)}[kind]
            out.append((x - predictor) % 256)
        data += bytes([kind]) + bytes(out)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(data))
                     + _png_chunk(b"IEND", b""))  # fmt: skip


def test_synthia_16bit_labels(tmp_path: Path, capsys) -> None:
    root = tmp_path / "RAND_CITYSCAPES"
    rng = np.random.default_rng(3)
    stored = {}
    for n, name in enumerate(["0000000", "0000001"]):
        save(root / "RGB" / f"{name}.png", rng.integers(0, 256, (10, 12, 3)))
        classes = id_map((10, 12), list(range(23)) + ([259] if n else []), seed=20 + n)  # 259 = 0x103: not 3
        rgb = np.stack([classes, rng.integers(0, 65536, (10, 12)), np.zeros((10, 12), int)], axis=-1)
        write_png48(root / "GT" / "LABELS" / f"{name}.png", rgb)  # G: instance IDs, high bytes set
        stored[name] = classes
    code, out, err = run(["prepare-synthia", str(tmp_path)], capsys, workers=2)  # the 16-bit reader in workers
    assert code == 0, err
    for name, classes in stored.items():
        labels, mode = read_png(root / "GT" / "LABELS_trainIds" / f"{name}.png")
        assert mode == "P"
        np.testing.assert_array_equal(labels, expected_labels(classes, SYNTHIA_TRAIN_IDS))
    assert list_entries(root / "lists" / "train.txt") == [
        ("/RGB/0000000.png", "/GT/LABELS_trainIds/0000000.png"),
        ("/RGB/0000001.png", "/GT/LABELS_trainIds/0000001.png"),
    ]
    assert "label values outside the official table were set to 255: 259 (e.g. in 0000001)" in err
    assert "train: 2 images found, the official SYNTHIA-RAND-CITYSCAPES train split has 9,400" in err
    assert load_dataset_info(root / "lists" / "synthia.json").class_names == load_dataset_info("cityscapes").class_names


def test_synthia_rar_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    rar = tmp_path / "SYNTHIA_RAND_CITYSCAPES.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x00")
    code, _, err = run(["prepare-synthia", str(rar)], capsys)
    assert code != 0
    assert err.count("\n") == 1 and "extract it (unrar x FILE) and pass the folder" in err


# ---------------------------------------------------------------- COCO-Stuff


def build_cocostuff(src: Path, downloads: Path) -> dict[str, np.ndarray]:
    stored = {}
    for split, names in (("train2017", ["000000000009", "000000000025"]), ("val2017", ["000000000139"])):
        for n, name in enumerate(names):
            save(src / "img" / split / f"{name}.jpg", np.full((14, 14, 3), 60 + 30 * n, np.uint8))
            values = id_map((14, 14), list(range(182)) + [255], seed=hash(name) % 1000)
            save(src / "maps" / split / f"{name}.png", values, "L")
            stored[f"{split}/{name}"] = values
    zip_folder(src / "img" / "train2017", downloads / "train2017.zip", "train2017")
    zip_folder(src / "img" / "val2017", downloads / "val2017.zip", "val2017")
    zip_folder(src / "maps", downloads / "stuffthingmaps_trainval2017.zip")
    return stored


@pytest.mark.parametrize("classes", [171, 182])
def test_cocostuff_from_the_official_zips(tmp_path: Path, capsys, classes: int) -> None:
    downloads = tmp_path / "downloads"
    stored = build_cocostuff(tmp_path / "src", downloads)
    zips = [str(downloads / z) for z in ("train2017.zip", "val2017.zip", "stuffthingmaps_trainval2017.zip")]
    root = tmp_path / "dataset"
    code, out, err = run(["prepare-cocostuff", *zips, "--extract-to", str(root), "--classes", str(classes)], capsys)
    assert code == 0, err
    assert (root / "images" / "train2017" / "000000000009.jpg").is_file()  # the README's layout
    used = [i for i in range(1, 183) if i not in COCO_UNUSED]
    # stored value = ID - 1; the 171-class label is the rank of the ID among the annotated IDs
    table = {i - 1: used.index(i) for i in used} if classes == 171 else {v: v for v in range(182)}
    for key, values in stored.items():
        labels, _ = read_png(root / f"annotations{classes}" / f"{key}.png")
        np.testing.assert_array_equal(labels, expected_labels(values, table))
    lists = root / ("lists" if classes == 171 else "lists182")
    assert list_entries(lists / "val.txt") == [
        ("/images/val2017/000000000139.jpg", f"/annotations{classes}/val2017/000000000139.png")
    ]
    assert len(list_entries(lists / "train.txt")) == 2
    assert load_dataset_info(lists / f"{'cocostuff' if classes == 171 else 'cocostuff182'}.json").num_classes == classes
    assert "the official COCO-Stuff-164k train split has 118,287" in err
    # 171: the 11 unused IDs occur in the miniature and become 255 without being "unknown".
    assert "outside the official table" not in err


# ---------------------------------------------------------------- ADE20K


def test_ade20k_other_becomes_ignore(tmp_path: Path, capsys) -> None:
    root = tmp_path / "ADEChallengeData2016"
    stored = {}
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        save(root / "images" / split / f"{name}.jpg", np.full((13, 13, 3), 90, np.uint8))
        stored[name] = save(root / "annotations" / split / f"{name}.png", id_map((13, 13), list(range(151)), 5), "L")
    archive = zip_folder(root, tmp_path / "ADEChallengeData2016.zip", "ADEChallengeData2016")
    out_dir = tmp_path / "out"
    code, _, err = run(["prepare-ade20k", str(archive), "--extract-to", str(out_dir)], capsys)
    assert code == 0, err
    table = {0: 255, **{k: k - 1 for k in range(1, 151)}}
    prepared = out_dir / "ADEChallengeData2016"
    for split, name in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        values = np.asarray(Image.open(stored[name]))
        np.testing.assert_array_equal(
            read_png(prepared / "annotations_trainIds" / split / f"{name}.png")[0], expected_labels(values, table)
        )
    assert list_entries(prepared / "lists" / "val.txt") == [
        ("/images/validation/ADE_val_00000001.jpg", "/annotations_trainIds/validation/ADE_val_00000001.png")
    ]
    assert "val: 1 images found, the official ADE20K SceneParsing val split has 2,000" in err


# ---------------------------------------------------------------- archives, descriptions, help


def test_a_folder_that_is_not_the_layout_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "images").mkdir()
    code, _, err = run(["prepare-ade20k", str(tmp_path)], capsys)
    assert code != 0 and err.count("\n") == 1
    assert "no ADE20K SceneParsing download found: looked for images, annotations in " in err


def test_zip_member_escaping_the_destination_is_refused(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "gtFine_trainvaltest.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("gtFine/train/ok.png", b"x")
        zf.writestr("../../escaped.txt", b"owned")
    dest = tmp_path / "deep" / "er"
    code, _, err = run(["prepare-cityscapes", str(archive), "--extract-to", str(dest)], capsys)
    assert code != 0 and "refusing unsafe member path '../../escaped.txt'" in err
    assert not (tmp_path / "escaped.txt").exists() and not (dest / "gtFine").exists()


def test_zip_symlink_member_is_refused(tmp_path: Path, capsys) -> None:
    archive = tmp_path / "ADEChallengeData2016.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("ADEChallengeData2016/images")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc")
    code, _, err = run(["prepare-ade20k", str(archive), "--extract-to", str(tmp_path / "x")], capsys)
    assert code != 0 and "refusing link member 'ADEChallengeData2016/images'" in err


def test_no_count_warning_when_the_counts_are_official() -> None:
    from deeplab_resnet.data.tools.prepare_common import count_warnings

    assert count_warnings({"train": 2975, "val": 500}, {"train": 2975, "val": 500}, "Cityscapes fine") == []
    assert count_warnings({"train": 2975}, {"train": 2975, "val": 500}, "Cityscapes fine") == [
        "val: 0 images found, the official Cityscapes fine val split has 500; is the download complete?"
    ]


@pytest.mark.parametrize(
    "name, classes, first, last",
    [
        ("cityscapes", 19, "road", "bicycle"),
        ("gta5", 19, "road", "bicycle"),
        ("synthia", 19, "road", "bicycle"),
        ("cocostuff", 171, "person", "wood"),
        ("cocostuff182", 182, "person", "wood"),
        ("ade20k", 150, "wall", "flag"),
    ],
)
def test_builtin_descriptions_load(name: str, classes: int, first: str, last: str) -> None:
    info = load_dataset_info(name)
    assert (info.name, info.num_classes, info.ignore_label) == (name, classes, 255)
    assert (info.class_names[0], info.class_names[-1]) == (first, last)


def test_builtin_descriptions_match_the_label_tables() -> None:
    from deeplab_resnet.data.descriptions import builtin_description
    from deeplab_resnet.data.tools.label_tables import builtin_description_dicts

    for name, expected in builtin_description_dicts().items():
        assert builtin_description(name) == expected, f"regenerate {name}.json (python -m ...label_tables)"
    info = load_dataset_info("cityscapes")
    assert info.palette[0] == (128, 64, 128) and info.palette[18] == (119, 11, 32)  # road, bicycle
    # COCO-Stuff 171: the 11 IDs COCO dropped are not classes; the stuff names that replace them are.
    names = load_dataset_info("cocostuff").class_names
    assert "street sign" not in names and "mirror-stuff" in names and names.index("banner") == 80


@pytest.mark.parametrize("name", ["cityscapes", "gta5", "synthia", "cocostuff", "ade20k"])
def test_prepare_help(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", f"prepare-{name}", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deeplab data prepare-{name}") and "docs/datasets.md" in out
