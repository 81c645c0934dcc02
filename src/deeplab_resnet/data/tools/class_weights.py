"""Class weights for the weighted cross-entropy (``deeplab train --class-weights FILE``), from the
label pixel counts of a training list (``deeplab data stats --class-weights METHOD``).

Two documented schemes, over the valid pixels (labels in ``[0, num_classes)`` other than the
ignore label):

* ``median-frequency`` (Eigen & Fergus, ICCV 2015): ``w_c = median(f) / f_c`` with
  ``f_c = pixels of c / pixels of the images where c appears`` (valid pixels of those images).
  The median is over the classes that appear. A class that never appears gets weight 1: it
  contributes no loss term, and every weight must be finite and positive.
* ``inverse-log-frequency`` (ENet, Paszke et al. 2016): ``w_c = 1 / ln(1.02 + p_c)`` with
  ``p_c = pixels of c / all valid pixels``; an absent class gets ``1 / ln(1.02)`` ≈ 50.5.

The file written and read here is JSON: ``{"method", "num_classes", "ignore_label", "weights",
"pixels", "image_pixels"}``; :func:`read_class_weights` also accepts a bare list of weights, for
weights made by hand. This module does not import torch.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_text
from ...errors import DeepLabError
from ...images import read_label
from .parallel import parallel_map

METHODS = ("median-frequency", "inverse-log-frequency")


@dataclass(frozen=True)
class ClassPixels:
    """Per class: its valid pixels, and the valid pixels of the images where it appears."""

    pixels: tuple[int, ...]
    image_pixels: tuple[int, ...]

    def __add__(self, other: ClassPixels) -> ClassPixels:
        return ClassPixels(
            tuple(a + b for a, b in zip(self.pixels, other.pixels)),
            tuple(a + b for a, b in zip(self.image_pixels, other.image_pixels)),
        )


def label_class_pixels(path: Path, num_classes: int, ignore_label: int) -> ClassPixels:
    """The :class:`ClassPixels` of one label file (values ≥ ``num_classes`` and the ignore label do not count)."""
    hist = np.bincount(read_label(path).ravel(), minlength=256)[:num_classes].astype(np.int64)
    if 0 <= ignore_label < num_classes:
        hist[ignore_label] = 0
    valid = int(hist.sum())
    return ClassPixels(tuple(int(v) for v in hist), tuple(valid if v else 0 for v in hist))


def class_pixel_counts(
    paths: list[Path], num_classes: int, ignore_label: int, *, workers: int | None = None, progress: bool = True
) -> ClassPixels:
    """The :class:`ClassPixels` of all label files ``paths`` added up (exact integers: order-independent)."""
    if not paths:
        raise DeepLabError("no label files to count classes in (the list has no labels)")
    total = ClassPixels((0,) * num_classes, (0,) * num_classes)
    count = functools.partial(label_class_pixels, num_classes=num_classes, ignore_label=ignore_label)
    for part in parallel_map(count, paths, workers=workers, desc="labels", progress=progress):
        total = total + part
    return total


def median_frequency_weights(counts: ClassPixels) -> list[float]:
    """Eigen & Fergus: ``median(f) / f_c``, ``f_c = pixels[c] / image_pixels[c]``; absent classes: 1."""
    freq = [p / n if p else None for p, n in zip(counts.pixels, counts.image_pixels)]
    present = [f for f in freq if f is not None]
    if not present:
        raise DeepLabError("no valid label pixel in the list: cannot compute class weights")
    median = float(np.median(present))
    return [median / f if f is not None else 1.0 for f in freq]


def inverse_log_frequency_weights(counts: ClassPixels) -> list[float]:
    """ENet: ``1 / ln(1.02 + p_c)``, ``p_c = pixels[c] / all valid pixels``."""
    total = sum(counts.pixels)
    if total == 0:
        raise DeepLabError("no valid label pixel in the list: cannot compute class weights")
    return [1.0 / math.log(1.02 + p / total) for p in counts.pixels]


def class_weights(counts: ClassPixels, method: str) -> list[float]:
    """The weights of ``method`` (one of :data:`METHODS`)."""
    if method == "median-frequency":
        return median_frequency_weights(counts)
    if method == "inverse-log-frequency":
        return inverse_log_frequency_weights(counts)
    raise DeepLabError(f"--class-weights must be one of {', '.join(METHODS)}, got {method!r}")


def write_class_weights(
    path: str | Path, weights: list[float], counts: ClassPixels, method: str, ignore_label: int
) -> None:
    """Write the weights file that ``deeplab train --class-weights`` reads (atomically)."""
    data = {
        "method": method,
        "num_classes": len(weights),
        "ignore_label": ignore_label,
        "weights": weights,
        "pixels": list(counts.pixels),
        "image_pixels": list(counts.image_pixels),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_class_weights(path: str | Path, num_classes: int) -> list[float]:
    """The weights of a file written by :func:`write_class_weights` (or a bare JSON list), checked:
    exactly ``num_classes`` finite, positive numbers."""
    where = f"--class-weights {path}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeepLabError(f"{where}: file not found (write one with 'deeplab data stats --class-weights')") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeepLabError(f"{where}: not a JSON file ({exc})") from None
    weights = data.get("weights") if isinstance(data, dict) else data
    if not isinstance(weights, list):
        raise DeepLabError(f"{where}: expected a JSON list of weights or an object with a 'weights' list")
    if len(weights) != num_classes:
        raise DeepLabError(f"{where}: {len(weights)} weights for {num_classes} classes (one per class is needed)")
    for c, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise DeepLabError(f"{where}: the weight of class {c} must be a finite positive number, got {w!r}")
    return [float(w) for w in weights]
