"""Dense CRF mean-field inference in PyTorch (CPU and CUDA), batched over images.

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

The lattices are built once per batch and reused for every iteration and every label (labels are
the columns of one ``pixels x labels`` matrix). The Gaussian lattice depends only on the image size
and is shared by all images of a batch (their labels become more columns); the bilateral lattice
holds all images at once, keyed by image.
"""

from __future__ import annotations

import numpy as np
import torch

from . import permutohedral
from .permutohedral import LatticeOperator

UNARY_CLIP = 1e-5  # as pydensecrf.utils.unary_from_softmax: keeps -log finite where a probability is 0


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _normalised(lattice: permutohedral.Lattice, weight: float) -> LatticeOperator:
    """``Q -> weight * n * K(n * Q)`` with ``n = 1 / sqrt(K 1 + 1e-20)`` (densecrf's NORMALIZE_SYMMETRIC)."""
    ones = torch.ones(lattice.num_points, 1, device=lattice.device)
    k1 = lattice.filter(ones).reshape(-1)
    norm = (1.0 / torch.sqrt(k1.double() + 1e-20)).float()
    return lattice.operator(pre=norm, post=norm * weight)


class MeanField:
    """The two pairwise kernels of a batch of same-size images, ready for mean-field iterations.

    Args:
        images: ``B x H x W x 3`` uint8 RGB tensor (on the device to run on).
        params: a :class:`~deeplab_resnet.crf.CRFParams` (weights, standard deviations, iterations).
    """

    def __init__(self, images: torch.Tensor, params) -> None:
        batch, height, width, _ = images.shape
        dev = images.device
        self.batch, self.pixels = batch, height * width
        self.params = params
        gauss = permutohedral.build_lattice(permutohedral.image_features(height, width, params.pos_xy, device=dev))
        self.gauss = _normalised(gauss, params.pos_w)
        features = permutohedral.image_features(height, width, params.bi_xy, images, params.bi_rgb)
        image_index = None
        if batch > 1:
            image_index = torch.arange(batch, device=dev).repeat_interleave(self.pixels)
        bilateral = permutohedral.build_lattice(features, image_index)
        self.bilateral = _normalised(bilateral, params.bi_w)

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

    def infer(self, unary: torch.Tensor, iterations: int) -> torch.Tensor:
        """Mean-field iterations from ``softmax(-U)``; ``unary`` is ``(B*H*W) x C``. Returns ``Q``."""
        neg_unary = -unary
        q = torch.softmax(neg_unary, dim=1)
        for _ in range(iterations):
            q = torch.softmax(self.message(q).add_(neg_unary), dim=1)
        return q


def run_batch(images: torch.Tensor, probs: torch.Tensor, params) -> torch.Tensor:
    """Refine a batch of same-size images' probabilities on their device.

    Args:
        images: ``B x H x W x 3`` uint8 RGB.
        probs: ``B x C x H x W`` class probabilities (summing to 1 over C), same device.
        params: a :class:`~deeplab_resnet.crf.CRFParams`.

    Returns:
        ``B x C x H x W`` float32 refined probabilities.
    """
    batch, classes, height, width = probs.shape
    if images.shape != (batch, height, width, 3):
        raise ValueError(f"images {tuple(images.shape)} do not match probabilities {tuple(probs.shape)}")
    unary = -torch.log(probs.to(torch.float32).clamp(UNARY_CLIP, 1.0))
    unary = unary.permute(0, 2, 3, 1).reshape(batch * height * width, classes)
    with torch.no_grad():
        q = MeanField(images, params).infer(unary, int(params.iterations))
    return q.reshape(batch, height, width, classes).permute(0, 3, 1, 2).contiguous()


def run(image: np.ndarray, probs: np.ndarray, params, device: torch.device | str | None = None) -> np.ndarray:
    """Refine ``probs`` (``C x H x W``) for ``image`` (``H x W x 3`` uint8 RGB); numpy in, numpy out.

    Args:
        image: the RGB image (the bilateral kernel's colours).
        probs: class probabilities at the image's size.
        params: a :class:`~deeplab_resnet.crf.CRFParams`.
        device: where to run (default: CUDA when available, else CPU).

    Returns:
        ``C x H x W`` float32 refined probabilities.
    """
    dev = torch.device(device) if device is not None else default_device()
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)[None]
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(dev)[None]
    return run_batch(img, p, params)[0].cpu().numpy()
