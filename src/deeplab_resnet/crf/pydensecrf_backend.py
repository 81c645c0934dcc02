"""Dense CRF through ``pydensecrf`` (the ``pydensecrf2`` package, optional extra ``[crf]``).

This is the usual ``DenseCRF2D`` recipe, unchanged: unary ``-log(probs)`` as
``pydensecrf.utils.unary_from_softmax`` makes it (probabilities clipped at ``1e-5``), a
Gaussian kernel on position and a bilateral kernel on position and colour, both with Potts
compatibility and pydensecrf's default kernel type and normalisation, then mean-field inference.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeepLabError
from . import CRFParams

INSTALL_HINT = 'the pydensecrf CRF backend needs the pydensecrf2 package: pip install "deeplab_resnet[crf]"'
UNARY_CLIP = 1e-5  # unary_from_softmax's default: keeps -log finite where a probability is 0


def available() -> bool:
    """Whether ``pydensecrf`` can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise DeepLabError(INSTALL_HINT) from exc
    return dcrf


def check_inputs(image: np.ndarray, probs: np.ndarray) -> None:
    """Shapes and dtypes the CRF needs, with a readable error otherwise."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DeepLabError(f"CRF: expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise DeepLabError(f"CRF: probabilities of shape {probs.shape} do not match the image {image.shape[:2]}")


def run(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Refine ``probs`` (``C x H x W``) for ``image`` (``H x W x 3`` uint8 RGB) with ``DenseCRF2D``.

    Args:
        image: the RGB image the probabilities belong to (the bilateral kernel's colours).
        probs: class probabilities at the image's size, summing to 1 over the first axis.
        params: iterations, kernel weights and standard deviations.

    Returns:
        Refined probabilities, ``C x H x W`` float32.
    """
    check_inputs(image, probs)
    dcrf = _densecrf()
    classes, height, width = probs.shape
    unary = -np.log(np.clip(probs, UNARY_CLIP, 1.0)).reshape(classes, -1).astype(np.float32)
    crf = dcrf.DenseCRF2D(width, height, classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=params.pos_xy, compat=params.pos_w)
    crf.addPairwiseBilateral(
        sxy=params.bi_xy, srgb=params.bi_rgb, rgbim=np.ascontiguousarray(image), compat=params.bi_w
    )
    q = crf.inference(int(params.iterations))
    return np.asarray(q, dtype=np.float32).reshape(classes, height, width)
