"""Training augmentation exactly as the original (docs/original.md §4): random scale, random mirror,
pad bottom/right to the crop (image with the mean colour, label with the ignore label), random
crop, BGR minus mean. One addition of ours: a crop window whose label is all ignore label is
drawn again (up to :data:`CROP_TRIES` windows), since it would add nothing to the loss; on
datasets with large unlabelled areas (Cityscapes, GTA5, SYNTHIA, COCO-Stuff) such windows are
common. With labelled pixels in the first window nothing changes from the original.

Randomness comes only from the ``numpy.random.Generator`` passed in, so a sample's augmentation
is a pure function of that generator's seed (see :mod:`deeplab_resnet.data.stream`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..preprocess import to_input
from ..resize import interp_matrix

# Caffe's ImageSegData layer draws the scale from this set; the TF version draws U(0.5, 1.5).
CAFFE_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)

# Crop windows drawn at most per sample while they hold only ignore label (the last is kept).
# When a fraction p of the crop positions see a labelled pixel, all 10 draws miss with
# probability (1 - p)^10: 0.25 % for p = 0.45.
CROP_TRIES = 10


def nearest_indices(in_size: int, out_size: int, device=None) -> torch.Tensor:
    """Source index of each output pixel for TF1 ``resize_nearest_neighbor``.

    ``align_corners=False`` without half-pixel centres (the TF1 default the original used):
    ``src = floor(dst * in / out)``, clamped to the last pixel. Computed in float64 so that
    exact ratios do not round down by one.
    """
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    return (dst * (in_size / out_size)).floor().long().clamp(max=in_size - 1)


def resize_nearest(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize the last two dims of an integer label tensor as ``tf.image.resize_nearest_neighbor``."""
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = labels.shape[-2], labels.shape[-1]
    if (in_h, in_w) == (out_h, out_w):
        return labels
    rows = nearest_indices(in_h, out_h, labels.device)
    cols = nearest_indices(in_w, out_w, labels.device)
    return labels[..., rows[:, None], cols[None, :]]


def _taps(in_size: int, out_size: int, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two (index, weight) taps of each output pixel, read off ``resize.interp_matrix``."""
    weights, index = interp_matrix(in_size, out_size, convention, dtype=torch.float64).topk(2, dim=1)  # type: ignore[arg-type]
    return index, weights.to(torch.float32)


def resize_bilinear_taps(x: torch.Tensor, size: tuple[int, int], convention: str) -> torch.Tensor:
    """``resize.resize_bilinear`` for one ``C x H x W`` image, computed from two taps per pixel.

    Same weights (taken from :func:`resize.interp_matrix`), but O(output) work instead of the
    dense matrix products' O(H·W·W'): the data pipeline resizes every sample, and the dense form
    made it 60% of the loading time. Equal to ``resize_bilinear`` up to float rounding.
    """
    (iy, wy), (ix, wx) = _taps(x.shape[-2], size[0], convention), _taps(x.shape[-1], size[1], convention)
    rows = x[:, iy[:, 0], :] * wy[:, 0, None] + x[:, iy[:, 1], :] * wy[:, 1, None]
    return rows[:, :, ix[:, 0]] * wx[:, 0] + rows[:, :, ix[:, 1]] * wx[:, 1]


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """The TF version's ``image_scaling``: ``to_int32(to_float(h) * scale)``."""
    return max(int(np.float32(height) * np.float32(scale)), 1), max(int(np.float32(width) * np.float32(scale)), 1)


@dataclass(frozen=True)
class TrainTransform:
    """The original's training augmentation.

    Args:
        crop_size: (height, width) of the crop (321, 321 in the original).
        mean_bgr: mean subtracted from the BGR image.
        ignore_label: value used to pad labels.
        random_scale: rescale image and label by a random factor.
        random_mirror: flip horizontally with probability 1/2.
        scale_mode: ``"continuous"`` (TF: U(0.5, 1.5)) or ``"discrete"`` (Caffe: one of
            :data:`CAFFE_SCALES`).
        convention: how the image is rescaled (the convention's bilinear, see ``resize.py``);
            the label always by TF nearest neighbour.
        crop_tries: crop windows drawn at most while the label window is all ignore label
            (1: the original's single draw).
        scale_range: ``(low, high)`` of the continuous random scale (the original: 0.5, 1.5); a
            dataset description may set its own (``training.scale_range``).
    """

    crop_size: tuple[int, int]
    mean_bgr: Sequence[float]
    ignore_label: int = 255
    random_scale: bool = False
    random_mirror: bool = False
    scale_mode: str = "continuous"
    convention: str = "tf"
    crop_tries: int = CROP_TRIES
    scale_range: tuple[float, float] = (0.5, 1.5)

    def __post_init__(self) -> None:
        if self.scale_mode not in ("continuous", "discrete"):
            raise ValueError(f"scale_mode must be 'continuous' or 'discrete', got {self.scale_mode!r}")
        if self.crop_tries < 1:
            raise ValueError(f"crop_tries must be at least 1, got {self.crop_tries}")

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB ``H x W x 3`` uint8 and ``H x W`` labels → (``3 x h x w`` float32, ``h x w`` int64)."""
        x = to_input(image, self.mean_bgr)
        y = torch.from_numpy(np.asarray(label, dtype=np.int64))
        # The draws happen in a fixed order whatever the flags, so the stream never shifts.
        if self.scale_mode == "continuous":
            scale = float(rng.uniform(*self.scale_range))
        else:
            scale = float(CAFFE_SCALES[rng.integers(len(CAFFE_SCALES))])
        flip = bool(rng.random() < 0.5)
        if self.random_scale:
            size = scaled_shape(x.shape[-2], x.shape[-1], scale)
            x = resize_bilinear_taps(x, size, self.convention)
            y = resize_nearest(y, size)
        if self.random_mirror and flip:
            x, y = x.flip(-1), y.flip(-1)
        x, y = pad_to(x, y, self.crop_size, self.ignore_label)
        top, left = self.crop_origin(y, rng)
        ch, cw = self.crop_size
        x = x[:, top : top + ch, left : left + cw].contiguous()
        y = y[top : top + ch, left : left + cw].contiguous()
        return x, y

    def crop_origin(self, y: torch.Tensor, rng: np.random.Generator) -> tuple[int, int]:
        """Top-left corner of the crop: uniform, drawn again (up to ``crop_tries`` times) while
        the label window holds only the ignore label. Draws come from ``rng`` alone."""
        ch, cw = self.crop_size
        for _ in range(self.crop_tries):
            top = int(rng.integers(y.shape[-2] - ch + 1))
            left = int(rng.integers(y.shape[-1] - cw + 1))
            if (y[top : top + ch, left : left + cw] != self.ignore_label).any():
                break
        return top, left


def pad_to(x: torch.Tensor, y: torch.Tensor, size: tuple[int, int], ignore_label: int):
    """Pad bottom/right up to ``size``: the image with 0 (the mean colour), the label with ``ignore_label``."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    if ph == 0 and pw == 0:
        return x, y
    x = torch.nn.functional.pad(x, (0, pw, 0, ph), value=0.0)
    y = torch.nn.functional.pad(y, (0, pw, 0, ph), value=ignore_label)
    return x, y
