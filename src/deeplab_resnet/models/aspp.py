"""The DeepLab-v2 "ASPP-L" classifier: four parallel dilated 3x3 convs whose outputs are summed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import Conv, Convention

ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)


class ASPPClassifier(nn.Module):
    """``fc1_voc12``: branches ``fc1_voc12_c0..c3`` (3x3, dilation = padding = rate, with bias).

    No ReLU, BN or image pooling: that is DeepLab-v3. Initialised as the original solver:
    weights N(0, 0.01), biases 0.
    """

    def __init__(
        self, in_ch: int, num_classes: int, *, rates: Sequence[int] = ASPP_RATES,
        convention: Convention = "caffe",
    ):  # fmt: skip
        super().__init__()
        self.branch_names = [f"fc1_voc12_c{i}" for i in range(len(rates))]
        for name, rate in zip(self.branch_names, rates):
            conv = Conv(in_ch, num_classes, 3, dilation=rate, bias=True, convention=convention)
            # A model built on the meta device gets its values from a file (weights/loading.py); drawing
            # normal values there has no effect and imports torch's compiler, which took seconds.
            if not conv.weight.is_meta:
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
            self.add_module(name, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for name in self.branch_names:
            y = getattr(self, name)(x)
            out = y if out is None else out + y
        return out
