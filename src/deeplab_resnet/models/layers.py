"""Building blocks shared by the backbone and the head: batch norm that can be frozen, and the
two padding conventions of the original releases (docs/original.md §1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..conventions import CONVENTIONS, Convention, check_convention

__all__ = ["BN_EPS", "CONVENTIONS", "BatchNorm", "Conv", "Convention", "MaxPool", "check_convention", "same_pads"]

# Caffe's BatchNorm layer uses 1e-5; the TF re-implementation uses slim's default 1e-3.
BN_EPS: dict[str, float] = {"caffe": 1e-5, "tf": 1e-3}


class BatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` that is frozen unless told otherwise.

    Frozen (the original's default): always normalises with the running statistics, even in
    ``model.train()``, and gamma/beta do not require gradients. Unfrozen (the original's
    ``--is-training``): an ordinary batch norm whose statistics update in training mode.

    It has no ``num_batches_tracked`` buffer, so a state dict holds exactly the four tensors
    of the original (gamma, beta, moving mean, moving variance).
    """

    def __init__(self, num_features: int, eps: float, momentum: float = 0.1, frozen: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.register_buffer("num_batches_tracked", None)
        self.frozen = frozen
        self.weight.requires_grad_(not frozen)
        self.bias.requires_grad_(not frozen)

    def set_frozen(self, frozen: bool) -> None:
        self.frozen = frozen
        self.weight.requires_grad_(not frozen)
        self.bias.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch_stats = self.training and not self.frozen
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            use_batch_stats, self.momentum, self.eps,
        )  # fmt: skip

    def reset_running_stats(self) -> None:
        # nn.BatchNorm2d's version also zeroes num_batches_tracked, which this class does not have.
        self.running_mean.zero_()
        self.running_var.fill_(1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Skip _NormBase's hook, which invents a num_batches_tracked entry for old state dicts.
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", frozen={self.frozen}"


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding along one axis: (before, after), the extra pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """A bias-free (unless asked) convolution padded as the chosen convention pads it.

    Caffe pads symmetrically by ``pad``; TF pads ``SAME``. They differ only for strided convs
    on even sizes (conv1): elsewhere the pad is symmetric, so the module pads statically.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, *, stride: int = 1, dilation: int = 1,
        bias: bool = False, convention: Convention = "caffe",
    ):  # fmt: skip
        self.convention = check_convention(convention)
        pad = dilation * (kernel - 1) // 2
        self.dynamic_same = convention == "tf" and stride > 1 and kernel > 1
        super().__init__(
            in_ch, out_ch, kernel, stride=stride, dilation=dilation,
            padding=0 if self.dynamic_same else pad, bias=bias,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
            top, bottom = same_pads(x.shape[-2], k, s, d)
            left, right = same_pads(x.shape[-1], k, s, d)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class MaxPool(nn.Module):
    """pool1: 3x3 stride 2. Caffe: pad 1 with ceil-mode output size; TF: ``SAME``.

    In both, padded cells never win the max.
    """

    def __init__(self, convention: Convention = "caffe"):
        super().__init__()
        self.convention = check_convention(convention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.convention == "caffe":
            return F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)
        top, bottom = same_pads(x.shape[-2], 3, 2)
        left, right = same_pads(x.shape[-1], 3, 2)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, 3, 2)

    def extra_repr(self) -> str:
        return f"convention={self.convention!r}"


def caffe_conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int = 1) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def caffe_pool_out(size: int, kernel: int, stride: int, pad: int) -> int:
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if (out - 1) * stride >= size + pad:  # the last window must start inside the image
        out -= 1
    return out


def logit_size(height: int, width: int, convention: Convention) -> tuple[int, int]:
    """The stride-8 logit grid the original produces for an input of ``height`` x ``width``."""
    if convention == "tf":
        return math.ceil(height / 8), math.ceil(width / 8)

    def axis(n: int) -> int:
        n = caffe_conv_out(n, 7, 2, 3)  # conv1
        n = caffe_pool_out(n, 3, 2, 1)  # pool1
        return caffe_conv_out(n, 1, 2, 0)  # res3a_branch1 / branch2a

    return axis(height), axis(width)
