"""Dense CRF mean-field on the CPU through the C kernel (:mod:`.native`), one image at a time.

The same model and the same operators as :mod:`.torch_backend` (the lattices are identical vertex
for vertex; see ``tests/test_crf_native.py``): unary ``-log(clip(probs, 1e-5, 1))``, both kernels
with densecrf's symmetric normalisation, Potts messages, ``iterations`` mean-field updates, and the
same proven pruning of labels that cannot matter. The position kernel's lattice and normalisation
depend only on the image size and are cached per size.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import native, permutohedral
from .torch_backend import PRUNE_ENERGY, UNARY_CLIP, labels_worth_filtering


def _norm(lattice: native.NativeLattice) -> tuple[np.ndarray, float]:
    """densecrf's NORMALIZE_SYMMETRIC factor ``n = 1 / sqrt(K 1 + 1e-20)``, and ``min K 1``."""
    k1 = lattice.filter(np.ones(lattice.num_points, np.float32)).astype(np.float64)
    return (1.0 / np.sqrt(k1 + 1e-20)).astype(np.float32), float(k1.min())


def _gain(lattice: native.NativeLattice, norm: np.ndarray, weight: float) -> float:
    """The largest message a label with probability <= 1 can get: ``|w| max_i n_i (K n)_i``
    (the operator has non-negative entries)."""
    return float((norm * lattice.filter(norm)).max()) * abs(weight)


def _gain_lower_bound(lattice: native.NativeLattice, k1_min: float, weight: float) -> float:
    """A lower bound on :func:`_gain` that needs no second filtering: ``(K n)_i >= K_ii n_i`` and
    ``K_ii >= alpha * sum_r w_ir^2 >= alpha / (d + 1)`` (a point's corner weights sum to 1; every
    blur pass keeps at least a vertex's own value), so ``n_i (K n)_i >= alpha / ((d + 1) K1_i)``."""
    d = lattice.dim
    alpha = 1.0 / (1.0 + 2.0**-d)
    return abs(weight) * alpha / ((d + 1) * (k1_min + 1e-20))


# A cached position lattice holds ~16 MB for a 500x375 image (the tables a filtering needs are taken
# per call); a dataset has a handful of sizes (VOC: mostly 500x375 and 375x500).
POSITION_CACHE_SIZES = 8


@functools.lru_cache(maxsize=POSITION_CACHE_SIZES)
def _gaussian(height: int, width: int, sxy: float) -> tuple[native.NativeLattice, np.ndarray, float]:
    """The position kernel's lattice, normalisation and ``min K 1``, built once per image size."""
    lattice = native.NativeLattice(permutohedral.image_features(height, width, sxy).numpy())
    return (lattice, *_norm(lattice))


@functools.lru_cache(maxsize=POSITION_CACHE_SIZES)
def _gaussian_gain(height: int, width: int, sxy: float) -> float:
    """:func:`_gain` of the position kernel for weight 1 (a second filtering: only when pruning may apply)."""
    lattice, norm, _ = _gaussian(height, width, sxy)
    return _gain(lattice, norm, 1.0)


def run(image: np.ndarray, probs: np.ndarray, params, *, prune: bool = True) -> np.ndarray:
    """Refine ``probs`` (``C x H x W`` float32) for ``image`` (``H x W x 3`` uint8 RGB).

    Args:
        image: the RGB image (the bilateral kernel's colours).
        probs: class probabilities at the image's size.
        params: a :class:`~deeplab_resnet.crf.CRFParams`.
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
    features = permutohedral.image_features(height, width, params.bi_xy, rgb, params.bi_rgb).numpy()
    bilateral = native.NativeLattice(features)
    norm_b, k1_min_b = _norm(bilateral)
    active = None
    if prune and params.pos_w >= 0 and params.bi_w >= 0:
        # softmax(-U) = clip(p) / sum(clip(p)) <= clip(p), as the clipped sum is >= 1: the bound on
        # each label's largest initial probability needs no normalisation pass
        q0_bound = np.maximum(flat.max(axis=1), UNARY_CLIP)
        # the exact gains cost a second filtering: only when a label might be pruned with them
        lower = _gain_lower_bound(gauss, k1_min_g, float(params.pos_w))
        lower += _gain_lower_bound(bilateral, k1_min_b, float(params.bi_w))
        if (q0_bound * lower * math.exp(PRUNE_ENERGY) <= PRUNE_ENERGY).any():
            gain_g = _gaussian_gain(*size) * abs(float(params.pos_w))
            gain_b = _gain(bilateral, norm_b, float(params.bi_w))
            picked = labels_worth_filtering(torch.from_numpy(q0_bound), gain_g + gain_b)
            active = None if picked is None else picked.numpy()
    q = native.mean_field(
        [gauss, bilateral], [norm_g, norm_b], [float(params.pos_w), float(params.bi_w)], flat, params.iterations, active
    )
    return q.reshape(classes, height, width)
