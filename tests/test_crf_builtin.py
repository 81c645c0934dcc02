"""Our dense CRF (the ``builtin`` backend, ``crf/builtin.py``, both its kernels: the C one and
torch ops) against ``pydensecrf`` called directly, and the dispatch.

The unaries are real-looking: the ground truth of a real fixture image as one-hot, blurred and
scaled into logits with noise, softmaxed - confident inside objects, unsure near boundaries,
which is where the CRF changes labels.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from deeplab_resnet.crf import BACKENDS, PRESETS, CRFParams, builtin, dense_crf, resolve_backend, torch_meanfield
from deeplab_resnet.crf.meanfield_rules import UNARY_CLIP
from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.images import read_image, read_label

NAMES = ["2007_000032", "2007_000039"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads wait on each other in every small op."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pydensecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("pydensecrf (pydensecrf2, in the [test] extra) is missing in CI")
        pytest.skip("pydensecrf not installed")
    return dcrf


def blurred_probs(label: np.ndarray, classes: int = 21, sigma: float = 6.0, seed: int = 0) -> np.ndarray:
    """``C x H x W`` probabilities from a ground-truth map: blurred one-hot * 6 + noise, softmaxed."""
    from scipy.ndimage import gaussian_filter

    lab = np.where(label >= classes, 0, label)
    onehot = np.eye(classes, dtype=np.float32)[lab].transpose(2, 0, 1)
    logits = np.stack([gaussian_filter(o, sigma) for o in onehot]) * 6.0
    logits += np.random.default_rng(seed).normal(0, 0.5, logits.shape).astype(np.float32)
    p = np.exp(logits - logits.max(axis=0))
    return (p / p.sum(axis=0)).astype(np.float32)


def pydensecrf_reference(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """The usual DenseCRF2D recipe, written here independently of our code."""
    dcrf = _pydensecrf()
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(sxy=params.pos_xy, compat=params.pos_w)
    crf.addPairwiseBilateral(
        sxy=params.bi_xy, srgb=params.bi_rgb, rgbim=np.ascontiguousarray(image), compat=params.bi_w
    )
    return np.asarray(crf.inference(params.iterations)).reshape(c, h, w)


def _pair(voc_fixture, name, size=(120, 180)):
    img = read_image(voc_fixture / "JPEGImages" / f"{name}.jpg")
    lab = read_label(voc_fixture / "SegmentationClassAug" / f"{name}.png")
    if size:  # a real region around objects keeps the default suite fast
        h, w = size
        img, lab = img[80 : 80 + h, 140 : 140 + w].copy(), lab[80 : 80 + h, 140 : 140 + w].copy()
    return img, lab


KERNELS = ["c", "torch"]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_matches_pydensecrf_on_fixture_images(voc_fixture, preset, kernel):
    _pydensecrf()
    params = PRESETS[preset]
    for name in NAMES:
        img, lab = _pair(voc_fixture, name)
        probs = blurred_probs(lab)
        ref = pydensecrf_reference(img, probs, params)
        ours = builtin.refine(img, probs, params, device="cpu", kernel=kernel)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        agree = (ours.argmax(0) == ref.argmax(0)).mean()
        assert agree >= 0.995, f"{name}: label agreement {agree:.4f}"
        assert np.abs(ours - ref).max() < 1e-3  # the same model, up to float summation order
        # and the CRF did something (else agreement would be trivial)
        assert (ref.argmax(0) != probs.argmax(0)).mean() > 0.001


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_matches_pydensecrf_full_images(voc_fixture, preset, kernel):
    _pydensecrf()
    params = PRESETS[preset]
    names = [
        line.split()[0].split("/")[-1][:-4] for line in (voc_fixture / "list_val.txt").read_text().split("\n") if line
    ]
    for name in names:
        img, lab = _pair(voc_fixture, name, size=None)
        probs = blurred_probs(lab)
        ours = builtin.refine(img, probs, params, device="cpu", kernel=kernel)
        ref = pydensecrf_reference(img, probs, params)
        assert (ours.argmax(0) == ref.argmax(0)).mean() >= 0.995


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_equals_one_by_one(voc_fixture, kernel):
    params = PRESETS["tf-branch"]
    pairs = [_pair(voc_fixture, n, (60, 90)) for n in NAMES]
    probs = [blurred_probs(lab, seed=i) for i, (_, lab) in enumerate(pairs)]
    batch = builtin.refine_batch(
        torch.from_numpy(np.stack([img for img, _ in pairs])), torch.from_numpy(np.stack(probs)), params, kernel=kernel
    ).numpy()
    for i, (img, _) in enumerate(pairs):
        one = builtin.refine(img, probs[i], params, device="cpu", kernel=kernel)
        np.testing.assert_allclose(batch[i], one, atol=1e-5)


def test_pruning_labels_that_cannot_matter_changes_nothing(voc_fixture):
    # peaked unaries: 3 labels present, the other 18 at the clip floor, so they are pruned
    img, lab = _pair(voc_fixture, NAMES[0], (60, 90))
    probs = blurred_probs(lab, sigma=2.0)
    probs[3:] = 0.0
    probs[:3] += 1e-3
    probs /= probs.sum(axis=0)
    params = PRESETS["deeplab-resnet"]
    u = -torch.log(torch.from_numpy(probs).clamp(UNARY_CLIP, 1)).permute(1, 2, 0).reshape(-1, 21)
    images = torch.from_numpy(img)[None]
    pruned = torch_meanfield.MeanField(images, params)
    assert pruned.active_labels(torch.softmax(-u, dim=1)).tolist() == [0, 1, 2]
    full = torch_meanfield.MeanField(images, params, prune=False)
    assert full.active_labels(torch.softmax(-u, dim=1)) is None
    torch.testing.assert_close(pruned.infer(u, 10), full.infer(u, 10), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_iterations_is_the_clipped_input(voc_fixture, kernel):
    img, lab = _pair(voc_fixture, NAMES[0], (60, 90))
    probs = blurred_probs(lab)
    out = builtin.refine(img, probs, CRFParams(iterations=0), device="cpu", kernel=kernel)
    clipped = np.clip(probs, 1e-5, 1.0)
    np.testing.assert_allclose(out, clipped / clipped.sum(axis=0), atol=1e-6)


def test_dense_crf_dispatch(voc_fixture):
    img, lab = _pair(voc_fixture, NAMES[0], (40, 60))
    probs = blurred_probs(lab)
    params = PRESETS["deeplab-resnet"]
    ours = dense_crf(img, probs, params, backend="builtin")
    np.testing.assert_allclose(ours, builtin.refine(img, probs, params), atol=1e-6)
    assert set(BACKENDS) == {"auto", "builtin", "pydensecrf"}
    assert resolve_backend("builtin") == "builtin"
    assert resolve_backend("auto", device="cuda") == "builtin"
    assert resolve_backend("auto", device="cpu") in ("builtin", "pydensecrf")


def test_pydensecrf_backend_through_dispatch(voc_fixture):
    _pydensecrf()
    img, lab = _pair(voc_fixture, NAMES[1], (40, 60))
    probs = blurred_probs(lab)
    params = PRESETS["deeplab-vgg"]
    ref = pydensecrf_reference(img, probs, params)
    np.testing.assert_allclose(dense_crf(img, probs, params, backend="pydensecrf"), ref, atol=1e-6)
    auto = dense_crf(img, probs, params, backend="auto")
    assert (auto.argmax(0) == ref.argmax(0)).mean() >= 0.995


@pytest.mark.parametrize(
    "image, probs, backend",
    [
        (np.zeros((8, 9, 3), np.uint8), np.full((3, 8, 9), 1 / 3, np.float32), "magic"),
        (np.zeros((8, 9), np.uint8), np.full((3, 8, 9), 1 / 3, np.float32), "builtin"),
        (np.zeros((8, 9, 3), np.float32), np.full((3, 8, 9), 1 / 3, np.float32), "builtin"),
        (np.zeros((8, 9, 3), np.uint8), np.full((3, 9, 8), 1 / 3, np.float32), "builtin"),
        (np.zeros((8, 9), np.uint8), np.full((3, 8, 9), 1 / 3, np.float32), "pydensecrf"),
        (np.zeros((8, 9, 3), np.uint8), np.full((3, 9, 8), 1 / 3, np.float32), "pydensecrf"),
    ],
)
def test_bad_input_is_a_clear_error(image, probs, backend):
    with pytest.raises(DeepLabError):
        dense_crf(image, probs, backend=backend)
