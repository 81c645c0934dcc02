"""Multi-scale inputs (MSC): the network run at several scales, fused by element-wise max."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..conventions import Convention, check_convention
from ..resize import resize_bilinear, scaled_size
from .deeplab import DeepLabV2

DEFAULT_SCALES: tuple[float, ...] = (1.0, 0.75, 0.5)

# The smallest input side the network accepts, in both conventions: measured, every size from
# 1 up runs (conv1 and pool1 pad, the strided 1x1 convolutions keep at least one pixel, ASPP
# pads by its rate) and gives a logit grid of at least 1x1. A branch below it (possible only in
# the tf convention, where int(h * s) can be 0) is refused, as TF refuses a resize to 0 pixels.
MIN_INPUT_SIZE = 1


def branch_size(height: int, width: int, scale: float, convention: str) -> tuple[int, int]:
    """The input size of the ``scale`` branch for a ``height x width`` input (1 keeps it as is)."""
    if scale == 1.0:
        return height, width
    return scaled_size(height, width, scale, convention)  # type: ignore[arg-type]


def too_small_branch(
    height: int, width: int, scales: Sequence[float], convention: str
) -> tuple[float, tuple[int, int]] | None:
    """The first ``(scale, branch size)`` below :data:`MIN_INPUT_SIZE`, or ``None``."""
    for scale in scales:
        size = branch_size(height, width, scale, convention)
        if min(size) < MIN_INPUT_SIZE:
            return scale, size
    return None


class MSC(nn.Module):
    """Run ``network`` on the input rescaled by each of ``scales``; fuse on the first scale's grid.

    Each branch input is the input resized with the convention's bilinear to
    :func:`~deeplab_resnet.resize.scaled_size` (Interp shrink-then-zoom in the caffe convention,
    ``int(h * s)`` in the tf one); the logits of the other scales are resized to the first
    scale's logit grid and the fused output is their element-wise max. That is the authors'
    graph wherever it runs (there the Interp layers that bring the branch logits back land on
    the 1x grid exactly, e.g. 49 → 65 at 513) and ``evaluate_msc.py``'s.

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
        height, width = x.shape[-2], x.shape[-1]
        small = too_small_branch(height, width, self.scales, convention)
        if small is not None:
            scale, (h, w) = small
            raise ValueError(
                f"scale {scale:g} of a {height}x{width} input gives a {h}x{w} branch; "
                f"the network needs at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"
            )
        outputs = []
        for scale in self.scales:
            size = branch_size(height, width, scale, convention)
            outputs.append(self.model(resize_bilinear(x, size, convention)))
        grid = outputs[0].shape[-2:]
        fused = torch.stack([resize_bilinear(o, grid, convention) for o in outputs]).amax(dim=0)
        if self.training:
            return outputs + [fused]
        return fused
