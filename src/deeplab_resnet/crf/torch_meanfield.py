"""Our dense CRF as torch ops (CPU and CUDA), batched over same-size images.

The model of :mod:`.meanfield_rules`. The lattices (:mod:`.permutohedral`) are built once per batch
and reused for every iteration and every label (labels are the columns of one ``pixels x labels``
matrix). The Gaussian lattice depends only on the image size: it is cached per size and shared by
all images of a batch (their labels become more columns); the bilateral lattice holds all images of
a batch at once, keyed by image. On a CPU with a C compiler :mod:`.c_meanfield` computes the same
faster; :mod:`.builtin` chooses. Inputs are those :func:`deeplab_resnet.crf.dense_crf` has checked.
"""

from __future__ import annotations

import functools

import torch

from . import permutohedral
from .meanfield_rules import UNARY_CLIP, labels_worth_filtering, may_prune, potts_gain, symmetric_norm
from .params import CRFParams
from .permutohedral import LatticeOperator


def _normalised(lattice: permutohedral.Lattice, weight: float) -> tuple[LatticeOperator, float]:
    """``Q -> weight * n * K(n * Q)`` with densecrf's symmetric normalisation ``n``, and the kernel's
    :func:`.meanfield_rules.potts_gain`."""
    ones = torch.ones(lattice.num_points, 1, device=lattice.device)
    norm = symmetric_norm(lattice.filter(ones).reshape(-1))
    gain = potts_gain(norm, lattice.filter(norm), weight)
    return lattice.operator(pre=norm, post=norm * weight), gain


@functools.lru_cache(maxsize=4)
def _gaussian(height: int, width: int, sxy: float, weight: float, device: str) -> tuple[LatticeOperator, float]:
    """The position kernel depends only on the image size: built once per size and reused (a dataset
    has a handful of sizes; VOC is mostly 500x375 and 375x500)."""
    lattice = permutohedral.build_lattice(permutohedral.image_features(height, width, sxy, device=device))
    return _normalised(lattice, weight)


class MeanField:
    """The two pairwise kernels of a batch of same-size images, ready for mean-field iterations.

    Args:
        images: ``B x H x W x 3`` uint8 RGB tensor (on the device to run on).
        params: weights, standard deviations and iterations.
        prune: skip filtering labels that cannot matter (:meth:`active_labels`); ``False`` filters all.
    """

    def __init__(self, images: torch.Tensor, params: CRFParams, *, prune: bool = True) -> None:
        batch, height, width, _ = images.shape
        self.prune = prune
        dev = images.device
        self.batch, self.pixels = batch, height * width
        self.params = params
        self.gauss, gain_g = _gaussian(height, width, float(params.pos_xy), float(params.pos_w), str(dev))
        features = permutohedral.image_features(height, width, params.bi_xy, images, params.bi_rgb)
        image_index = None
        if batch > 1:
            image_index = torch.arange(batch, device=dev).repeat_interleave(self.pixels)
        bilateral = permutohedral.build_lattice(features, image_index)
        self.bilateral, gain_b = _normalised(bilateral, params.bi_w)
        self.gain = gain_g + gain_b
        self.attractive = may_prune(params)

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k n_k K_k(n_k Q)`` for ``Q`` as ``(B*H*W) x C``."""
        b, n = self.batch, self.pixels
        c = q.shape[1]
        if b == 1:
            gauss = self.gauss(q)
        else:  # one shared lattice: images side by side as columns
            gauss = self.gauss(q.reshape(b, n, c).transpose(0, 1).reshape(n, b * c))
            gauss = gauss.reshape(n, b, c).transpose(0, 1).reshape(b * n, c)
        return gauss.add_(self.bilateral(q))

    def active_labels(self, q0: torch.Tensor) -> torch.Tensor | None:
        """Labels worth filtering (:func:`.meanfield_rules.labels_worth_filtering`), or ``None`` for all."""
        if not (self.prune and self.attractive):
            return None
        active = labels_worth_filtering(q0.amax(dim=0).cpu().numpy(), self.gain)
        return None if active is None else torch.from_numpy(active).to(q0.device)

    def infer(self, unary: torch.Tensor, iterations: int) -> torch.Tensor:
        """Mean-field iterations from ``softmax(-U)``; ``unary`` is ``(B*H*W) x C``. Returns ``Q``."""
        neg_unary = -unary
        q = torch.softmax(neg_unary, dim=1)
        if iterations == 0:
            return q
        # rows of a batch share the labels to filter; the bound is per label over all of them
        active = self.active_labels(q)
        # with -U in [-20, 0] (clipped probabilities give [-11.5, 0]) and messages in [0, 60], exp is safe
        stable = self.gain > 60.0 or not self.attractive or float(unary.abs().max()) > 20.0
        for _ in range(iterations):
            if active is None:
                energy = self.message(q).add_(neg_unary)
            else:
                energy = neg_unary.index_add(1, active, self.message(q[:, active].contiguous()))
            q = _softmax_(energy, stable)
        return q


def _softmax_(x: torch.Tensor, stable: bool) -> torch.Tensor:
    """Row softmax in place; ``stable`` subtracts the row max first.

    Energies are ``-U + message`` with ``-U`` in ``[-11.5, 0]`` for clipped probabilities and the
    message in ``[0, gain]``; within those ranges ``exp`` can neither overflow nor underflow, so the
    row max (over 21 labels it costs as much as the rest) is skipped: the result differs only by
    rounding."""
    if stable:
        x.sub_(x.amax(dim=1, keepdim=True))
    x.exp_()
    return x.div_(x.sum(dim=1, keepdim=True))


def refine_batch(images: torch.Tensor, probs: torch.Tensor, params: CRFParams) -> torch.Tensor:
    """Refine a batch of same-size images' probabilities on their device.

    Args:
        images: ``B x H x W x 3`` uint8 RGB.
        probs: ``B x C x H x W`` class probabilities (summing to 1 over C), same device.
        params: iterations, kernel weights and standard deviations.

    Returns:
        ``B x C x H x W`` float32 refined probabilities.
    """
    batch, classes, height, width = probs.shape
    unary = -torch.log(probs.to(torch.float32).clamp(UNARY_CLIP, 1.0))
    unary = unary.permute(0, 2, 3, 1).reshape(batch * height * width, classes)
    with torch.no_grad():
        q = MeanField(images, params).infer(unary, int(params.iterations))
    return q.reshape(batch, height, width, classes).permute(0, 3, 1, 2).contiguous()
