"""Validating a labelled list before hours are spent on it: the core behind ``deeplab data check``
and the pre-flight check of ``deeplab train``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DeepLabError
from ..images import _open, read_label
from .lists import Pair


@dataclass
class PairCheck:
    """What one image/label pair looks like. ``errors`` each name the file."""

    pair: Pair
    errors: list[str] = field(default_factory=list)
    histogram: np.ndarray | None = None  # pixels per label value 0..255
    image_size: tuple[int, int] | None = None  # (width, height)

    def out_of_range(self, num_classes: int, ignore_label: int) -> int:
        """Pixels whose label is neither a class nor the ignore label."""
        if self.histogram is None:
            return 0
        bad = self.histogram[num_classes:].sum()
        if num_classes <= ignore_label < 256:
            bad -= self.histogram[ignore_label]
        return int(bad)


def check_pair(pair: Pair) -> PairCheck:
    """Open the image and the label (fully decoding both), compare sizes, histogram the labels."""
    result = PairCheck(pair)
    try:
        image = _open(pair.image)
        result.image_size = image.size
    except DeepLabError as exc:
        result.errors.append(str(exc))
    if pair.label is None:
        return result
    try:
        label = read_label(pair.label)
    except DeepLabError as exc:
        result.errors.append(str(exc))
        return result
    result.histogram = np.bincount(label.ravel(), minlength=256)
    if result.image_size is not None and (label.shape[1], label.shape[0]) != result.image_size:
        w, h = result.image_size
        result.errors.append(f"{pair.label}: size {label.shape[1]}x{label.shape[0]} differs from its image ({w}x{h})")
    return result
