"""The pydensecrf CRF backend: equal to a direct pydensecrf call, and it sharpens blurred predictions.

Tests that run pydensecrf skip where the optional extra ``[crf]`` (pydensecrf2) is not installed;
the others check the behaviour without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, shared_path

from deeplab_resnet.crf import BACKENDS, PRESETS, CRFParams, dense_crf, pydensecrf_available
from deeplab_resnet.crf import pydensecrf_adapter as backend
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.images import read_image, read_label


def val_names(voc: Path) -> list[str]:
    lines = (voc / "list_val.txt").read_text().split("\n")
    return [Path(line.split()[0]).stem for line in lines if line.strip()]


def blurred_prediction(gt: np.ndarray, factor: int = 16, sharpness: float = 5.0) -> np.ndarray:
    """A deliberately blurred, DeepLab-like prediction: the one-hot ground truth average-pooled by
    ``factor``, upsampled bilinearly to full size, softmax of ``sharpness`` times that."""
    g = np.where(gt == 255, 0, gt)
    onehot = torch.from_numpy((np.arange(21)[:, None, None] == g[None]).astype(np.float32))[None]
    coarse = F.avg_pool2d(onehot, factor, ceil_mode=True)
    up = F.interpolate(coarse, size=gt.shape, mode="bilinear", align_corners=False)[0]
    return torch.softmax(sharpness * up, dim=0).numpy()


def boundary_band(gt: np.ndarray, width: int = 8) -> np.ndarray:
    """Scored pixels (not void) within ``width`` pixels of a ground-truth label edge."""
    from scipy import ndimage

    edges = ndimage.morphological_gradient(gt.astype(np.int32), size=3) > 0
    return ndimage.binary_dilation(edges, iterations=width) & (gt != 255)


@pytest.fixture(scope="module")
def voc_fixture():  # module scope, so the CRF below runs once for several tests
    return shared_path("data", "voc_fixture")


@pytest.fixture(scope="module")
def first_val(voc_fixture):
    pytest.importorskip("pydensecrf")  # the optional extra [crf]
    voc = voc_fixture
    name = val_names(voc)[0]
    image = read_image(voc / "JPEGImages" / f"{name}.jpg")
    gt = read_label(voc / "SegmentationClassAug" / f"{name}.png")
    probs = blurred_prediction(gt)
    return image, gt, probs, backend.refine(image, probs, PRESETS["deeplab-resnet"])


def test_matches_direct_pydensecrf_call(first_val):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    image, _, probs, ours = first_val
    p = PRESETS["deeplab-resnet"]
    classes, height, width = probs.shape
    d = dcrf.DenseCRF2D(width, height, classes)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=p.pos_xy, compat=p.pos_w)
    d.addPairwiseBilateral(sxy=p.bi_xy, srgb=p.bi_rgb, rgbim=np.ascontiguousarray(image), compat=p.bi_w)
    direct = np.array(d.inference(p.iterations)).reshape(classes, height, width)
    assert ours.shape == probs.shape and ours.dtype == np.float32
    assert np.array_equal(ours.argmax(0), direct.argmax(0))
    np.testing.assert_allclose(ours, direct, atol=1e-6)
    np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-4)


def test_crf_sharpens_blurred_predictions_near_edges(first_val, voc_fixture):
    """Boundary accuracy (pixels within 8 px of a ground-truth edge), summed over the first three
    val images, goes up by more than 1.5 points with the default preset."""
    image, gt, probs, refined = first_val
    correct_before = correct_after = total = 0
    cases = [(image, gt, probs, refined)]
    for name in val_names(voc_fixture)[1:3]:
        img = read_image(voc_fixture / "JPEGImages" / f"{name}.jpg")
        g = read_label(voc_fixture / "SegmentationClassAug" / f"{name}.png")
        pr = blurred_prediction(g)
        cases.append((img, g, pr, backend.refine(img, pr, PRESETS["deeplab-resnet"])))
    for _, g, pr, out in cases:
        band = boundary_band(g)
        correct_before += int((pr.argmax(0) == g)[band].sum())
        correct_after += int((out.argmax(0) == g)[band].sum())
        total += int(band.sum())
    before, after = correct_before / total, correct_after / total
    assert after > before + 0.015, (before, after)
    # and away from edges the CRF leaves the (already right) interior alone
    _, g, pr, out = cases[0]
    interior = ~boundary_band(g, 24) & (g != 255)
    assert (out.argmax(0) == g)[interior].mean() > 0.99


def test_parameters_reach_pydensecrf(first_val):
    """Changing a kernel parameter changes the result: the parameters are really passed on."""
    image, _, probs, ours = first_val
    crop = (slice(None), slice(0, 96), slice(0, 96))
    img = np.ascontiguousarray(image[:96, :96])
    base = backend.refine(img, np.ascontiguousarray(probs[crop]), PRESETS["deeplab-resnet"])
    for change in ({"bi_w": 20.0}, {"iterations": 1}, {"pos_w": 20.0, "pos_xy": 5.0}):
        other = backend.refine(
            img, np.ascontiguousarray(probs[crop]), CRFParams(**{**PRESETS["deeplab-resnet"].__dict__, **change})
        )
        assert not np.allclose(other, base), change


def test_bad_shapes_are_clear_errors():
    pytest.importorskip("pydensecrf")
    with pytest.raises(DeepLabError, match="at the image's size"):
        dense_crf(np.zeros((4, 5, 3), np.uint8), np.ones((2, 5, 4), np.float32) / 2, backend="pydensecrf")
    with pytest.raises(DeepLabError, match="uint8 RGB"):
        dense_crf(np.zeros((4, 5), np.float32), np.ones((2, 4, 5), np.float32) / 2, backend="pydensecrf")


def test_missing_pydensecrf_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    assert not backend.available() and not pydensecrf_available()
    hint = r'pip install "deeplab_resnet\[crf\]"'
    with pytest.raises(DeepLabError, match=hint):
        backend.refine(np.zeros((4, 5, 3), np.uint8), np.ones((2, 4, 5), np.float32) / 2, PRESETS["deeplab-resnet"])
    with pytest.raises(DeepLabError, match=hint):  # the dispatcher asks the same function
        dense_crf(np.zeros((4, 5, 3), np.uint8), np.ones((2, 4, 5), np.float32) / 2, backend="pydensecrf")


def test_cli_without_pydensecrf_one_line_install_hint(tmp_path, tiny_weights, voc_fixture):
    # A stand-in package that fails to import, first on the path: as if pydensecrf were not installed.
    fake = tmp_path / "fake" / "pydensecrf"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'fake'}:{REPO / 'src'}", "PATH": "/usr/bin:/bin"}
    # evaluate and segment share the check (commands.segment.crf_params_from_args)
    command = ["evaluate", "--data-dir", voc_fixture, "--data-list", voc_fixture / "list_val.txt"]
    result = subprocess.run(
        [sys.executable, "-m", "deeplab_resnet", *map(str, command), "--weights", str(tiny_weights),
         "--crf", "--crf-backend", "pydensecrf", "--device", "cpu", "-o", str(tmp_path / "e")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "deeplab_resnet[crf]"' in lines[0], result.stderr
    assert not (tmp_path / "e").exists()


def test_cli_choices_match_the_crf_module():
    from deeplab_resnet.commands.common import CRF_BACKENDS, CRF_PRESETS

    assert set(CRF_PRESETS) == set(PRESETS) and CRF_PRESETS[0] == "deeplab-resnet"
    assert tuple(CRF_BACKENDS) == tuple(BACKENDS)


@pytest.mark.slow
def test_crf_sharpens_blurred_predictions_over_all_val_images(voc_fixture):
    """All 11 val images (aggregate): measured 81.6% -> 84.2% boundary accuracy; up on 8 of 11."""
    pytest.importorskip("pydensecrf")
    correct_before = correct_after = total = 0
    for name in val_names(voc_fixture):
        img = read_image(voc_fixture / "JPEGImages" / f"{name}.jpg")
        g = read_label(voc_fixture / "SegmentationClassAug" / f"{name}.png")
        pr = blurred_prediction(g)
        out = backend.refine(img, pr, PRESETS["deeplab-resnet"])
        band = boundary_band(g)
        correct_before += int((pr.argmax(0) == g)[band].sum())
        correct_after += int((out.argmax(0) == g)[band].sum())
        total += int(band.sum())
    assert correct_after / total > correct_before / total + 0.015
