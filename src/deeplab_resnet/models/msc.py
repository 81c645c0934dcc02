"""Multi-scale inputs (MSC): the network run at several scales, fused by element-wise max."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..resize import resize_bilinear, scaled_size
from .deeplab import DeepLabV2

DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.75, 0.5)


class MSC(nn.Module):
    """Run ``model`` on the input rescaled by each of ``scales``; fuse on the first scale's grid.

    Each scaled input is made with the convention's bilinear (see :func:`scaled_size`); the
    logits of the other scales are resized to the first scale's logit grid and the fused
    output is their element-wise max.

    Returns, in training mode, a list ``[logits at each scale..., fused]`` (the original trains
    on all of them: 4 losses with the default scales); in eval mode only the fused logits.
    """

    def __init__(self, model: DeepLabV2, scales: Sequence[float] = DEFAULT_SCALES):
        super().__init__()
        if not scales:
            raise ValueError("MSC needs at least one scale")
        self.model = model
        self.scales = tuple(float(s) for s in scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        convention = self.model.convention
        outputs = []
        for scale in self.scales:
            xs = x
            if scale != 1.0:
                xs = resize_bilinear(x, scaled_size(x.shape[-2], x.shape[-1], scale, convention), convention)
            outputs.append(self.model(xs))
        grid = outputs[0].shape[-2:]
        fused = torch.stack([resize_bilinear(o, grid, convention) for o in outputs]).amax(dim=0)
        if self.training:
            return outputs + [fused]
        return fused

    # Delegate what callers need from a plain model.
    @property
    def convention(self) -> str:
        return self.model.convention

    @property
    def dataset(self):
        return self.model.dataset

    def upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.model.upsample(logits, size)
