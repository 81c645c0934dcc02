"""Checking an exported file against the PyTorch model it came from.

``deeplab export`` runs this after writing a file: the export and the model see the same random
inputs at an even and an odd size (the TF convention's ``SAME`` padding depends on the parity) and
must give the same logits up to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import DeepLabError
from ..models.deeplab import DeepLabV2
from .agreement import agreement
from .export import FORMATS, example_batch
from .runtime import OnnxRuntimeBackend


def load_exported(path: str | Path, fmt: str = "onnx") -> Callable[[torch.Tensor], torch.Tensor]:
    """The network in an exported file as a callable from a preprocessed batch to logits (on the CPU)."""
    if fmt == "onnx":
        return OnnxRuntimeBackend(path)
    if fmt == "torchscript":
        return torch.jit.load(str(path)).eval()
    if fmt == "torch.export":
        return torch.export.load(str(path)).module()
    raise DeepLabError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")


def verify_export(
    model: DeepLabV2, path: str | Path, fmt: str = "onnx", sizes: Sequence[tuple[int, int]] = ((64, 64), (65, 49))
) -> list[dict]:
    """Run the exported file and the PyTorch model on random inputs of each size; their agreement.

    Returns one dict per size: ``size``, ``rel_l2``, ``argmax_agreement``, ``max_abs``.
    """
    run = load_exported(path, fmt)
    model = model.cpu().eval()
    results = []
    for size in sizes:
        x = example_batch(size)
        with torch.no_grad():
            results.append({"size": list(size), **agreement(model(x), run(x))})
    return results
