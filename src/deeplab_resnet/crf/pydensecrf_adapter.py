"""The ``pydensecrf`` CRF backend: the ``pydensecrf2`` package (optional extra ``[crf]``) behind our
CRF interface.

This is the usual ``DenseCRF2D`` recipe, unchanged: unary ``-log(probs)`` as
``pydensecrf.utils.unary_from_softmax`` makes it (probabilities clipped at ``1e-5``), a
Gaussian kernel on position and a bilateral kernel on position and colour, both with Potts
compatibility and pydensecrf's default kernel type and normalisation, then mean-field inference.
:func:`available` is the one test of whether the package is there. Inputs are those
:func:`deeplab_resnet.crf.dense_crf` has checked.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..errors import DeepLabError
from .meanfield_rules import UNARY_CLIP
from .params import CRFParams

INSTALL_HINT = 'the pydensecrf CRF backend needs the pydensecrf2 package: pip install "deeplab_resnet[crf]"'


def _densecrf() -> ModuleType | None:
    """``pydensecrf.densecrf``, or ``None`` when it cannot be imported (imported here only, so that
    the package stays optional)."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        return None
    return dcrf


def available() -> bool:
    """Whether ``pydensecrf`` can be imported."""
    return _densecrf() is not None


def refine(image: np.ndarray, probs: np.ndarray, params: CRFParams) -> np.ndarray:
    """Refine ``probs`` (``C x H x W``) for ``image`` (``H x W x 3`` uint8 RGB) with ``DenseCRF2D``.

    Args:
        image: the RGB image the probabilities belong to (the bilateral kernel's colours).
        probs: class probabilities at the image's size, summing to 1 over the first axis.
        params: iterations, kernel weights and standard deviations.

    Returns:
        Refined probabilities, ``C x H x W`` float32.
    """
    dcrf = _densecrf()
    if dcrf is None:
        raise DeepLabError(INSTALL_HINT)
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
