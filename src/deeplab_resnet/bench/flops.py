"""Counting FLOPs of DeepLab-v2: 2 x the multiply-accumulates of every convolution.

Element-wise work (BN, ReLU, additions) is left out, the common convention for CNNs,
so FLOP/s computed from these counts compare with published ones.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..resize import scaled_size


def count_flops(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """Forward FLOPs of ``model`` on a ``batch x 3 x height x width`` input: 2 x conv MACs.

    Runs a copy of the model on the ``meta`` device (no memory, no compute), counting
    ``out_elements x in_channels/groups x kH x kW`` per conv. Element-wise ops (BN, ReLU, adds)
    are not counted (the common convention for CNN FLOP counts).
    """
    meta = model if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    meta.eval()
    total = 0

    def hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, 3, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return 2 * total


def training_step_flops(model: nn.Module, crop: int, batch: int, scales: Sequence[float] = (1.0,)) -> int:
    """FLOPs of one training step: 3 x forward (forward, input and weight gradients) per scale."""
    total = 0
    for s in scales:
        h, w = scaled_size(crop, crop, s, getattr(model, "convention", "caffe")) if s != 1.0 else (crop, crop)
        total += count_flops(model, h, w, batch)
    return 3 * total
