"""Upsampling semantics of both originals, against hand-computed cases and independent code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deeplab_resnet.resize import resize_bilinear, scaled_size


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


def tf1_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Direct per-pixel loop of TF1's resize_bilinear (legacy, no half-pixel centres)."""
    in_h, in_w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + (out_h, out_w))
    for i in range(out_h):
        sy = i * in_h / out_h
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for j in range(out_w):
            sx = j * in_w / out_w
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = x[..., y0, x0] * (1 - fx) + x[..., y0, x1] * fx
            bottom = x[..., y1, x0] * (1 - fx) + x[..., y1, x1] * fx
            out[..., i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("src,dst", [((5, 7), (33, 50)), ((41, 41), (321, 321)), ((9, 6), (4, 3)), ((1, 1), (3, 2))])
def test_tf1_resize_against_loop(src, dst):
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    out = resize_bilinear(x, dst, "tf")
    np.testing.assert_allclose(out.numpy(), tf1_reference(x.numpy(), *dst), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("src,dst", [((5, 7), (33, 50)), ((41, 41), (321, 321)), ((9, 6), (4, 3))])
def test_caffe_resize_is_align_corners(src, dst):
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    torch.testing.assert_close(
        resize_bilinear(x, dst, "caffe"), F.interpolate(x, dst, mode="bilinear", align_corners=True)
    )


def test_tf1_differs_from_pytorch_half_pixel():
    x = torch.randn(1, 1, 5, 5)
    half_pixel = F.interpolate(x, (10, 10), mode="bilinear", align_corners=False)
    assert not torch.allclose(resize_bilinear(x, (10, 10), "tf"), half_pixel)


def test_scaled_sizes():
    assert scaled_size(321, 321, 0.75, "tf") == (240, 240)
    assert scaled_size(321, 321, 0.5, "tf") == (160, 160)
    assert scaled_size(321, 321, 0.75, "caffe") == (241, 241)
    assert scaled_size(321, 321, 0.5, "caffe") == (161, 161)
