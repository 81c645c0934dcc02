"""What a dense CRF is asked to compute: its parameters, the published presets, and the one check
of an image, its probabilities and the parameters that every backend relies on.

:func:`check_inputs` runs once, where a CRF call enters the package (:func:`deeplab_resnet.crf.dense_crf`);
the kernels behind it take its word, and only the C kernel's own bounds checks stay (they protect
memory, not users).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DeepLabError


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


# docs/original.md §6; the first is the default.
PRESETS: dict[str, CRFParams] = {
    "deeplab-resnet": CRFParams(10, 3.0, 1.0, 4.0, 67.0, 3.0),
    "deeplab-vgg": CRFParams(10, 3.0, 3.0, 4.0, 121.0, 5.0),
    "tf-branch": CRFParams(10, 4.0, 1.0, 5.0, 49.0, 13.0),
}
DEFAULT_PRESET = "deeplab-resnet"
# Largest lattice coordinate (feature / std) we accept: beyond ~1e6 float32 loses the lattice's
# integer grid (dense_crf.c refuses such points itself; this keeps the user's error readable).
MAX_FEATURE = 65536.0


def _is_uint8_rgb(image: object) -> bool:
    if isinstance(image, np.ndarray):
        uint8 = image.dtype == np.uint8
    elif isinstance(image, torch.Tensor):
        uint8 = image.dtype == torch.uint8
    else:
        return False
    return uint8 and image.ndim == 3 and image.shape[2] == 3


def check_inputs(image: np.ndarray | torch.Tensor, probs: np.ndarray | torch.Tensor, params: CRFParams) -> None:
    """Raise :class:`DeepLabError` unless ``image`` is ``H x W x 3`` uint8, ``probs`` ``C x H x W``
    and ``params`` leave every lattice coordinate finite and below :data:`MAX_FEATURE`."""
    if not _is_uint8_rgb(image):
        got = f"{tuple(image.shape)} {image.dtype}" if hasattr(image, "shape") else type(image).__name__
        raise DeepLabError(f"CRF: expected an H x W x 3 uint8 RGB image, got {got}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DeepLabError(f"CRF: the image is empty ({tuple(image.shape)})")
    if not isinstance(probs, (np.ndarray, torch.Tensor)) or probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        got = tuple(probs.shape) if hasattr(probs, "shape") else type(probs).__name__
        raise DeepLabError(
            f"CRF: probabilities must be C x H x W at the image's size {tuple(image.shape[:2])}, got {got}"
        )
    stds = (params.pos_xy, params.bi_xy, params.bi_rgb)
    if params.iterations < 0 or not all(math.isfinite(v) and v > 0 for v in stds):
        raise DeepLabError(f"CRF: iterations must be >= 0 and standard deviations finite and > 0, got {params}")
    if not all(math.isfinite(v) for v in (params.pos_w, params.bi_w)):
        raise DeepLabError(f"CRF: kernel weights must be finite, got {params}")
    largest = max(image.shape[:2]) / min(params.pos_xy, params.bi_xy)
    if max(largest, 255.0 / params.bi_rgb) > MAX_FEATURE:
        raise DeepLabError(
            f"CRF: standard deviations too small for a {image.shape[1]}x{image.shape[0]} image "
            f"(position / std and 255 / colour std must stay below {MAX_FEATURE:.0f}), got {params}"
        )
