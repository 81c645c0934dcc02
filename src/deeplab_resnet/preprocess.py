"""Turning images into network input the way the original did: RGB uint8 → BGR float32 − mean."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def to_input(image: np.ndarray, mean_bgr: Sequence[float]) -> torch.Tensor:
    """An ``H x W x 3`` RGB uint8 array → a ``3 x H x W`` float32 BGR tensor minus ``mean_bgr``.

    No scaling to [0, 1]: the original feeds raw 0..255 values minus the mean.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    bgr = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).to(torch.float32)
    bgr -= torch.tensor(mean_bgr, dtype=torch.float32)
    return bgr.permute(2, 0, 1).contiguous()


def to_batch(images: Sequence[np.ndarray], mean_bgr: Sequence[float]) -> torch.Tensor:
    """Several same-sized RGB images → one ``N x 3 x H x W`` input batch."""
    return torch.stack([to_input(im, mean_bgr) for im in images])


def from_input(x: torch.Tensor, mean_bgr: Sequence[float]) -> np.ndarray:
    """Inverse of :func:`to_input` (for image summaries): ``3 x H x W`` → RGB uint8."""
    bgr = x.detach().float().cpu() + torch.tensor(mean_bgr, dtype=torch.float32).view(3, 1, 1)
    rgb = bgr.flip(0).permute(1, 2, 0).round().clamp(0, 255)
    return rgb.to(torch.uint8).numpy()
