"""``deeplab data prepare-voc`` on a miniature VOC 2012 + SBD tree (real PNGs, real .mat files)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.data.tools.prepare_voc import derive_splits, prepare_voc, read_sbd_mat
from deeplab_resnet.dataset_info import VOC
from deeplab_resnet.errors import DeepLabError

scipy_io = pytest.importorskip("scipy.io")

# The miniature: VOC annotates a, b (train) and v1, v2 (val); SBD annotates a, v1, s1, s2, s3.
VOC_TRAIN, VOC_VAL, VOC_TEST = ["a", "b"], ["v1", "v2"], ["t1"]
SBD_TRAIN, SBD_VAL = ["s1", "a", "v1", "s2"], ["s3", "v2", "s4"]  # s4: listed, but has no cls/s4.mat
SBD_MATS = ["a", "v1", "v2", "s1", "s2", "s3"]
SBD_ONLY_IMAGE = "s3"  # its JPEG is only in SBD's img/, not in VOC's JPEGImages
EXPECTED = {
    "train": ["a", "b"],
    "val": ["v1", "v2"],
    "trainval": ["a", "b", "v1", "v2"],
    "train_aug": ["a", "b", "s1", "s2", "s3"],
    "trainval_aug": ["a", "b", "s1", "s2", "s3", "v1", "v2"],
}


def _labels(seed: int, border: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 21, size=(10, 12), dtype=np.uint8)
    if border:  # VOC draws 255 around objects; SBD has no such borders
        labels[3, :] = 255
        labels[:, 5] = 255
    return labels


def build_tree(root: Path) -> dict[str, np.ndarray]:
    """Write the miniature downloads; return the label each ID must end up with."""
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (sbd / "cls").mkdir(parents=True)
    (sbd / "img").mkdir(parents=True)
    expected = {}
    for n, image_id in enumerate(sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL + VOC_TEST))):
        image = Image.fromarray(np.full((10, 12, 3), n * 10, np.uint8))
        image.save((sbd / "img" if image_id == SBD_ONLY_IMAGE else voc / "JPEGImages") / f"{image_id}.jpg")
        if image_id in VOC_TRAIN + VOC_VAL:
            labels = _labels(n, border=True)
            img = Image.fromarray(labels, "P")
            img.putpalette(VOC.palette_bytes())
            img.save(voc / "SegmentationClass" / f"{image_id}.png")
            expected[image_id] = labels
        if image_id in SBD_MATS:
            sbd_labels = _labels(100 + n, border=False)
            scipy_io.savemat(
                sbd / "cls" / f"{image_id}.mat",
                {"GTcls": {"Segmentation": sbd_labels, "CategoriesPresent": np.arange(3)}},
            )
            expected.setdefault(image_id, sbd_labels)  # VOC's PNG wins where both exist
    seg = voc / "ImageSets" / "Segmentation"
    for name, ids in (("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL), ("test", VOC_TEST)):
        (seg / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (sbd / "train.txt").write_text("".join(f"{i}\n" for i in SBD_TRAIN))
    (sbd / "val.txt").write_text("".join(f"{i}\n" for i in SBD_VAL))
    return expected


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_outputs(voc: Path, lists: Path, expected: dict[str, np.ndarray]) -> None:
    for name, ids in EXPECTED.items():
        lines = (lists / f"{name}.txt").read_text().splitlines()
        assert lines == [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in ids], name
    assert (lists / "test.txt").read_text().splitlines() == ["/JPEGImages/t1.jpg"]
    written = sorted(p.stem for p in (voc / "SegmentationClassAug").glob("*.png"))
    assert written == EXPECTED["trainval_aug"]
    for image_id in written:
        with Image.open(voc / "SegmentationClassAug" / f"{image_id}.png") as img:
            assert img.mode == "P"
            assert img.getpalette()[:63] == VOC.palette_bytes()[:63]
            np.testing.assert_array_equal(np.asarray(img), expected[image_id], err_msg=image_id)
    assert (voc / "JPEGImages" / f"{SBD_ONLY_IMAGE}.jpg").is_file()


def test_builds_expected_pngs_and_lists_and_rerun_changes_nothing(tmp_path: Path) -> None:
    expected = build_tree(tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    # VOC wins over SBD for 'a' (train) and for 'v1'/'v2' (val, never in train_aug).
    assert (expected["a"] == 255).any()
    result = prepare_voc(tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE", workers=1, progress=False)
    assert result.data_dir == voc and result.written == 7 and result.images_copied == 1
    assert any("s4" in w for w in result.warnings)  # listed by SBD without a .mat: left out, said so
    _check_outputs(voc, voc / "lists", expected)

    before = _snapshot(tmp_path)
    again = prepare_voc(voc, tmp_path / "benchmark_RELEASE" / "dataset", workers=2, progress=False)
    assert (again.written, again.unchanged, again.lists_written, again.images_copied) == (0, 7, [], 0)
    assert _snapshot(tmp_path) == before


def test_resumes_after_interruption_and_repairs_damaged_output(tmp_path: Path) -> None:
    expected = build_tree(tmp_path)
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    prepare_voc(voc, tmp_path / "benchmark_RELEASE", workers=1, progress=False)
    (voc / "SegmentationClassAug" / "s1.png").unlink()  # as if the run had stopped before it
    (voc / "SegmentationClassAug" / "s2.png").write_bytes(b"\x89PNG\r\n")  # damaged
    Image.fromarray(np.zeros((10, 12), np.uint8), "L").save(voc / "SegmentationClassAug" / "b.png")  # stale
    result = prepare_voc(voc, tmp_path / "benchmark_RELEASE", workers=1, progress=False)
    assert (result.written, result.unchanged) == (3, 4)
    _check_outputs(voc, voc / "lists", expected)


def _tar(source: Path, archive: Path, top: str) -> None:
    with tarfile.open(archive, "w:gz" if archive.suffix == ".tgz" else "w") as tar:
        tar.add(source / top, arcname=top)


def test_accepts_the_archives_and_extracts_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    expected = build_tree(src)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    _tar(src, downloads / "VOCtrainval_11-May-2012.tar", "VOCdevkit")
    _tar(src, downloads / "benchmark.tgz", "benchmark_RELEASE")
    out = tmp_path / "out"
    args = ["data", "prepare-voc", "--voc", str(downloads / "VOCtrainval_11-May-2012.tar")]
    args += ["--sbd", str(downloads / "benchmark.tgz"), "--extract-to", str(out), "--workers", "1", "--quiet"]
    assert main(args) == 0
    voc = out / "VOCdevkit" / "VOC2012"
    _check_outputs(voc, voc / "lists", expected)
    before = _snapshot(out)
    assert main(args) == 0  # not extracted again, nothing rewritten
    assert _snapshot(out) == before


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "VOCdevkit/../../evil.txt"])
def test_refuses_path_traversal_in_archives(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DeepLabError, match="unsafe member"):
        prepare_voc(archive, archive, extract_to=tmp_path / "x", progress=False)
    assert not list(tmp_path.rglob("evil.txt"))


def test_refuses_links_in_archives(tmp_path: Path) -> None:
    archive = tmp_path / "link.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("VOCdevkit/passwd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DeepLabError, match="link member"):
        prepare_voc(archive, archive, extract_to=tmp_path / "x", progress=False)


def test_reads_gtcls_in_both_scipy_struct_forms(tmp_path: Path) -> None:
    seg = _labels(7, border=False)
    path = tmp_path / "x.mat"
    scipy_io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(2)}})
    np.testing.assert_array_equal(read_sbd_mat(path), seg)
    from deeplab_resnet.data.tools.prepare_voc import _mat_segmentation

    record = scipy_io.loadmat(path)["GTcls"]  # default: 1x1 record array around 1x1 object arrays
    np.testing.assert_array_equal(_mat_segmentation(record), seg)
    (tmp_path / "bad.mat").write_bytes(b"not a mat file")
    with pytest.raises(DeepLabError, match="bad.mat"):
        read_sbd_mat(tmp_path / "bad.mat")


def test_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    build_tree(tmp_path)
    with pytest.raises(DeepLabError, match="not a VOC 2012 folder"):
        prepare_voc(tmp_path / "benchmark_RELEASE", tmp_path / "benchmark_RELEASE", progress=False)
    with pytest.raises(DeepLabError, match="not a SBD folder"):
        prepare_voc(tmp_path / "VOCdevkit", tmp_path / "VOCdevkit", progress=False)
    (tmp_path / "VOCdevkit/VOC2012/SegmentationClass/v2.png").unlink()
    with pytest.raises(DeepLabError, match="VOC val images have no SegmentationClass"):
        prepare_voc(tmp_path / "VOCdevkit", tmp_path / "benchmark_RELEASE", progress=False)


def test_without_scipy_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "scipy.io", None)  # import scipy.io now raises ImportError
    with pytest.raises(DeepLabError, match=r"pip install 'deeplab_resnet\[data\]'"):
        read_sbd_mat(tmp_path / "x.mat")


def _ids(path: Path) -> list[str]:
    return [line.split()[0][len("/JPEGImages/") : -len(".jpg")] for line in path.read_text().splitlines()]


def test_rule_reproduces_the_real_train_aug() -> None:
    """The set algebra of derive_splits, applied to the real VOC 2012 ID sets, gives the real lists.

    VOC's train/val sets are the real ones. SBD's train.txt / val.txt are not available here, so
    the SBD side is reconstructed for this test only: every image of the standard trainval_aug
    that VOC does not annotate must come from SBD, and SBD also overlaps VOC (all of VOC val
    is added to SBD here, the worst case for the val exclusion). Split between SBD train and val
    arbitrarily: the rule uses their union. The tool itself never reads these standard lists.
    """
    lists = shared_path("data", "voc2012_lists")
    voc_train, voc_val = _ids(lists / "train.txt"), _ids(lists / "val.txt")
    sbd_only = sorted(set(_ids(lists / "trainval_aug.txt")) - set(voc_train) - set(voc_val))
    sbd = sbd_only + voc_val + voc_train[::3]
    sbd_train, sbd_val = sbd[::2], sbd[1::2]
    labelled = set(voc_train) | set(voc_val) | set(sbd)
    splits = derive_splits(voc_train, voc_val, sbd_train, sbd_val, labelled)
    assert splits["train_aug"] == _ids(lists / "train_aug.txt")  # sorted, as the real file is
    assert len(splits["train_aug"]) == 10582
    assert splits["val"] == _ids(lists / "val.txt") and len(splits["val"]) == 1449
    assert splits["trainval"] == _ids(lists / "trainval.txt")
    assert splits["trainval_aug"] == _ids(lists / "trainval_aug.txt")
    assert not set(splits["train_aug"]) & set(voc_val)
