"""Multi-scale inputs (MSC): the network run at several scales, fused by element-wise max."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..conventions import Convention, check_convention
from ..resize import resize_bilinear, scaled_size
from .deeplab import DeepLabV2

DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.75, 0.5)


class MSC(nn.Module):
    """Run ``network`` on the input rescaled by each of ``scales``; fuse on the first scale's grid.

    Each scaled input is made with the convention's bilinear (see :func:`scaled_size`); the
    logits of the other scales are resized to the first scale's logit grid and the fused
    output is their element-wise max.

    Args:
        network: a :class:`DeepLabV2` or any callable mapping a preprocessed ``N x 3 x H x W``
            batch to stride-8 logits (an onnxruntime backend, a compiled module).
        scales: the input scales; the first one's logit grid is the output's.
        convention: whose bilinear resizes (docs/original.md §1.1); taken from a
            :class:`DeepLabV2`, required for any other callable.

    Returns, in training mode, a list ``[logits at each scale..., fused]`` (the original trains
    on all of them: 4 losses with the default scales); in eval mode only the fused logits.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        scales: Sequence[float] = DEFAULT_SCALES,
        *,
        convention: Convention | None = None,
    ):
        super().__init__()
        if not scales:
            raise ValueError("MSC needs at least one scale")
        if convention is None:
            if not isinstance(network, DeepLabV2):
                raise ValueError("MSC over a network that is not a DeepLabV2 needs its convention")
            convention = network.convention
        self.model = network  # registered as a submodule when it is one, so training sees its parameters
        self.scales = tuple(float(s) for s in scales)
        self.convention = check_convention(convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        convention = self.convention
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
