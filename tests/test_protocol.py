"""The test protocols (inference/protocol.py): the authors' Caffe test (pad to 513, zoom 8, crop)
against an independent emulation, its interplay with flip, --max-size, batches, CRF and tiles,
and the ``--pad-size``/``--native-size`` options of segment and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from original_emulation import authors_caffe_test, caffe_interp, rel_l2
from PIL import Image
from test_msc_original import noise, numpy_net, photo_like

from deeplab_resnet.cli import main
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.inference import protocol
from deeplab_resnet.inference.segmenter import Segmenter
from deeplab_resnet.models.msc import DEFAULT_SCALES

# ---- the rules ---------------------------------------------------------------------------------


def test_padded_lengths():
    assert [protocol.padded_length(n, 513) for n in (1, 375, 500, 513, 514, 521, 522, 600)] == [
        513, 513, 513, 513, 521, 521, 529, 601,
    ]  # fmt: skip
    assert protocol.padded_length(375, None) == 375
    assert protocol.padded_length(30, 33) == 33 and protocol.padded_length(34, 33) == 41


def test_pad_size_checks():
    assert protocol.check_pad_size(513) == 513 and protocol.check_pad_size(1) == 1
    for bad in (0, -513):
        with pytest.raises(DeepLabError, match="--pad-size must be a positive"):
            protocol.check_pad_size(bad)
    with pytest.raises(DeepLabError, match="--pad-size 500: must be of the form 8k\\+1 \\(e.g. 497 or 505\\)"):
        protocol.check_pad_size(500)
    assert protocol.resolve_pad_size("auto", "caffe") == 513 and protocol.resolve_pad_size("auto", "tf") is None
    assert protocol.resolve_pad_size(None, "caffe") is None and protocol.resolve_pad_size(321, "tf") == 321


def test_pad_input_pads_bottom_right_with_zero():
    x = torch.randn(2, 3, 5, 7)
    padded = protocol.pad_input(x, 9)
    assert padded.shape == (2, 3, 9, 9)
    assert (
        torch.equal(padded[..., :5, :7], x) and padded[..., 5:, :].abs().sum() == 0 and padded[..., 7:].abs().sum() == 0
    )
    assert protocol.pad_input(x, None) is x


def test_upsample_matrix_is_zoom_8_then_crop():
    m = protocol.upsample_matrix(65, 500, 500, 513, "caffe")
    assert m.shape == (500, 65)
    # exactly 1/8 per pixel: output pixel 8i + j takes (1 - j/8) of logit i and j/8 of logit i + 1
    for d in (0, 1, 7, 8, 13, 499):
        i, j = divmod(d, 8)
        expected = torch.zeros(65)
        expected[i] += 1 - j / 8
        if j:
            expected[i + 1] += j / 8
        assert torch.equal(m[d], expected), d
    # the tf convention zooms the same way (the protocol's Interp); native differs
    assert torch.equal(protocol.upsample_matrix(65, 500, 500, 513, "tf"), m)
    assert not torch.allclose(protocol.upsample_matrix(63, 500, 500, None, "caffe"), m[:, :63])
    # with --max-size: the crop at the network's size, then resized to the image
    composite = protocol.upsample_matrix(65, 1000, 500, 513, "caffe")
    basis = np.eye(65, dtype=np.float32)[:, :, None]  # logit k as a 65 x 1 image, one per channel
    two_steps = caffe_interp(caffe_interp(basis, 513, 1)[:, :500], 1000, 1)[:, :, 0].T
    np.testing.assert_allclose(composite.numpy(), two_steps, atol=1e-6)


# ---- the Segmenter against an independent computation of the authors' test --------------------

# (height, width, emulation option): VOC-sized; over 513 where the prototxt's MSC runs (pads to
# 545x609 = 32k+1); over 513 where it would abort (537x705: branch logits do not land on the 1x
# grid, so the emulation brings them back by size, as the package generalises).
CASES = {
    "voc 375x500": (375, 500, False),
    "over 513, 541x605": (541, 605, False),
    "over 513, 530x700": (530, 700, True),
}


# single scale at 530x700 would repeat the other over-513 single-scale case
RUNS = [(case, msc) for case in CASES for msc in (False, True) if msc or not CASES[case][2]]


@pytest.mark.parametrize("case, msc", RUNS, ids=[f"{c}-{'msc' if m else 'single'}" for c, m in RUNS])
def test_segmenter_is_the_authors_caffe_test(case, msc):
    height, width, back_to_grid = CASES[case]
    model = tiny_model("caffe")
    rgb = photo_like(height, width, seed=height)
    ref = authors_caffe_test(numpy_net(model), rgb, model.mean_bgr, msc=msc, back_to_grid=back_to_grid)
    scales = DEFAULT_SCALES if msc else (1.0,)
    labels, up = Segmenter(model, scales=scales, pad_size=513).predict(rgb, full=True)
    assert up.shape == ref.shape == (21, height, width)
    assert rel_l2(up.numpy(), ref) <= 1e-5
    assert np.array_equal(labels.numpy(), up.argmax(0).numpy())
    # and it is not what the native size computes
    _, native = Segmenter(model, scales=scales).predict(rgb, full=True)
    assert rel_l2(native.numpy(), ref) > 1e-3


def test_auto_follows_the_convention():
    assert Segmenter(tiny_model("caffe"), pad_size="auto").pad_size == 513
    assert Segmenter(tiny_model("tf"), pad_size="auto").pad_size is None
    assert Segmenter(tiny_model("caffe")).pad_size is None  # the Python API's default: native
    with pytest.raises(DeepLabError, match="--pad-size"):
        Segmenter(tiny_model("caffe"), pad_size=0)


def test_flip_mirrors_the_image_then_pads():
    model = tiny_model("caffe")
    rgb = noise(100, 130, seed=5)
    net = numpy_net(model)
    a = authors_caffe_test(net, rgb, model.mean_bgr, msc=False)
    b = authors_caffe_test(net, np.ascontiguousarray(rgb[:, ::-1]), model.mean_bgr, msc=False)[:, :, ::-1]
    _, up = Segmenter(model, flip=True, pad_size=513).predict(rgb, full=True)
    assert rel_l2(up.numpy(), (a + b) / 2) <= 1e-5


def test_max_size_shrinks_then_pads_then_resizes_the_crop():
    model = tiny_model("caffe")
    rgb = photo_like(700, 900, seed=6)
    seg = Segmenter(model, max_size=600, pad_size=513)
    small = seg.network_input(rgb)
    assert small.shape[:2] == (467, 600)
    ref = authors_caffe_test(numpy_net(model), small, model.mean_bgr, msc=False)  # pads to 513 x 601
    ref = caffe_interp(ref, 700, 900)
    _, up = seg.predict(rgb, full=True)
    assert rel_l2(up.numpy(), ref) <= 1e-5


def test_batches_pad_to_one_size_and_equal_one_at_a_time():
    model = tiny_model("caffe")
    images = [noise(90, 120, seed=s) for s in range(3)]
    seg = Segmenter(model, scales=(1.0, 0.5), pad_size=129)
    batched = seg.predict_batch(images, full=True)
    for image, (labels, up) in zip(images, batched):
        one_labels, one_up = seg.predict(image, full=True)
        torch.testing.assert_close(up, one_up, rtol=1e-4, atol=1e-4)
        assert (labels == one_labels).float().mean() > 0.999


def test_crf_refines_the_cropped_image_size_probabilities(monkeypatch):
    from deeplab_resnet.crf import PRESETS
    from deeplab_resnet.inference import segmenter as segmenter_module

    seen = {}

    def fake_crf(image, probs, params, *, backend="auto"):
        seen["image"], seen["probs"] = image, probs
        return probs

    monkeypatch.setattr(segmenter_module, "dense_crf", fake_crf)
    model = tiny_model("caffe")
    rgb = noise(60, 80, seed=7)
    result = Segmenter(model, pad_size=513, crf=PRESETS["deeplab-resnet"])(rgb, return_probs=True)
    _, up = Segmenter(model, pad_size=513).predict(rgb, full=True)
    assert seen["image"].shape == (60, 80, 3) and seen["probs"].shape == (21, 60, 80)
    np.testing.assert_allclose(seen["probs"], torch.softmax(up, 0).numpy(), rtol=1e-5, atol=1e-6)
    assert result.probs.shape == (60, 80, 21)


def test_tiles_run_at_their_own_size():
    model = tiny_model("caffe", aspp_rates=(1,))
    rgb = noise(100, 120, seed=8)
    padded_tiles = Segmenter(model, tile=128, tile_overlap=16, pad_size=513)(rgb, return_logits=True)
    native_tiles = Segmenter(model, tile=128, tile_overlap=16)(rgb, return_logits=True)
    assert np.array_equal(padded_tiles.logits, native_tiles.logits)


def test_scales_check_names_the_option():
    with pytest.raises(DeepLabError, match=r"^--scales: scale 0.001 makes a 0x0 branch of an input of 375x500; "):
        protocol.check_scales(375, 500, (1.0, 0.001), "tf")
    protocol.check_scales(375, 500, (1.0, 0.001), "caffe")  # Interp keeps at least one pixel
    protocol.check_scales(513, 513, (1.0, 0.75, 0.5), "tf")


# ---- the command line --------------------------------------------------------------------------


@pytest.fixture
def tf_weights(tmp_path: Path) -> Path:
    from deeplab_resnet import save_weights

    path = tmp_path / "tiny_tf.safetensors"
    save_weights(tiny_model("tf"), path, source="test")
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(photo_like(75, 100, seed=9)).save(path)
    return path


def segment(*args) -> int:
    return main(["segment", *map(str, args), "--device", "cpu"])


def test_segment_defaults_follow_the_weights_convention(tmp_path, photo, tiny_weights, tf_weights):
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    runs = {
        "caffe default": ((tiny_weights,), Segmenter(tiny_model("caffe"), pad_size=513)),
        "caffe native": ((tiny_weights, "--native-size"), Segmenter(tiny_model("caffe"))),
        "tf default": ((tf_weights,), Segmenter(tiny_model("tf"))),
        "tf padded": ((tf_weights, "--pad-size", "97"), Segmenter(tiny_model("tf"), pad_size=97)),
    }
    logits = {}
    for name, ((weights, *extra), seg) in runs.items():
        out = tmp_path / name.replace(" ", "_")
        assert segment(photo, "--weights", weights, "-o", out, "--save-logits", *extra) == 0
        logits[name] = np.load(out / "photo_logits.npy")
        expected = seg(rgb, return_logits=True)
        np.testing.assert_allclose(logits[name], expected.logits, rtol=1e-5, atol=1e-5)
        assert np.array_equal(np.asarray(Image.open(out / "photo.png")), expected.labels)
    assert rel_l2(logits["caffe default"], logits["caffe native"]) > 1e-3


def test_evaluate_reports_the_protocol_and_equals_the_segmenter(tmp_path, tiny_weights, voc_fixture):
    from deeplab_resnet.data.lists import read_list

    common = [
        "evaluate", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt"),
        "--weights", str(tiny_weights), "--device", "cpu", "--limit", "2", "--quiet",
        "--backend", "torch",  # the PyTorch model itself: its labels equal the Segmenter's bit for bit
    ]  # fmt: skip
    assert main([*common, "-o", str(tmp_path / "padded"), "--save-predictions", str(tmp_path / "pred")]) == 0
    assert main([*common, "-o", str(tmp_path / "native"), "--native-size"]) == 0
    padded = json.loads((tmp_path / "padded" / "report.json").read_text())
    native = json.loads((tmp_path / "native" / "report.json").read_text())
    assert padded["pad_size"] == 513 and native["pad_size"] is None
    pair = read_list(voc_fixture, voc_fixture / "list_val.txt")[0]
    expected = Segmenter(tiny_model("caffe"), pad_size=513)(pair.image).labels
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / f"{pair.name}.png")), expected)


BAD_PAD = [
    (["--pad-size", "0"], "--pad-size must be a positive"),
    (["--pad-size", "-513"], "--pad-size must be a positive"),
    (["--pad-size", "500"], "--pad-size 500: must be of the form 8k+1"),
    (["--pad-size", "513", "--native-size"], "--pad-size and --native-size exclude each other"),
]


@pytest.mark.parametrize("extra,message", BAD_PAD)
def test_bad_pad_size_is_one_line_and_writes_nothing(extra, message, tmp_path, photo, tiny_weights, capsys):
    out = tmp_path / "out"
    assert segment(photo, "--weights", tiny_weights, "-o", out, *extra) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("backend: ")]
    assert len(err) == 1 and err[0].startswith("deeplab segment: error: ") and message in err[0], err
    assert not out.exists()


def test_too_small_scale_is_one_line_and_writes_nothing(tmp_path, photo, tf_weights, tiny_weights, voc_fixture, capsys):
    out = tmp_path / "out"
    json_file = tmp_path / "summary.json"
    second = tmp_path / "big.png"
    Image.fromarray(noise(600, 700, seed=1)).save(second)
    # the big image comes first: it is fine, and still nothing may be written before the check
    assert segment(second, photo, "--weights", tf_weights, "-o", out, "--scales", "1,0.01", "--json", json_file) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("backend: ")]
    assert len(err) == 1 and "--scales: scale 0.01 makes a 0x1 branch" in err[0] and "photo.png" in err[0], err
    assert not out.exists() and not json_file.exists()
    # caffe weights at the authors' 513: a branch never drops below one pixel
    assert segment(photo, "--weights", tiny_weights, "-o", out, "--scales", "1,0.01") == 0
    evaluate = [
        "evaluate", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt"),
        "--weights", str(tf_weights), "--device", "cpu", "--quiet", "-o", str(tmp_path / "ev"),
        "--save-predictions", str(tmp_path / "pred"), "--scales", "1,0.001",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(evaluate) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("backend: ")]
    assert len(err) == 1 and err[0].startswith("deeplab evaluate: error: --scales: scale 0.001"), err
    assert not (tmp_path / "ev").exists() and not (tmp_path / "pred").exists()
    assert main([*evaluate[:-2], "--pad-size", "0"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("backend: ")]
    assert len(err) == 1 and "--pad-size must be a positive" in err[0]


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_help_states_both_protocols(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps after hyphens
    for words in ("--pad-size N", "--native-size", "513", "Caffe-convention weights", "TF-convention weights",
                  "mirrors the image before padding", "--tile windows always run at their own size"):  # fmt: skip
        assert words in text, words
