"""Segmenting: the Python API and ``deeplab segment`` end to end, and its error messages."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model
from PIL import Image

from deeplab_resnet import Segmenter
from deeplab_resnet.dataset_info import generic_dataset
from deeplab_resnet.models import ModelSpec
from deeplab_resnet.resize import resize_bilinear


def run_cli(*args, cwd=None):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_chunked_upsampling_equals_a_plain_resize(convention):
    # A network that returns fixed logits, whatever the image: the Segmenter's row-chunked
    # upsampling (7 rows at a time) must equal one plain resize of those logits to the image size.
    logits = torch.randn(1, 21, 13, 17, generator=torch.Generator().manual_seed(0))
    seg = Segmenter(lambda x: logits, ModelSpec(convention, generic_dataset(21)), rows_per_chunk=7)
    rgb = np.zeros((101, 133, 3), dtype=np.uint8)
    labels, upsampled = seg.predict(rgb, full=True)
    full = resize_bilinear(logits[0], (101, 133), convention)
    assert torch.allclose(upsampled, full, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, full.argmax(0))
    assert torch.equal(seg.predict(rgb)[0], labels)  # the labels-only path chunks the same way


def test_segmenter_api_on_array_pil_and_path(tmp_path):
    model = tiny_model("tf")
    seg = Segmenter(model)
    rgb = np.random.default_rng(0).integers(0, 255, (37, 45, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    a = seg(rgb, return_probs=True)
    b = seg(Image.fromarray(rgb))
    c = seg(tmp_path / "a.png")
    assert a.labels.shape == (37, 45) and a.probs.shape == (37, 45, 21)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
    np.testing.assert_allclose(a.probs.sum(-1), 1.0, rtol=1e-5)
    assert np.array_equal(a.probs.argmax(-1), a.labels)
    # against a direct computation: BGR - mean, forward, TF1 upsampling, argmax
    x = torch.from_numpy(rgb[:, :, ::-1].astype(np.float32).copy()) - torch.tensor(model.mean_bgr)
    with torch.no_grad():
        logits = model(x.permute(2, 0, 1)[None])
    direct = resize_bilinear(logits, (37, 45), "tf")[0].argmax(0).numpy()
    assert np.array_equal(a.labels, direct)


def test_segment_cli_writes_palette_png_and_overlay(tmp_path, tiny_weights, voc_fixture):
    image = voc_fixture / "JPEGImages" / "2007_000032.jpg"
    out = tmp_path / "out"
    # --backend torch: the PyTorch model itself, so that the labels equal the Segmenter's bit for bit
    result = run_cli("segment", image, "--weights", tiny_weights, "-o", out, "--device", "cpu", "--backend", "torch")
    assert result.returncode == 0, result.stderr
    label = Image.open(out / "2007_000032.png")
    assert label.mode == "P" and label.size == Image.open(image).size
    assert label.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    overlay = Image.open(out / "2007_000032_overlay.jpg")
    assert overlay.size == label.size
    expected = Segmenter(tiny_model(), pad_size="auto")(image).labels  # caffe weights: the authors' 513 padding
    assert np.array_equal(np.asarray(label), expected)


def test_segment_large_image_output_at_full_size(tmp_path, tiny_weights):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (120, 80, 40)).save(big)
    result = run_cli("segment", big, "--weights", tiny_weights, "-o", tmp_path / "o", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "o" / "big.png").size == (4000, 3000)


@pytest.fixture
def bad_inputs(tmp_path, voc_fixture):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes((voc_fixture / "JPEGImages" / "2007_000032.jpg").read_bytes()[:3000])
    weights_txt = tmp_path / "weights.bin"
    weights_txt.write_bytes(b"\x00garbage" * 10)
    return {"text": text, "truncated": truncated, "weights": weights_txt}


@pytest.mark.parametrize(
    "case,expect",
    [
        ("missing", "file not found"),
        ("text", "not an image file"),
        ("truncated", "truncated"),
        ("weights", "unsupported weight file"),
        ("classes", "21 classes but 5 were asked"),
    ],
)
def test_bad_input_one_line_error(case, expect, tmp_path, tiny_weights, bad_inputs, voc_fixture):
    image = voc_fixture / "JPEGImages" / "2007_000032.jpg"
    weights = tiny_weights
    extra = []
    if case == "missing":
        image = tmp_path / "nope.jpg"
    elif case in ("text", "truncated"):
        image = bad_inputs[case]
    elif case == "weights":
        weights = bad_inputs["weights"]
    elif case == "classes":
        extra = ["--num-classes", "5"]
    out = tmp_path / "out"
    result = run_cli("segment", image, "--weights", weights, "-o", out, "--device", "cpu", *extra)
    assert result.returncode != 0
    # the "backend: ..." line of --backend auto is information, not part of the error
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("backend: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert expect in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_directory_skips_broken_files_and_reports(tmp_path, tiny_weights, voc_fixture):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "good.jpg").write_bytes((voc_fixture / "JPEGImages" / "2007_000032.jpg").read_bytes())
    (folder / "bad.jpg").write_text("nope")
    result = run_cli("segment", folder, "--weights", tiny_weights, "-o", tmp_path / "o", "--device", "cpu")
    assert result.returncode == 1
    assert "bad.jpg" in result.stderr and (tmp_path / "o" / "good.png").exists()


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    for name in ("train", "evaluate", "segment", "convert", "data", "benchmark", "export", "serve"):
        assert name in result.stdout
        sub = run_cli(name, "--help")
        assert sub.returncode == 0 and "usage: deeplab" in sub.stdout
