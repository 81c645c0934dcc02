"""Folding frozen batch norm into the convolution before it, for inference.

At inference batch norm applies fixed statistics, so ``bn(conv(x))`` is itself a convolution with
rescaled weights and a bias: one layer fewer per pair and the same function up to float rounding.
Used by the fast paths (:mod:`deeplab_resnet.inference.optimize`) and by ``deeplab export --fold-bn``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import DeepLabError
from ..models.layers import BatchNorm


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics) into ``conv`` in place; ``bn`` must then be skipped.

    ``bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta`` is the conv with
    ``W' = W * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``.
    Computed in float64 so the only difference from the unfolded model is float32 rounding.
    """
    with torch.no_grad():
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        new_bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype), requires_grad=False)
        else:
            conv.bias.copy_(new_bias.to(conv.bias.dtype))


def _conv_bn_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """(parent module, conv attribute, bn attribute) for every conv followed by its BN."""
    for parent in model.modules():
        names = dict(parent.named_children())
        for name, child in names.items():
            if not isinstance(child, BatchNorm):
                continue
            conv_name = "conv1" if name == "bn_conv1" else name[len("bn_") :] if name.startswith("bn_") else None
            if conv_name is None or not isinstance(names.get(conv_name), nn.Conv2d):
                raise DeepLabError(f"cannot fold batch norm {name!r}: no conv {conv_name!r} beside it")
            yield parent, conv_name, name


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace``) with every BN folded into its conv.

    For inference only: the result has no BN to train. The BN modules become ``nn.Identity``.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for parent, conv_name, bn_name in list(_conv_bn_pairs(model)):
        fold_conv_bn(getattr(parent, conv_name), getattr(parent, bn_name))
        setattr(parent, bn_name, nn.Identity())
    return model.eval()
