"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011) with interchangeable backends.

:func:`dense_crf` takes the image and the class probabilities at the image's size and returns
refined probabilities; the unary is ``-log(probs)``. Backends: ``torch`` (ours, CPU and CUDA)
and ``pydensecrf`` (the ``pydensecrf2`` package, optional extra ``[crf]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and the two kernels' weights and standard deviations.

    ``gaussian``: position-only kernel (weight ``pos_w``, std ``pos_xy``).
    ``bilateral``: position+colour kernel (weight ``bi_w``, stds ``bi_xy`` and ``bi_rgb``).
    Both use Potts compatibility, as ``pydensecrf``'s ``addPairwiseGaussian/Bilateral``.
    """

    iterations: int = 10
    pos_w: float = 3.0
    pos_xy: float = 1.0
    bi_w: float = 4.0
    bi_xy: float = 67.0
    bi_rgb: float = 3.0


# ORIGINAL.md §6; the first is the default.
PRESETS: dict[str, CRFParams] = {
    "deeplab-resnet": CRFParams(10, 3.0, 1.0, 4.0, 67.0, 3.0),
    "deeplab-vgg": CRFParams(10, 3.0, 3.0, 4.0, 121.0, 5.0),
    "tf-branch": CRFParams(10, 4.0, 1.0, 5.0, 49.0, 13.0),
}
DEFAULT_PRESET = "deeplab-resnet"
BACKENDS = ("auto", "torch", "pydensecrf")


def dense_crf(
    image: np.ndarray, probs: np.ndarray, params: CRFParams = PRESETS[DEFAULT_PRESET], *, backend: str = "auto"
) -> np.ndarray:
    """Refine ``probs`` (``C x H x W`` float32, summing to 1 over C) for ``image`` (``H x W x 3`` uint8 RGB).

    Returns refined ``C x H x W`` probabilities. Backends are filled in by ``crf/torch_backend.py``
    and ``crf/pydensecrf_backend.py``.
    """
    raise NotImplementedError("dense CRF backends are not available yet")
