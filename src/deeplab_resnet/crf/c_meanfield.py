"""Our dense CRF on the C kernel (:mod:`.kernel_c`), one image at a time on the CPU.

The model of :mod:`.meanfield_rules`, the same operators as :mod:`.torch_meanfield` (the lattices are
identical vertex for vertex; see ``tests/test_crf_c_kernel.py``) and the same proven pruning of
labels that cannot matter. The position kernel's lattice and normalisation depend only on the image
size and are cached per size. Inputs are those :func:`deeplab_resnet.crf.dense_crf` has checked.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import kernel_c, permutohedral
from .meanfield_rules import (
    UNARY_CLIP,
    gain_lower_bound,
    labels_worth_filtering,
    may_prune,
    potts_gain,
    symmetric_norm,
)
from .params import CRFParams


def normalisation(lattice: kernel_c.CLattice) -> tuple[np.ndarray, float]:
    """The kernel's symmetric normalisation ``n`` (:func:`.meanfield_rules.symmetric_norm`) and ``min K 1``."""
    k1 = lattice.filter(np.ones(lattice.num_points, np.float32))
    return symmetric_norm(k1), float(k1.min())


def gain(lattice: kernel_c.CLattice, norm: np.ndarray, weight: float) -> float:
    """:func:`.meanfield_rules.potts_gain` of one kernel (a second filtering)."""
    return potts_gain(norm, lattice.filter(norm), weight)


# A cached position lattice holds ~16 MB for a 500x375 image (the tables a filtering needs are taken
# per call); a dataset has a handful of sizes (VOC: mostly 500x375 and 375x500).
POSITION_CACHE_SIZES = 8


@functools.lru_cache(maxsize=POSITION_CACHE_SIZES)
def _gaussian(height: int, width: int, sxy: float) -> tuple[kernel_c.CLattice, np.ndarray, float]:
    """The position kernel's lattice, normalisation and ``min K 1``, built once per image size."""
    lattice = kernel_c.CLattice(permutohedral.image_features(height, width, sxy).numpy())
    return (lattice, *normalisation(lattice))


@functools.lru_cache(maxsize=POSITION_CACHE_SIZES)
def _gaussian_gain(height: int, width: int, sxy: float) -> float:
    """:func:`gain` of the position kernel for weight 1 (a second filtering: only when pruning may apply)."""
    lattice, norm, _ = _gaussian(height, width, sxy)
    return gain(lattice, norm, 1.0)


def refine(image: np.ndarray, probs: np.ndarray, params: CRFParams, *, prune: bool = True) -> np.ndarray:
    """Refine ``probs`` (``C x H x W`` float32) for ``image`` (``H x W x 3`` uint8 RGB).

    Args:
        image: the RGB image (the bilateral kernel's colours).
        probs: class probabilities at the image's size.
        params: iterations, kernel weights and standard deviations.
        prune: skip filtering labels that cannot matter (``False`` filters all).

    Returns:
        ``C x H x W`` float32 refined probabilities.
    """
    classes, height, width = probs.shape
    flat = np.ascontiguousarray(probs, dtype=np.float32).reshape(classes, -1)
    if params.iterations == 0:  # softmax(-U) is the clipped input renormalised
        clipped = np.clip(flat, UNARY_CLIP, 1.0)
        return (clipped / clipped.sum(axis=0)).reshape(classes, height, width)
    size = (height, width, float(params.pos_xy))
    gauss, norm_g, k1_min_g = _gaussian(*size)
    rgb = torch.from_numpy(np.ascontiguousarray(image))[None]
    bilateral = kernel_c.CLattice(permutohedral.image_features(height, width, params.bi_xy, rgb, params.bi_rgb).numpy())
    norm_b, k1_min_b = normalisation(bilateral)
    active = None
    if prune and may_prune(params):
        # softmax(-U) = clip(p) / sum(clip(p)) <= clip(p), as the clipped sum is >= 1: the bound on
        # each label's largest initial probability needs no normalisation pass
        q0_bound = np.maximum(flat.max(axis=1), UNARY_CLIP)
        # the exact gains cost a second filtering: only when the lower bound already prunes a label
        lower = gain_lower_bound(gauss.dim, k1_min_g, float(params.pos_w))
        lower += gain_lower_bound(bilateral.dim, k1_min_b, float(params.bi_w))
        if labels_worth_filtering(q0_bound, lower) is not None:
            exact = _gaussian_gain(*size) * abs(float(params.pos_w)) + gain(bilateral, norm_b, float(params.bi_w))
            active = labels_worth_filtering(q0_bound, exact)
    q = kernel_c.mean_field(
        [gauss, bilateral], [norm_g, norm_b], [float(params.pos_w), float(params.bi_w)], flat, params.iterations, active
    )
    return q.reshape(classes, height, width)
