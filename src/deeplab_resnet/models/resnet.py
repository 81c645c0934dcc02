"""ResNet-101 as DeepLab-v2 uses it: Caffe/MSRA style, dilated res4/res5, output stride 8.

Module names follow the original layer names so that weight conversion is a table:

========================  ====================================
original (Caffe / TF)     here (``model.backbone.<name>``)
========================  ====================================
``conv1``, ``bn_conv1``   ``conv1``, ``bn_conv1``
``res4b22_branch2b``      ``res4b22.branch2b``
``bn4b22_branch2b``       ``res4b22.bn_branch2b``
``res3a_branch1``         ``res3a.branch1`` (projection shortcut)
========================  ====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import BN_EPS, BatchNorm, Conv, Convention, MaxPool, check_convention

# (stage, bottleneck width in ResNet-101, stride, dilation); the block counts are RESNET101_BLOCKS.
STAGES: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 1, 1),
    (3, 128, 2, 1),
    (4, 256, 1, 2),
    (5, 512, 1, 4),
)
RESNET101_BLOCKS: tuple[int, int, int, int] = (3, 4, 23, 3)


def block_names(stage: int, count: int) -> list[str]:
    """Original block names: ``res2a, res2b, res2c`` for res2/res5, ``res4a, res4b1..`` for res3/res4."""
    if stage in (3, 4):
        return [f"res{stage}a"] + [f"res{stage}b{i}" for i in range(1, count)]
    return [f"res{stage}{chr(ord('a') + i)}" for i in range(count)]


class Bottleneck(nn.Module):
    """1x1 (stride here, Caffe style) → 3x3 (dilated) → 1x1, each followed by BN; add; ReLU."""

    def __init__(
        self, in_ch: int, width: int, *, stride: int, dilation: int, projection: bool,
        convention: Convention, frozen_bn: bool, bn_momentum: float,
    ):  # fmt: skip
        super().__init__()
        out_ch = 4 * width

        def bn(ch: int) -> BatchNorm:
            return BatchNorm(ch, eps=BN_EPS[convention], momentum=bn_momentum, frozen=frozen_bn)

        if projection:
            self.branch1 = Conv(in_ch, out_ch, 1, stride=stride, convention=convention)
            self.bn_branch1 = bn(out_ch)
        self.branch2a = Conv(in_ch, width, 1, stride=stride, convention=convention)
        self.bn_branch2a = bn(width)
        self.branch2b = Conv(width, width, 3, dilation=dilation, convention=convention)
        self.bn_branch2b = bn(width)
        self.branch2c = Conv(width, out_ch, 1, convention=convention)
        self.bn_branch2c = bn(out_ch)
        self.projection = projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.bn_branch1(self.branch1(x)) if self.projection else x
        y = F.relu(self.bn_branch2a(self.branch2a(x)))
        y = F.relu(self.bn_branch2b(self.branch2b(y)))
        y = self.bn_branch2c(self.branch2c(y))
        return F.relu(y + shortcut)


class ResNetBackbone(nn.Module):
    """The dilated ResNet trunk up to ``res5c`` (after its ReLU).

    Args:
        blocks: blocks per stage; ``(3, 4, 23, 3)`` is ResNet-101. Fewer blocks give a
            reduced-depth variant of the same code, for tests.
        width: bottleneck width of res2 (64 in ResNet-101); later stages double it.
        convention: ``"caffe"`` or ``"tf"`` padding and BN epsilon (docs/original.md §1).
        frozen_bn: keep BN statistics and affine parameters fixed while training.
        bn_momentum: running-statistics momentum when BN is not frozen.
    """

    def __init__(
        self, *, blocks: Sequence[int] = RESNET101_BLOCKS, width: int = 64,
        convention: Convention = "caffe", frozen_bn: bool = True, bn_momentum: float = 0.1,
    ):  # fmt: skip
        super().__init__()
        check_convention(convention)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive counts, got {tuple(blocks)}")
        self.conv1 = Conv(3, width, 7, stride=2, convention=convention)
        self.bn_conv1 = BatchNorm(width, eps=BN_EPS[convention], momentum=bn_momentum, frozen=frozen_bn)
        self.pool1 = MaxPool(convention)
        self.block_names: list[str] = []
        in_ch = width
        for (stage, base, stride, dilation), count in zip(STAGES, blocks):
            stage_width = base * width // 64
            for i, name in enumerate(block_names(stage, count)):
                block = Bottleneck(
                    in_ch, stage_width, stride=stride if i == 0 else 1, dilation=dilation,
                    projection=i == 0, convention=convention, frozen_bn=frozen_bn,
                    bn_momentum=bn_momentum,
                )  # fmt: skip
                self.add_module(name, block)
                self.block_names.append(name)
                in_ch = 4 * stage_width
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.bn_conv1(self.conv1(x))))
        for name in self.block_names:
            x = getattr(self, name)(x)
        return x
