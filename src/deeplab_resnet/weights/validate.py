"""Checks on what a weight file says, made before anything is built from it.

A weight file's metadata decides how large a network gets built, and its tensors go straight
into the model: a damaged or hostile file must give a one-line error naming the file and the
field, not a traceback, an exhausted memory, or a model that labels every pixel "background".
Metadata is held to the same bounds as dataset descriptions (:func:`check_dataset_values`); the
network's size is computed from the metadata alone (:func:`model_bytes`) and refused above
:data:`MAX_MODEL_BYTES` before a single layer is allocated.
"""

from __future__ import annotations

import numpy as np
import torch

from ..conventions import CONVENTIONS
from ..errors import DeepLabError
from ..models.resnet import STAGES

MAX_BLOCKS_PER_STAGE = 64  # ResNet-152 has 36 blocks in its largest stage
MAX_WIDTH = 512  # res2 bottleneck width; ResNet-101 has 64
MAX_RATES = 8  # ASPP branches; ASPP-L has 4
MAX_RATE = 256  # ASPP dilation; ASPP-L uses 6, 12, 18, 24
# 4 GiB of float32 parameters: 24x DeepLab-v2 ResNet-101 (177 MB), far beyond any variant in use.
MAX_MODEL_BYTES = 4 << 30
ARCHITECTURE_KEYS = ("name", "blocks", "width", "aspp_rates")
ARCHITECTURE_NAMES = ("deeplab_v2_resnet101", "deeplab_v2_resnet_tiny")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_architecture(architecture: object, num_classes: int, where: str) -> dict:
    """``architecture`` as metadata says it, bounded field by field and in total size.

    Returns it with defaults filled in (what :func:`model_from_architecture` would assume).
    """
    if not isinstance(architecture, dict):
        raise DeepLabError(f"{where}: architecture must be a JSON object, got {_short(architecture)}")
    unknown = sorted(set(architecture) - set(ARCHITECTURE_KEYS))
    if unknown:
        raise DeepLabError(f"{where}: architecture has unknown key(s) {', '.join(map(str, unknown))[:80]}")
    arch = {"name": "deeplab_v2_resnet101", "blocks": [3, 4, 23, 3], "width": 64, "aspp_rates": [6, 12, 18, 24]}
    arch.update(architecture)
    if arch["name"] not in ARCHITECTURE_NAMES:
        raise DeepLabError(f"{where}: architecture.name {_short(arch['name'])} is not one of {ARCHITECTURE_NAMES}")
    blocks = arch["blocks"]
    if not isinstance(blocks, list) or len(blocks) != 4 or not all(_int_in(b, 1, MAX_BLOCKS_PER_STAGE) for b in blocks):
        raise DeepLabError(
            f"{where}: architecture.blocks must be 4 integers 1..{MAX_BLOCKS_PER_STAGE}, got {_short(blocks)}"
        )
    if not _int_in(arch["width"], 1, MAX_WIDTH):
        raise DeepLabError(
            f"{where}: architecture.width must be an integer 1..{MAX_WIDTH}, got {_short(arch['width'])}"
        )
    rates = arch["aspp_rates"]
    if (
        not isinstance(rates, list)
        or not 1 <= len(rates) <= MAX_RATES
        or not all(_int_in(r, 1, MAX_RATE) for r in rates)
    ):
        raise DeepLabError(
            f"{where}: architecture.aspp_rates must be 1..{MAX_RATES} integers 1..{MAX_RATE}, got {_short(rates)}"
        )
    size = model_bytes(arch, num_classes)
    if size > MAX_MODEL_BYTES:
        raise DeepLabError(
            f"{where}: architecture {_short({k: arch[k] for k in ('blocks', 'width')})} with {num_classes} classes "
            f"would take {size / 2**30:.1f} GiB (at most {MAX_MODEL_BYTES >> 30} GiB); the metadata is damaged"
        )
    return arch


def model_bytes(architecture: dict, num_classes: int) -> int:
    """float32 bytes of the model's state dict, computed from the architecture alone.

    The layout of docs/original.md §1: a 7x7 stem, bottleneck blocks (1x1, 3x3, 1x1, a
    projection in each stage's first block), every convolution without bias and followed by a
    batch norm (4 values per channel: gamma, beta, mean, variance), then one 3x3 convolution with
    bias per ASPP branch.
    """
    width = architecture["width"]
    values = 3 * width * 49 + 4 * width
    in_ch = width
    for (_, base, _, _), count in zip(STAGES, architecture["blocks"]):
        mid = base * width // 64
        out = 4 * mid
        values += in_ch * out + 4 * out  # the projection shortcut of the stage's first block
        for i in range(count):
            block_in = in_ch if i == 0 else out
            values += block_in * mid + 9 * mid * mid + mid * out + 4 * (mid + mid + out)
        in_ch = out
    values += len(architecture["aspp_rates"]) * (9 * in_ch * num_classes + num_classes)
    return 4 * values


def check_convention(convention: object, where: str) -> str:
    if convention not in CONVENTIONS:
        raise DeepLabError(f"{where}: convention must be one of {', '.join(CONVENTIONS)}, got {_short(convention)}")
    return str(convention)


def check_state(state: dict[str, torch.Tensor], where: str) -> None:
    """Floating-point tensors, finite values, non-negative BN variances; errors name the tensor."""
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            raise DeepLabError(f"{where}: tensor {key} has dtype {tensor.dtype}; weights must be floating point")
        if not _all_finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            raise DeepLabError(f"{where}: tensor {key} has {bad} NaN or infinite value(s); the file is damaged")
        if key.endswith("running_var") and bool((tensor < 0).any()):
            raise DeepLabError(f"{where}: tensor {key} has negative batch-norm variances; the file is damaged")


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite. numpy's check runs in this thread: torch's parallel
    ``isfinite(t).all()``, once per tensor of a model (~500 of them), spent seconds starting and
    syncing its threads on a busy machine, on every weight load."""
    if tensor.device.type == "cpu" and tensor.dtype in (torch.float16, torch.float32, torch.float64):
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor).all())
