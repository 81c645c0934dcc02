"""How close a network's logits are to a reference: the accuracy measure of fast paths and exports.

:func:`agreement` compares two logit tensors (relative L2 error, argmax agreement, largest absolute
error); :func:`meets_target` says whether a fast path is accurate enough to be offered. The
benchmarks, ``deeplab export``'s check and the tests all measure with these.
"""

from __future__ import annotations

import torch

from ..errors import DeepLabError


def agreement(reference: torch.Tensor, output: torch.Tensor) -> dict[str, float]:
    """How close ``output`` logits are to ``reference``: relative L2 error, argmax agreement, max abs error.

    Args:
        reference: the float32 eager logits, ``N x C x h x w``.
        output: logits from a fast path, same shape.
    """
    if reference.shape != output.shape:
        raise DeepLabError(f"logit shapes differ: reference {tuple(reference.shape)}, path {tuple(output.shape)}")
    ref = reference.detach().double().cpu()
    out = output.detach().double().cpu()
    rel = (out - ref).norm() / ref.norm().clamp_min(1e-30)
    argmax = (out.argmax(1) == ref.argmax(1)).double().mean()
    return {"rel_l2": float(rel), "argmax_agreement": float(argmax), "max_abs": float((out - ref).abs().max())}


def meets_target(stats: dict[str, float], dtype: str) -> bool:
    """Whether a fast path is accurate enough to offer: rel-L2 <= 1e-4 for float32 paths (they differ
    from the reference only by rounding), argmax agreement >= 99.5% for reduced precision."""
    if dtype == "float32":
        return stats["rel_l2"] <= 1e-4
    return stats["argmax_agreement"] >= 0.995
