"""``deeplab segment`` outputs and inputs: every image mode PIL opens, EXIF orientation, directories
with broken files, globs and list files, probabilities/logits, JSON summaries, CRF and tiling."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model
from PIL import Image

from deeplab_resnet.images import read_image
from deeplab_resnet.inference.segmenter import Segmenter, tile_spans


def run_cli(*args):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *map(str, args)], capture_output=True, text=True, env=env
    )


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(4)
    base = rng.integers(0, 255, (6, 8, 3)).astype(np.uint8)
    # smooth content (a blown-up random image) so lossy codecs stay close to it
    return np.asarray(Image.fromarray(base).resize((48, 36), Image.BILINEAR))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def image_cases(rgb):
    """(name, file bytes, the RGB array a correct reader must return; None: only check the size)."""
    pil = Image.fromarray(rgb)
    grey = np.asarray(pil.convert("L"))
    pal = pil.quantize(16)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 90, np.uint8)])
    g16 = grey.astype(np.uint16) * 257  # full 16-bit range: 0..65535 maps back to 0..255
    return [
        ("rgb.png", encode(pil, "PNG"), rgb),
        ("rgba.png", encode(Image.fromarray(rgba, "RGBA"), "PNG"), rgb),  # alpha dropped
        ("palette.png", encode(pal, "PNG"), np.asarray(pal.convert("RGB"))),
        ("grey.png", encode(Image.fromarray(grey, "L"), "PNG"), np.repeat(grey[:, :, None], 3, 2)),
        ("grey16.png", encode(Image.fromarray(g16), "PNG"), np.repeat(grey[:, :, None], 3, 2)),
        ("cmyk.jpg", encode(pil.convert("CMYK"), "JPEG", quality=95), None),
        ("lossless.webp", encode(pil, "WEBP", lossless=True), rgb),
        ("image.tiff", encode(pil, "TIFF"), rgb),
        ("photo.jpg", encode(pil, "JPEG", quality=95), None),
    ]


def test_every_image_mode_reads_and_segments(tmp_path, rgb, model):
    seg = Segmenter(model)
    for name, data, expected in image_cases(rgb):
        path = tmp_path / name
        path.write_bytes(data)
        got = read_image(path)
        assert got.shape == rgb.shape and got.dtype == np.uint8, name
        if expected is not None:
            assert np.array_equal(got, expected), name
        else:  # lossy: close to the original colours
            assert np.abs(got.astype(int) - rgb).mean() < 8, name
        assert np.array_equal(seg(path).labels, seg(got).labels), name


def test_exif_orientation_is_honoured(tmp_path, rgb, model):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, quality=95, exif=exif)
    got = read_image(path)
    assert got.shape == (48, 36, 3)  # displayed upright: width and height swapped
    upright = np.rot90(rgb, k=-1)
    assert np.abs(got.astype(int) - upright).mean() < 8
    assert Segmenter(model)(path).labels.shape == (48, 36)


@pytest.fixture
def mixed_dir(tmp_path, voc_fixture):
    """Three fixture JPEGs beside a text file, a truncated JPEG and an empty file."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = sorted(p.name for p in (voc_fixture / "JPEGImages").iterdir())[:3]
    for name in names:
        shutil.copy(voc_fixture / "JPEGImages" / name, folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.jpg").write_bytes((voc_fixture / "JPEGImages" / names[0]).read_bytes()[:2000])
    (folder / "empty.png").write_bytes(b"")
    return folder, [n[:-4] for n in names]


def test_segment_dir_writes_everything_and_reports_broken_files(tmp_path, mixed_dir, tiny_weights):
    folder, stems = mixed_dir
    out = tmp_path / "out"
    result = run_cli(
        "segment", folder, "--weights", tiny_weights, "--device", "cpu", "-o", out,
        "--save-mask", "--save-probs", "--save-logits", "--json", tmp_path / "summary.json", "--native-size",
    )  # fmt: skip
    assert result.returncode == 1  # something failed
    for bad in ("notes.txt", "cut.jpg", "empty.png"):
        assert bad in result.stderr
    assert "Traceback" not in result.stderr and "3 result(s)" in result.stdout and "3 failed" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["image"].rsplit("/", 1)[-1][:-4] for s in summary] == stems
    model = tiny_model()
    for stem, entry in zip(stems, summary):
        image = read_image(folder / f"{stem}.jpg")
        label = Image.open(out / f"{stem}.png")
        labels = np.asarray(label)
        assert label.mode == "P" and labels.shape == image.shape[:2]
        assert Image.open(out / f"{stem}_overlay.jpg").size == label.size
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        palette = np.asarray(label.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
        assert np.array_equal(mask, palette[labels])
        probs, logits = np.load(out / f"{stem}_probs.npy"), np.load(out / f"{stem}_logits.npy")
        assert probs.shape == logits.shape == (*labels.shape, 21) and probs.dtype == logits.dtype == np.float32
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        assert np.array_equal(logits.argmax(-1), labels)
        values, counts = np.unique(labels, return_counts=True)
        assert entry["classes"] == {model.dataset.class_names[v]: int(c) for v, c in zip(values, counts)}
        assert len(entry["outputs"]) == 5
    # the logits are the model's own upsampling of its stride-8 logits
    x = torch.from_numpy(image[:, :, ::-1].astype(np.float32).copy()) - torch.tensor(model.mean_bgr)
    with torch.no_grad():
        expected = model.upsample(model(x.permute(2, 0, 1)[None]), image.shape[:2])[0]
    np.testing.assert_allclose(logits, expected.permute(1, 2, 0).numpy(), rtol=1e-4, atol=1e-4)


def test_glob_and_list_file_inputs_and_json_lines(tmp_path, tiny_weights, voc_fixture):
    listed = tmp_path / "list.txt"
    listed.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n")
    pattern = str(voc_fixture / "JPEGImages" / "2007_00003*.jpg")
    result = run_cli(
        "segment", pattern, listed, "--data-dir", voc_fixture, "--weights", tiny_weights,
        "--device", "cpu", "-o", tmp_path / "o", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    globbed = sorted(p.name for p in (voc_fixture / "JPEGImages").glob("2007_00003*.jpg"))
    # the listed image is also matched by the glob: it is segmented once
    assert "2007_000032.jpg" in globbed
    assert [entry["image"].rsplit("/", 1)[-1] for entry in lines] == globbed
    assert all(sum(entry["classes"].values()) == entry["height"] * entry["width"] for entry in lines)


def test_crf_in_the_segmenter_equals_refining_its_probabilities(model, voc_fixture):
    pytest.importorskip("pydensecrf")
    from deeplab_resnet.crf import PRESETS, dense_crf

    image = read_image(voc_fixture / "JPEGImages" / "2007_000032.jpg")[:120, :160].copy()
    plain = Segmenter(model)(image, return_probs=True)
    refined = Segmenter(model, crf=PRESETS["tf-branch"], crf_backend="pydensecrf")(image, return_probs=True)
    expected = dense_crf(image, plain.probs.transpose(2, 0, 1).copy(), PRESETS["tf-branch"], backend="pydensecrf")
    assert np.array_equal(refined.labels, expected.argmax(0))
    np.testing.assert_allclose(refined.probs, expected.transpose(1, 2, 0), atol=1e-6)


def test_tile_spans_partition_the_axis():
    for length, tile, overlap in [(1000, 256, 64), (300, 256, 64), (257, 256, 0), (100, 256, 64), (999, 128, 16)]:
        spans = tile_spans(length, tile, overlap)
        owned = np.concatenate([np.arange(a, b) for _, _, a, b in spans])
        assert np.array_equal(owned, np.arange(length))  # every pixel owned exactly once, in order
        for start, stop, a, b in spans:
            assert 0 <= start <= a < b <= stop <= length and stop - start == min(tile, length)
        assert all(s % 8 == 0 for s, *_ in spans[:-1])
        for (_, e0, _, b0), (s1, _, a1, _) in zip(spans, spans[1:]):
            assert b0 == a1 and b0 - s1 >= min(overlap, 8) and e0 - b0 >= min(overlap, 8)


def test_tiled_output_matches_untiled():
    """Windows see less context than the whole image, so tiling is exact only when each window's
    margin covers the receptive field. The full ASPP (rates up to 24 at stride 8) sees ~200 px;
    this model (the same code with one rate-1 branch) sees ~60 px, so 32-72 px margins nearly suffice."""
    model = tiny_model(aspp_rates=(1,))
    rng = np.random.default_rng(9)
    base = rng.integers(0, 255, (12, 16, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(base).resize((240, 160), Image.BILINEAR))
    whole = Segmenter(model)(image, return_logits=True)
    one_tile = Segmenter(model, tile=256, tile_overlap=64)(image, return_logits=True)  # a single window: identical
    assert np.array_equal(one_tile.labels, whole.labels)
    tiled = Segmenter(model, tile=128, tile_overlap=32)(image, return_logits=True)  # 4 x 2 windows
    assert tiled.labels.shape == whole.labels.shape and tiled.logits.shape == whole.logits.shape
    agreement = (tiled.labels == whole.labels).mean()
    assert agreement > 0.98, agreement
    assert np.median(np.abs(tiled.logits - whole.logits)) < 0.02 * np.abs(whole.logits).mean()
    # more context per window brings the tiled result closer to the untiled one
    wide = Segmenter(model, tile=200, tile_overlap=72)(image)
    assert (wide.labels == whole.labels).mean() > agreement
