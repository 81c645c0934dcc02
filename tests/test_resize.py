"""Resizing and multi-scale sizes of both originals, against hand-computed cases and independent
float32 emulations of their kernels (tests/original_emulation.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from original_emulation import caffe_interp, interp_out, tf_resize

from deeplab_resnet.models import logit_size
from deeplab_resnet.resize import interp_matrix, interp_size, resize_bilinear, scaled_size

# Odd sizes, up and down, including 1 on either side.
SIZE_PAIRS = [(63, 48), (63, 32), (41, 54), (501, 376), (46, 500), (1, 7), (7, 1)]


def within_ulps(actual: np.ndarray, expected: np.ndarray, ulps: int) -> bool:
    assert actual.dtype == expected.dtype == np.float32
    return bool(np.all(np.abs(actual - expected) <= ulps * np.spacing(np.abs(expected))))


def test_tf1_resize_hand_computed():
    # TF1 resize_bilinear, align_corners=False, no half-pixel: src = dst * in / out = dst / 2.
    x = torch.tensor([[[[0.0, 4.0]]]])
    out = resize_bilinear(x, (1, 4), "tf")
    assert out.flatten().tolist() == [0.0, 2.0, 4.0, 4.0]


def test_caffe_interp_hand_computed():
    # corner aligned: src = dst * (in - 1) / (out - 1) = dst / 3
    x = torch.tensor([[[[0.0, 3.0]]]])
    out = resize_bilinear(x, (1, 4), "caffe")
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 1.0, 2.0, 3.0]))


@pytest.mark.parametrize("h", SIZE_PAIRS)
@pytest.mark.parametrize("w", [(63, 48), (46, 500), (1, 7), (7, 1)])
def test_tf_resize_is_tfs_legacy_kernel_in_float32(h, w):
    """Within 2 float32 ulps of the emulated kernel (in fact bit-equal: the same operations)."""
    x = (np.random.default_rng(h[0] * 1000 + w[1]).standard_normal((2, 3, h[0], w[0])) * 50).astype(np.float32)
    ours = resize_bilinear(torch.from_numpy(x), (h[1], w[1]), "tf").numpy()
    ref = tf_resize(x, h[1], w[1])
    assert ours.shape == ref.shape and within_ulps(ours, ref, 2)


def test_tf_float32_coordinates_matter():
    """63 -> 500 (the logits of a 500-pixel side): float64 coordinates ``d * 63 / 500``, which the
    package used before, move some taps against TF's float32 ``(float)d * (63.f / 500)``."""
    src64 = np.arange(500) * (63 / 500)
    src32 = np.arange(500, dtype=np.float32) * (np.float32(63) / np.float32(500))
    assert np.any(src64.astype(np.float32) != src32)
    x = np.random.default_rng(0).standard_normal((1, 1, 63, 1)).astype(np.float32)
    low = np.minimum(np.floor(src64).astype(int), 62)
    frac = src64 - low
    old = (x[0, 0, low, 0] * (1 - frac) + x[0, 0, np.minimum(low + 1, 62), 0] * frac).astype(np.float32)
    ours = resize_bilinear(torch.from_numpy(x), (500, 1), "tf").numpy()[0, 0, :, 0]
    assert not np.array_equal(ours, old)
    assert np.array_equal(ours, tf_resize(x, 500, 1)[0, 0, :, 0])


@pytest.mark.parametrize("h", SIZE_PAIRS)
@pytest.mark.parametrize("w", [(513, 385), (65, 513), (49, 65), (1, 7), (7, 1)])
def test_caffe_resize_is_interp_in_float32(h, w):
    x = (np.random.default_rng(h[0] + w[1]).standard_normal((2, 3, h[0], w[0])) * 50).astype(np.float32)
    ours = resize_bilinear(torch.from_numpy(x), (h[1], w[1]), "caffe").numpy()
    ref = caffe_interp(x, h[1], w[1])
    assert ours.shape == ref.shape and within_ulps(ours, ref, 2)


@pytest.mark.parametrize("src,dst", [((5, 7), (33, 50)), ((41, 41), (321, 321)), ((9, 6), (4, 3))])
def test_caffe_resize_is_align_corners_up_to_float32_coordinates(src, dst):
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    torch.testing.assert_close(
        resize_bilinear(x, dst, "caffe"),
        F.interpolate(x, dst, mode="bilinear", align_corners=True),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("convention", ["caffe", "tf"])
@pytest.mark.parametrize("src,dst", [((63, 42), (500, 334)), ((513, 401), (385, 301)), ((1, 5), (7, 1))])
def test_interp_matrix_has_the_same_taps(convention, src, dst):
    """The Segmenter's matrices: rows sum to 1 and give the kernel's values up to float rounding."""
    x = torch.randn(3, *src)
    wy, wx = interp_matrix(src[0], dst[0], convention), interp_matrix(src[1], dst[1], convention)
    torch.testing.assert_close(wy.double().sum(1), torch.ones(dst[0], dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(wy @ x @ wx.T, resize_bilinear(x, dst, convention), rtol=1e-5, atol=1e-5)


def test_tf1_differs_from_pytorch_half_pixel():
    x = torch.randn(1, 1, 5, 5)
    half_pixel = F.interpolate(x, (10, 10), mode="bilinear", align_corners=False)
    assert not torch.allclose(resize_bilinear(x, (10, 10), "tf"), half_pixel)


def test_resize_is_differentiable():
    x = torch.randn(1, 2, 9, 7, requires_grad=True)
    for convention in ("caffe", "tf"):
        resize_bilinear(x, (17, 5), convention).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
cases = json.loads(sys.argv[1])
out = []
for seed, ih, iw, oh, ow in cases:
    x = (np.random.default_rng(seed).standard_normal((1, ih, iw, 3)) * 50).astype(np.float32)
    y = tf.compat.v1.image.resize_bilinear(x, (oh, ow), align_corners=False, half_pixel_centers=False).numpy()
    out.append(y.tolist())
print(json.dumps(out))
"""


def test_tf_resize_bit_equal_to_tensorflow_when_installed():
    """The real kernel (TF 2.x's legacy ResizeBilinear path), in a subprocess so that this
    process never imports TensorFlow (test_tf_checkpoint checks that)."""
    if importlib.util.find_spec("tensorflow") is None:  # not importorskip: that would import it here
        pytest.skip("optional: pip install '.[tf-test]'")
    cases = [(1, 63, 63, 48, 32), (2, 41, 46, 54, 500), (3, 501, 7, 376, 1), (4, 63, 42, 500, 334)]
    result = subprocess.run(
        [sys.executable, "-c", TF_SCRIPT, json.dumps(cases)], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for (seed, ih, iw, oh, ow), ref in zip(cases, json.loads(result.stdout.strip().splitlines()[-1])):
        x = (np.random.default_rng(seed).standard_normal((1, ih, iw, 3)) * 50).astype(np.float32)
        ours = resize_bilinear(torch.from_numpy(x).permute(0, 3, 1, 2), (oh, ow), "tf").permute(0, 2, 3, 1).numpy()
        assert np.array_equal(ours, np.asarray(ref, dtype=np.float32)), (ih, iw, oh, ow)


# ---- multi-scale branch sizes ------------------------------------------------------------------


def test_tf_scaled_sizes_are_int_of_float32_product():
    assert scaled_size(321, 321, 0.75, "tf") == (240, 240)
    assert scaled_size(321, 321, 0.5, "tf") == (160, 160)
    assert scaled_size(500, 334, 0.75, "tf") == (375, 250)
    # to_int32(to_float(h) * s) in float32: 90 * 0.7 is 63 (62 in float64), 90 * 1.3 is 116 (117)
    assert int(90 * 0.7) == 62 and int(90 * 1.3) == 117
    assert scaled_size(90, 90, 0.7, "tf") == (63, 63) and scaled_size(90, 90, 1.3, "tf") == (116, 116)
    assert scaled_size(3, 9, 0.25, "tf") == (0, 2)  # TF would refuse the 0; MSC does


def test_caffe_branch_sizes_are_interp_shrink_then_zoom():
    for n in range(50, 1200):
        # the formula, computed here: z * floor((n - 1) / s) + 1
        assert scaled_size(n, n, 0.75, "caffe") == (3 * ((n - 1) // 4) + 1,) * 2, n
        assert scaled_size(n, n, 0.5, "caffe") == ((n - 1) // 2 + 1,) * 2, n
        assert scaled_size(n, 7, 1.5, "caffe") == (3 * ((n - 1) // 2) + 1, 10), n


def test_caffe_branch_sizes_of_the_authors_graph():
    # the cases: the old zoom-first rule gave 375 and 281
    assert scaled_size(500, 375, 0.75, "caffe") == (373, 280)
    for crop, (b075, b05), (l100, l075, l05) in [(513, (385, 257), (65, 49, 33)), (321, (241, 161), (41, 31, 21))]:
        assert scaled_size(crop, crop, 0.75, "caffe") == (b075, b075)
        assert scaled_size(crop, crop, 0.5, "caffe") == (b05, b05)
        assert interp_out(crop, 3, 4) == b075 and interp_out(crop, 1, 2) == b05  # the test's own formula
        assert logit_size(crop, crop, "caffe") == (l100, l100)
        assert logit_size(b075, b075, "caffe") == (l075, l075) and logit_size(b05, b05, "caffe") == (l05, l05)
        # the branch logits come back by the inverse factors onto the 1x grid
        assert interp_size(l075, zoom=4, shrink=3) == l100 == interp_out(l075, 4, 3)
        assert interp_size(l05, zoom=2) == l100 == interp_out(l05, 2, 1)


def test_caffe_scales_beyond_small_ratios_use_the_corner_aligned_grid():
    assert scaled_size(500, 500, 0.65, "caffe") == (int(499 * 0.65) + 1,) * 2  # 13/20: no shrink <= 10
    assert scaled_size(500, 500, 0.6, "caffe") == (3 * (499 // 5) + 1,) * 2  # 3/5
