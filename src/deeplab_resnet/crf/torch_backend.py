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
the columns of one ``pixels x labels`` matrix). The Gaussian lattice depends only on the image size:
it is cached per size and shared by all images of a batch (their labels become more columns); the
bilateral lattice holds all images of a batch at once, keyed by image.

Two implementations of the same computation (``kernel=``): ``"torch"``, torch ops on any device
(:class:`MeanField`), and ``"native"``, the C kernel of :mod:`.native` (CPU only: the lattice, all
iterations, slice, messages and softmax fused, OpenMP threads). ``"auto"`` takes the native one on
CPU when it could be compiled, else torch.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import permutohedral
from .permutohedral import LatticeOperator

PRUNE_ENERGY = 1e-3  # see MeanField.active_labels
UNARY_CLIP = 1e-5  # as pydensecrf.utils.unary_from_softmax: keeps -log finite where a probability is 0


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _normalised(lattice: permutohedral.Lattice, weight: float) -> tuple[LatticeOperator, float]:
    """``Q -> weight * n * K(n * Q)`` with ``n = 1 / sqrt(K 1 + 1e-20)`` (densecrf's NORMALIZE_SYMMETRIC),
    and the largest value that map can give a label whose probability is at most 1 everywhere
    (``weight * max_i n_i (K n)_i``: the operator has non-negative entries)."""
    ones = torch.ones(lattice.num_points, 1, device=lattice.device)
    k1 = lattice.filter(ones).reshape(-1)
    norm = (1.0 / torch.sqrt(k1.double() + 1e-20)).float()
    gain = float((norm * lattice.filter(norm)).max()) * abs(weight)
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
        params: a :class:`~deeplab_resnet.crf.CRFParams` (weights, standard deviations, iterations).
        prune: skip filtering labels that cannot matter (:meth:`active_labels`); ``False`` filters all.
    """

    def __init__(self, images: torch.Tensor, params, *, prune: bool = True) -> None:
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
        self.attractive = params.pos_w >= 0 and params.bi_w >= 0

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
        """Labels worth filtering, or ``None`` for all of them.

        With non-negative weights every message is ``>= 0``, so a label's probability never exceeds
        its initial one ``q0`` times ``exp(its message)``, and its message is at most
        ``gain * max q``. A label with ``gain * max q0 <= PRUNE_ENERGY`` therefore gets a message
        below ``PRUNE_ENERGY`` (1e-3) in every iteration; leaving it out changes its energy by less
        than that, its probability (at most ~1e-4) by less than 0.1% of itself, and the other labels'
        by a normalisation of order 1e-6. With a trained network's peaked output, classes absent from
        the image can fall below that; with flatter probabilities nothing is pruned.
        """
        if not (self.prune and self.attractive):
            return None
        return labels_worth_filtering(q0.amax(dim=0), self.gain)

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


def labels_worth_filtering(q0_max: torch.Tensor, gain: float) -> torch.Tensor | None:
    """The labels whose message can exceed ``PRUNE_ENERGY`` (see :meth:`MeanField.active_labels`),
    from each label's largest initial probability; ``None`` when that is all of them."""
    active = (q0_max * gain * math.exp(PRUNE_ENERGY) > PRUNE_ENERGY).nonzero().reshape(-1)
    return None if active.numel() == q0_max.numel() else active


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


KERNELS = ("auto", "native", "torch")


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``"native"`` or ``"torch"``: what ``kernel`` means on ``device`` (see the module docstring)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    from . import native

    if kernel == "native" and device.type != "cpu":
        raise ValueError("the native CRF kernel runs on the CPU only")
    if kernel == "native" and not native.available():
        raise ValueError("the native CRF kernel could not be compiled (no working C compiler; set CC)")
    if kernel == "auto":
        return "native" if device.type == "cpu" and native.available() else "torch"
    return kernel


def run_batch(images: torch.Tensor, probs: torch.Tensor, params, *, kernel: str = "auto") -> torch.Tensor:
    """Refine a batch of same-size images' probabilities on their device.

    Args:
        images: ``B x H x W x 3`` uint8 RGB.
        probs: ``B x C x H x W`` class probabilities (summing to 1 over C), same device.
        params: a :class:`~deeplab_resnet.crf.CRFParams`.
        kernel: ``"auto"``, ``"native"`` (the C kernel, CPU) or ``"torch"`` (see the module docstring).

    Returns:
        ``B x C x H x W`` float32 refined probabilities.
    """
    batch, classes, height, width = probs.shape
    if images.shape != (batch, height, width, 3):
        raise ValueError(f"images {tuple(images.shape)} do not match probabilities {tuple(probs.shape)}")
    if resolve_kernel(kernel, probs.device) == "native":
        from . import native_backend

        out = [native_backend.run(images[i].numpy(), probs[i].numpy(), params) for i in range(batch)]
        return torch.from_numpy(np.stack(out))
    unary = -torch.log(probs.to(torch.float32).clamp(UNARY_CLIP, 1.0))
    unary = unary.permute(0, 2, 3, 1).reshape(batch * height * width, classes)
    with torch.no_grad():
        q = MeanField(images, params).infer(unary, int(params.iterations))
    return q.reshape(batch, height, width, classes).permute(0, 3, 1, 2).contiguous()


def run(
    image: np.ndarray, probs: np.ndarray, params, device: torch.device | str | None = None, *, kernel: str = "auto"
) -> np.ndarray:
    """Refine ``probs`` (``C x H x W``) for ``image`` (``H x W x 3`` uint8 RGB); numpy in, numpy out.

    Args:
        image: the RGB image (the bilateral kernel's colours).
        probs: class probabilities at the image's size.
        params: a :class:`~deeplab_resnet.crf.CRFParams`.
        device: where to run (default: CUDA when available, else CPU).
        kernel: ``"auto"``, ``"native"`` or ``"torch"`` (see :func:`run_batch`).

    Returns:
        ``C x H x W`` float32 refined probabilities.
    """
    dev = torch.device(device) if device is not None else default_device()
    if resolve_kernel(kernel, dev) == "native":
        from . import native_backend

        return native_backend.run(image, probs, params)
    img = torch.from_numpy(np.ascontiguousarray(image)).to(dev)[None]
    p = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32)).to(dev)[None]
    return run_batch(img, p, params, kernel="torch")[0].cpu().numpy()
