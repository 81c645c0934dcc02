"""The domain-adaptation papers' evaluation protocols in ``deeplab evaluate``: the class-subset mIoU
(``--classes``), the resized-input test (``--input-size``) and tiled evaluation (``--tile``), each
checked against an independent computation written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from PIL import Image

from deeplab_resnet.cli import main
from deeplab_resnet.data.tools.label_tables import CITYSCAPES_CLASSES, SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES
from deeplab_resnet.dataset_info import VOC
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.evaluation.metrics import ConfusionMeter, subset_mean_iou
from deeplab_resnet.evaluation.subsets import parse_class_subset
from deeplab_resnet.inference.segmenter import Segmenter, tile_spans
from deeplab_resnet.preprocess import to_input


def reference_subset_miou(preds, gts, subset, ignore=255) -> float:
    """Plain numpy over pixel sets: for each class of the subset, TP / (TP + FP + FN) counted over
    every scored pixel (of any class), classes without pixels left out."""
    p = np.concatenate([np.ravel(x) for x in preds]).astype(np.int64)
    g = np.concatenate([np.ravel(x) for x in gts]).astype(np.int64)
    p, g = p[g != ignore], g[g != ignore]
    ious = []
    for c in subset:
        tp = np.sum((p == c) & (g == c))
        union = np.sum((p == c) | (g == c))
        if union:
            ious.append(tp / union)
    return float(np.mean(ious))


def test_subset_miou_equals_independent_computation():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 19, size=(30, 40)) for _ in range(3)]
    for g in gts:
        g[rng.random(g.shape) < 0.1] = 255
        g[g == 9] = 10  # class 9 never in ground truth...
    preds = [np.where(rng.random(g.shape) < 0.6, np.where(g == 255, 0, g), rng.integers(0, 19, g.shape)) for g in gts]
    for p in preds:
        p[p == 9] = 8  # ...nor predicted: no IoU
        p[p == 3] = 14  # class 3 is never predicted: IoU 0, counted
    meter = ConfusionMeter(19)
    for p, g in zip(preds, gts):
        meter.update(p, g)
    iou = meter.scores().iou
    for subset in (SYNTHIA_16_CLASSES, SYNTHIA_13_CLASSES, (3, 9, 14)):
        assert subset_mean_iou(iou, subset) == pytest.approx(reference_subset_miou(preds, gts, subset), abs=1e-12)
    # the protocol counts errors from classes outside the subset: restricting the pixels to the
    # subset's classes first gives a different (higher) number
    restricted = [(np.where(np.isin(g, SYNTHIA_13_CLASSES), p, 0), g) for p, g in zip(preds, gts)]
    wrong = reference_subset_miou(
        [np.where(np.isin(p, SYNTHIA_13_CLASSES), p, -1) for p, _ in restricted],
        [np.where(np.isin(g, SYNTHIA_13_CLASSES), g, 255) for _, g in restricted],
        SYNTHIA_13_CLASSES,
    )
    assert subset_mean_iou(iou, SYNTHIA_13_CLASSES) < wrong - 0.01
    assert np.isnan(subset_mean_iou(iou, (9,)))


def test_parse_class_subset():
    assert parse_class_subset("synthia16", CITYSCAPES_CLASSES) == SYNTHIA_16_CLASSES
    assert parse_class_subset("SYNTHIA13", CITYSCAPES_CLASSES) == SYNTHIA_13_CLASSES
    assert len(SYNTHIA_16_CLASSES) == 16 and len(SYNTHIA_13_CLASSES) == 13
    assert parse_class_subset("person, 0,Cat", VOC.class_names) == (0, VOC.class_names.index("cat"), 15)
    with pytest.raises(DeepLabError, match="--classes: 'zebra' is neither"):
        parse_class_subset("person,zebra", VOC.class_names)
    with pytest.raises(DeepLabError, match="--classes: '21' is neither"):
        parse_class_subset("21", VOC.class_names)
    with pytest.raises(DeepLabError, match="--classes synthia16: .* but the model has 21 classes"):
        parse_class_subset("synthia16", VOC.class_names)


def test_classes_cli_on_voc_fixture(tmp_path, voc_fixture, tiny_weights, capsys):
    common = ["evaluate", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt")]
    common += ["--weights", str(tiny_weights), "--limit", "2", "--quiet", "--native-size"]
    status = main([*common, "--classes", "background,person,8", "-o", str(tmp_path / "r"),
                   "--save-predictions", str(tmp_path / "pred")])  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["class_subset"] == ["background", "cat", "person"] and report["class_subset_indices"] == [0, 8, 15]
    lines = [line for line in out.splitlines() if line[:4].strip().rstrip("*").isdigit()]
    assert [line.split()[0] for line in lines if "*" in line[:4]] == ["0*", "8*", "15*"]
    preds, gts = [], []
    for line in (voc_fixture / "list_val.txt").read_text().splitlines()[:2]:
        label = line.split()[1]
        gts.append(np.asarray(Image.open(str(voc_fixture) + label)))
        preds.append(np.asarray(Image.open(tmp_path / "pred" / label.rsplit("/", 1)[1])))
    expected = reference_subset_miou(preds, gts, (0, 8, 15))
    assert report["subset_mean_iou"] == pytest.approx(expected, abs=1e-12)
    assert f"{100 * expected:6.2f}" in [line for line in out.splitlines() if line.startswith("mean IoU *")][0]

    # a subset that does not fit the model: one line, before any image is run
    assert main([*common, "--classes", "synthia13", "-o", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--classes synthia13" in err
    assert not (tmp_path / "bad" / "report.json").exists()


def tf_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, no half-pixel centres) as a matrix, from its formula."""
    m = np.zeros((n_out, n_in))
    for d in range(n_out):
        src = d * n_in / n_out
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        m[d, lo] += 1 - (src - lo)
        m[d, hi] += src - lo
    return m


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random image with structure at several scales (so the network's labels vary over it)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=g)
    img = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    img = img + 0.15 * torch.rand(1, 3, height, width, generator=g)
    return (img[0].permute(1, 2, 0).clamp(0, 1) * 255).to(torch.uint8).numpy()


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_resized_input_equals_independent_computation(convention):
    model = tiny_model(convention).eval()
    rgb = smooth_image(75, 110)
    width, height = 96, 64
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
    with torch.no_grad():
        logits = model(to_input(resized, model.spec.mean_bgr).unsqueeze(0))[0].double()
    if convention == "caffe":  # corner-aligned: PyTorch's align_corners=True
        expected = F.interpolate(logits[None], size=(75, 110), mode="bilinear", align_corners=True)[0]
    else:
        wy = torch.from_numpy(tf_resize_matrix(logits.shape[1], 75))
        wx = torch.from_numpy(tf_resize_matrix(logits.shape[2], 110))
        expected = torch.einsum("yh,chw,xw->cyx", wy, logits, wx)
    labels, upsampled = Segmenter(model, input_size=(width, height)).predict(rgb, full=True)
    assert upsampled.shape == expected.shape
    rel = (upsampled.double() - expected).norm() / expected.norm()
    assert rel <= 1e-5
    assert torch.equal(labels, upsampled.argmax(0))
    # and it is not the native-size result
    native = Segmenter(model).predict(rgb, full=True)[1].double()
    assert (native - expected).norm() / expected.norm() > 1e-2


def test_resized_input_with_the_authors_padding_equals_independent_computation():
    """``--input-size`` with caffe weights' default padding: resize, pad bottom/right with 0, zoom 8
    (corner-aligned), crop the resized image's part, then resize that to the image (corner-aligned)."""
    model = tiny_model("caffe").eval()
    rgb = smooth_image(75, 110, seed=3)
    width, height, pad = 96, 64, 105
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
    x = F.pad(to_input(resized, model.spec.mean_bgr).unsqueeze(0), (0, pad - width, 0, pad - height))
    with torch.no_grad():
        logits = model(x).double()
    zoomed = F.interpolate(logits, size=(pad, pad), mode="bilinear", align_corners=True)[:, :, :height, :width]
    expected = F.interpolate(zoomed, size=(75, 110), mode="bilinear", align_corners=True)[0]
    upsampled = Segmenter(model, input_size=(width, height), pad_size=pad).predict(rgb, full=True)[1]
    assert (upsampled.double() - expected).norm() / expected.norm() <= 1e-5


def test_resized_input_refuses_tile_and_max_size():
    model = tiny_model()
    with pytest.raises(DeepLabError, match="--input-size .* --tile"):
        Segmenter(model, input_size=(64, 64), tile=400)
    with pytest.raises(DeepLabError, match="--max-size"):
        Segmenter(model, input_size=(64, 64), max_size=500)
    with pytest.raises(DeepLabError, match="two positive sizes"):
        Segmenter(model, input_size=(0, 64))


def test_tiled_equals_whole_when_the_window_covers_the_image():
    model = tiny_model()
    rgb = smooth_image(90, 130, seed=1)
    labels, logits = Segmenter(model).predict(rgb, full=True)
    tiled_labels, tiled_logits = Segmenter(model, tile=136, tile_overlap=32).predict(rgb, full=True)
    assert torch.equal(tiled_labels, labels)
    assert torch.allclose(tiled_logits, logits, rtol=0, atol=1e-5)


def test_tiled_stitches_each_window_centre():
    """Each pixel's logits are those of the one window that owns it, run alone (independently stitched
    here from plain whole-image predictions of the crops)."""
    model = tiny_model()
    rgb = smooth_image(100, 230, seed=2)
    tile, overlap = 96, 24
    tiled_labels, tiled = Segmenter(model, tile=tile, tile_overlap=overlap).predict(rgb, full=True)
    whole = Segmenter(model)
    expected = torch.full_like(tiled, float("nan"))
    for y0, y1, ya, yb in tile_spans(100, tile, overlap):
        for x0, x1, xa, xb in tile_spans(230, tile, overlap):
            assert y1 - y0 <= tile and x1 - x0 <= tile and ya - y0 >= 0 and x1 - xb >= 0
            window = whole.predict(np.ascontiguousarray(rgb[y0:y1, x0:x1]), full=True)[1]
            expected[:, ya:yb, xa:xb] = window[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
    assert not torch.isnan(expected).any()  # the owned parts cover the image exactly once
    assert torch.allclose(tiled, expected, rtol=0, atol=1e-5)
    assert torch.equal(tiled_labels, tiled.argmax(0))


@pytest.mark.slow
def test_tiled_evaluation_close_to_whole_on_voc(voc_fixture):
    """Measured bound: windows of 448 with the default 192 px margins on the VOC fixture (about
    500x375 images) with the tiny random model give logits within 20% relative L2 of the
    whole-image ones (0.09-0.19 measured) and the same labels on >= 80% of the pixels (81-91%).
    The untrained model's logits are nearly tied, so its labels flip easily: the gap is a property of
    the windows' zero-padded borders (context ~200 px), not of the stitching, which the test
    above checks exactly."""
    from deeplab_resnet.data.lists import read_list
    from deeplab_resnet.images import load_pair

    model = tiny_model()
    whole, tiled = Segmenter(model), Segmenter(model, tile=448, tile_overlap=192)
    for pair in read_list(voc_fixture, voc_fixture / "list_val.txt")[:3]:
        rgb, _ = load_pair(pair)
        labels, logits = whole.predict(rgb, full=True)
        tiled_labels, tiled_logits = tiled.predict(rgb, full=True)
        assert (tiled_logits - logits).norm() / logits.norm() <= 0.2
        assert (tiled_labels == labels).float().mean() >= 0.8


def test_input_size_and_tile_through_the_cli(tmp_path, voc_fixture, tiny_weights, capsys):
    from deeplab_resnet import load_model
    from deeplab_resnet.images import read_image

    common = ["evaluate", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt")]
    common += ["--weights", str(tiny_weights), "--limit", "1", "--quiet", "--native-size"]
    assert main([*common, "-o", str(tmp_path / "whole")]) == 0
    assert main([*common, "--tile", "600", "--tile-overlap", "64", "-o", str(tmp_path / "tiled")]) == 0
    assert (
        main([*common, "--input-size", "96,64", "-o", str(tmp_path / "r"), "--save-logits", str(tmp_path / "l")]) == 0
    )
    whole, tiled, resized = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("whole", "tiled", "r"))
    assert tiled["tile"] == 600 and tiled["tile_overlap"] == 64 and resized["input_size"] == [96, 64]
    assert tiled["confusion_matrix"] == whole["confusion_matrix"]  # one window covers the 500-px image
    image_path = str(voc_fixture) + (voc_fixture / "list_val.txt").read_text().split()[0]
    rgb = read_image(image_path)
    resized_rgb = np.asarray(Image.fromarray(rgb).resize((96, 64), Image.BILINEAR))
    model = load_model(tiny_weights).eval()
    with torch.no_grad():
        logits = model(to_input(resized_rgb, model.spec.mean_bgr).unsqueeze(0))[0].double()
    expected = F.interpolate(logits[None], size=rgb.shape[:2], mode="bilinear", align_corners=True)[0]
    saved = torch.from_numpy(np.load(next((tmp_path / "l").glob("*.npy")))).permute(2, 0, 1).double()
    assert (saved - expected).norm() / expected.norm() <= 1e-5
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*common, "--input-size", "1024x512"])
    assert "--input-size: expected two positive sizes W,H" in capsys.readouterr().err
