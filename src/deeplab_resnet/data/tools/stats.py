"""The mean colour of a dataset's images, for the ``mean_bgr`` of its description.

Per-channel sums and sums of squares are accumulated as integers, so the result does not
depend on the order or the grouping of the images (or on the number of worker processes):
the mean is the exact quotient, rounded once to float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DeepLabError
from ...images import read_image
from .parallel import parallel_map


@dataclass(frozen=True)
class ImageSums:
    """Exact per-channel sums of one image (or many, added up), in R, G, B order."""

    pixels: int
    sums: tuple[int, int, int]
    squares: tuple[int, int, int]
    images: int = 1

    def __add__(self, other: ImageSums) -> ImageSums:
        return ImageSums(
            self.pixels + other.pixels,
            tuple(a + b for a, b in zip(self.sums, other.sums)),  # type: ignore[arg-type]
            tuple(a + b for a, b in zip(self.squares, other.squares)),  # type: ignore[arg-type]
            self.images + other.images,
        )


def image_sums(path: Path) -> ImageSums:
    """Sums of one image, read as the training pipeline reads it (RGB, EXIF orientation applied)."""
    rgb = read_image(path).reshape(-1, 3).astype(np.int64)
    sums = rgb.sum(axis=0)
    squares = (rgb * rgb).sum(axis=0)
    return ImageSums(rgb.shape[0], tuple(int(v) for v in sums), tuple(int(v) for v in squares))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ColourStats:
    """Mean and standard deviation per channel, in B, G, R order (the description's order)."""

    images: int
    pixels: int
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]


def colour_stats(paths: list[Path], *, workers: int | None = None, progress: bool = True) -> ColourStats:
    """Mean and standard deviation of all pixels of all ``paths`` (every pixel weighs the same).

    Args:
        paths: image files.
        workers: worker processes (None: one per core, at most 8).
        progress: show a progress bar on stderr.
    """
    if not paths:
        raise DeepLabError("no images to compute statistics of")
    total = ImageSums(0, (0, 0, 0), (0, 0, 0), 0)
    for sums in parallel_map(image_sums, paths, workers=workers, desc="images", progress=progress):
        total = total + sums
    n = total.pixels
    mean_rgb = [s / n for s in total.sums]  # int / int: correctly rounded
    # Var = (n*sum(x^2) - sum(x)^2) / n^2, computed in integers before the one division.
    std_rgb = [math.sqrt((n * q - s * s) / (n * n)) for s, q in zip(total.sums, total.squares)]
    return ColourStats(
        total.images,
        n,
        (mean_rgb[2], mean_rgb[1], mean_rgb[0]),
        (std_rgb[2], std_rgb[1], std_rgb[0]),
    )
