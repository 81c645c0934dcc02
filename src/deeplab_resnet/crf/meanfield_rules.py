"""The dense CRF model that both of our kernels compute (:mod:`.c_meanfield` and
:mod:`.torch_meanfield`), and the rules they share: each is written here once.

The model is ``pydensecrf``'s ``DenseCRF2D`` recipe exactly:

- unary ``U = -log(clip(probs, 1e-5, 1))`` (``pydensecrf.utils.unary_from_softmax``);
- a Gaussian kernel on ``(x/sxy, y/sxy)`` and a bilateral kernel on
  ``(x/sxy, y/sxy, r/srgb, g/srgb, b/srgb)``, both filtered by the permutohedral lattice
  (:mod:`.permutohedral`) with densecrf's default ``NORMALIZE_SYMMETRIC``: with
  ``n = 1 / sqrt(K 1)``, kernel ``k`` maps ``Q`` to ``n * K(n * Q)`` (``K`` includes the pixel itself;
  densecrf does not subtract it);
- Potts compatibility: ``PottsCompatibility(w)`` turns a filtered ``Q`` into ``-w * K Q`` and
  inference subtracts it, so each iteration is ``Q = softmax(-U + sum_k w_k n_k K_k(n_k Q))``
  starting from ``Q = softmax(-U)``.

Pruning: with non-negative weights every message is ``>= 0``, so a label's probability never
exceeds its initial one ``q0`` times ``exp(its message)``, and its message is at most
``gain * max q`` (:func:`potts_gain`). A label with ``gain * max q0 * exp(PRUNE_ENERGY) <=
PRUNE_ENERGY`` therefore gets a message below ``PRUNE_ENERGY`` (1e-3) in every iteration; leaving
it out changes its energy by less than that, its probability (at most ~1e-4) by less than 0.1% of
itself, and the other labels' by a normalisation of order 1e-6. With a trained network's peaked
output, classes absent from the image can fall below that; with flatter probabilities nothing is
pruned.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .params import CRFParams

UNARY_CLIP = 1e-5  # as pydensecrf.utils.unary_from_softmax: keeps -log finite where a probability is 0
PRUNE_ENERGY = 1e-3  # a message below this in every iteration cannot matter (module docstring)
NORM_EPS = 1e-20  # densecrf's guard in 1 / sqrt(K 1 + eps)


def symmetric_norm(k1: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """densecrf's ``NORMALIZE_SYMMETRIC`` factor ``n = 1 / sqrt(K 1 + 1e-20)`` from ``K 1``, the
    kernel applied to ones; computed in float64, returned as float32 (numpy in, numpy out; torch in,
    torch out on the same device)."""
    if isinstance(k1, torch.Tensor):
        return (1.0 / torch.sqrt(k1.double() + NORM_EPS)).float()
    return (1.0 / np.sqrt(np.asarray(k1, np.float64) + NORM_EPS)).astype(np.float32)


def potts_gain(norm: np.ndarray | torch.Tensor, k_norm: np.ndarray | torch.Tensor, weight: float) -> float:
    """The largest message a label whose probability is at most 1 everywhere can get from one
    kernel: ``|w| max_i n_i (K n)_i`` (the operator has non-negative entries); ``k_norm`` is ``K n``."""
    return float((norm * k_norm).max()) * abs(weight)


def gain_lower_bound(dim: int, k1_min: float, weight: float) -> float:
    """A lower bound on :func:`potts_gain` that needs no second filtering: ``(K n)_i >= K_ii n_i`` and
    ``K_ii >= alpha * sum_r w_ir^2 >= alpha / (d + 1)`` (a point's corner weights sum to 1; every
    blur pass keeps at least a vertex's own value), so ``n_i (K n)_i >= alpha / ((d + 1) K1_i)``."""
    alpha = 1.0 / (1.0 + 2.0**-dim)
    return abs(weight) * alpha / ((dim + 1) * (k1_min + NORM_EPS))


def may_prune(params: CRFParams) -> bool:
    """Whether the pruning bound holds: it needs every message to be ``>= 0``, i.e. both weights ``>= 0``."""
    return params.pos_w >= 0 and params.bi_w >= 0


def labels_worth_filtering(q0_max: np.ndarray, gain: float) -> np.ndarray | None:
    """The labels whose message can exceed ``PRUNE_ENERGY`` (module docstring), from each label's
    largest initial probability (float32) and the kernels' summed gain; ``None`` when that is all
    of them."""
    active = np.flatnonzero(q0_max * gain * math.exp(PRUNE_ENERGY) > PRUNE_ENERGY)
    return None if active.size == q0_max.size else active
