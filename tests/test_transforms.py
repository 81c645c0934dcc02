"""Training augmentation: TF nearest-neighbour semantics, scale, mirror, pad and crop."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from deeplab_resnet.data.transforms import CAFFE_SCALES, TrainTransform, nearest_indices, resize_nearest, scaled_shape
from deeplab_resnet.preprocess import to_input

MEAN = (104.00698793, 116.66876762, 122.67891434)


def tf_nearest_reference(in_size: int, out_size: int) -> list[int]:
    """TF1 resize_nearest_neighbor (align_corners=False, no half-pixel centres), in exact arithmetic."""
    return [min(int(Fraction(d * in_size, out_size)), in_size - 1) for d in range(out_size)]


def test_nearest_indices_hand_computed():
    assert nearest_indices(4, 2).tolist() == [0, 2]
    assert nearest_indices(3, 2).tolist() == [0, 1]  # floor(1 * 3/2) = 1
    assert nearest_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert nearest_indices(2, 3).tolist() == [0, 0, 1]
    # 321 -> 41 (the crop's logit grid): step 321/41 = 7.829...
    idx = nearest_indices(321, 41).tolist()
    assert idx[:3] == [0, 7, 15] and idx[-1] == 313


@pytest.mark.parametrize("pair", [(321, 41), (500, 63), (41, 321), (7, 7), (100, 30), (161, 21), (97, 13)])
def test_nearest_indices_match_exact_arithmetic(pair):
    assert nearest_indices(*pair).tolist() == tf_nearest_reference(*pair)


def test_resize_nearest_picks_those_pixels():
    labels = torch.arange(6 * 9).reshape(6, 9)
    out = resize_nearest(labels, (4, 5))
    rows, cols = tf_nearest_reference(6, 4), tf_nearest_reference(9, 5)
    expected = [[int(labels[r, c]) for c in cols] for r in rows]
    assert out.tolist() == expected
    batch = torch.stack([labels, labels + 100])
    assert resize_nearest(batch, (4, 5))[1].tolist() == (torch.tensor(expected) + 100).tolist()


def test_scaled_shape_truncates_like_tf():
    assert scaled_shape(375, 500, 0.5) == (187, 250)
    assert scaled_shape(375, 500, 1.3) == (487, 650)
    assert scaled_shape(10, 10, 0.01) == (1, 1)


def image_and_label(h=20, w=30, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 21, (h, w)).astype(np.uint8)
    label[0, 0] = 255
    return image, label


def test_pad_bottom_right_with_mean_and_ignore_when_crop_is_larger():
    image, label = image_and_label(20, 30)
    t = TrainTransform((25, 40), MEAN, ignore_label=255)
    x, y = t(image, label, np.random.default_rng(0))
    assert x.shape == (3, 25, 40) and y.shape == (25, 40) and y.dtype == torch.int64
    assert torch.equal(x[:, :20, :30], to_input(image, MEAN))
    assert (x[:, 20:, :] == 0).all() and (x[:, :, 30:] == 0).all()  # the mean colour
    assert torch.equal(y[:20, :30], torch.from_numpy(label.astype(np.int64)))
    assert (y[20:, :] == 255).all() and (y[:, 30:] == 255).all()


def test_random_crop_is_a_window_of_the_image_and_covers_offsets():
    image, label = image_and_label(20, 30)
    full = to_input(image, MEAN)
    t = TrainTransform((8, 8), MEAN)
    offsets = set()
    for seed in range(60):
        x, y = t(image, label, np.random.default_rng(seed))
        hits = [
            (i, j)
            for i in range(13)
            for j in range(23)
            if torch.equal(full[:, i : i + 8, j : j + 8], x) and (label[i : i + 8, j : j + 8] == y.numpy()).all()
        ]
        assert hits, "the crop must be a window of the image, image and label aligned"
        offsets.add(hits[0])
    assert len(offsets) > 30  # random offsets, not a fixed one


def test_mirror_flips_image_and_label_together_about_half_the_time():
    image, label = image_and_label(16, 16)
    plain = TrainTransform((16, 16), MEAN)
    mirrored = TrainTransform((16, 16), MEAN, random_mirror=True)
    x0, y0 = plain(image, label, np.random.default_rng(0))
    flips = 0
    for seed in range(40):
        x, y = mirrored(image, label, np.random.default_rng(seed))
        if torch.equal(x, x0.flip(-1)):
            assert torch.equal(y, y0.flip(-1))
            flips += 1
        else:
            assert torch.equal(x, x0) and torch.equal(y, y0)
    assert 8 <= flips <= 32


def scaled_extent(t, image, label, seed):
    """The scaled image's size, read off the padding (label pad = 255 with no 255 inside)."""
    _, y = t(image, label, np.random.default_rng(seed))
    inside = (y != 255).numpy()
    return int(inside.any(axis=1).sum()), int(inside.any(axis=0).sum())


def test_random_scale_continuous_and_discrete():
    image, label = image_and_label(20, 20)
    label[label == 255] = 0
    cont = TrainTransform((40, 40), MEAN, random_scale=True, convention="tf")
    disc = TrainTransform((40, 40), MEAN, random_scale=True, scale_mode="discrete", convention="caffe")
    cont_sizes = {scaled_extent(cont, image, label, s) for s in range(40)}
    disc_sizes = {scaled_extent(disc, image, label, s) for s in range(40)}
    allowed = {scaled_shape(20, 20, s) for s in CAFFE_SCALES}
    assert disc_sizes <= allowed and len(disc_sizes) >= 4
    assert all(10 <= h <= 30 and h == w for h, w in cont_sizes)
    assert len(cont_sizes) > len(disc_sizes)  # continuous covers sizes between the discrete ones


def test_scaled_label_is_nearest_of_original_and_image_is_convention_bilinear():
    from deeplab_resnet.resize import resize_bilinear

    image, label = image_and_label(20, 24)
    t = TrainTransform((60, 60), MEAN, random_scale=True, convention="tf")
    rng = np.random.default_rng(3)
    scale = rng.uniform(0.5, 1.5)  # the transform's first draw
    h, w = scaled_shape(20, 24, scale)
    x, y = t(image, label, np.random.default_rng(3))
    rows, cols = tf_nearest_reference(20, h), tf_nearest_reference(24, w)
    assert y[:h, :w].numpy().tolist() == label[np.ix_(rows, cols)].astype(np.int64).tolist()
    expected = resize_bilinear(to_input(image, MEAN), (h, w), "tf")
    assert torch.allclose(x[:, :h, :w], expected, atol=1e-4)


@pytest.mark.parametrize("convention", ["tf", "caffe"])
@pytest.mark.parametrize(
    "sizes", [((20, 24), (31, 13)), ((375, 500), (187, 250)), ((7, 9), (10, 13)), ((5, 5), (1, 1))]
)
def test_two_tap_resize_equals_the_reference_resize(convention, sizes):
    from deeplab_resnet.data.transforms import resize_bilinear_taps
    from deeplab_resnet.resize import resize_bilinear

    (h, w), size = sizes
    x = torch.randn(3, h, w, generator=torch.Generator().manual_seed(0)) * 100
    assert torch.allclose(resize_bilinear_taps(x, size, convention), resize_bilinear(x, size, convention), atol=1e-4)


def test_same_seed_same_sample():
    image, label = image_and_label(30, 30)
    t = TrainTransform((17, 17), MEAN, random_scale=True, random_mirror=True)
    a = t(image, label, np.random.default_rng([1234, 7]))
    b = t(image, label, np.random.default_rng([1234, 7]))
    c = t(image, label, np.random.default_rng([1234, 8]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
