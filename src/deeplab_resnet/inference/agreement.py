"""How close a network's logits are to a reference: the accuracy measure of fast paths and exports.

:func:`agreement` compares two logit tensors (relative L2 error, argmax agreement, largest absolute
error), :func:`agreement_over` fast paths against a reference over many images; :func:`meets_target` says whether a fast path is accurate enough to be offered. The
benchmarks, ``deeplab export``'s check and the tests all measure with these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

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


def image_part(logits: torch.Tensor, input_size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
    """The logits of the image itself when it filled the top left ``image_size`` of a padded input
    of ``input_size``: the padding's logits say nothing of how well a path labels the image.

    Logit ``i`` sits on input pixel ``i * stride`` (the corner-aligned grid of the upsampling), so
    the logits that reach the image's pixels are those up to the first one at or past its last pixel."""

    def reaching(pixels: int, size: int, logits_along: int) -> int:
        if logits_along == 1 or pixels >= size:
            return logits_along
        stride = (size - 1) / (logits_along - 1)
        return min(logits_along, math.ceil((pixels - 1) / stride) + 1)

    (height, width), (lh, lw) = input_size, logits.shape[-2:]
    return logits[..., : reaching(image_size[0], height, lh), : reaching(image_size[1], width, lw)]


@torch.inference_mode()
def agreement_over(
    reference: Callable[[torch.Tensor], torch.Tensor], paths: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    inputs: Iterable[torch.Tensor], image_sizes: Sequence[tuple[int, int]] | None = None,
) -> dict[str, dict]:  # fmt: skip
    """Each fast path against ``reference`` over several inputs (images of any sizes).

    Per path: the worst relative L2 error, the argmax agreement pooled over all pixels, each
    input's agreement (``per_image``) and the worst of them. The reference runs once per input.
    With ``image_sizes`` (each input's image within its padding), only the images' pixels count.
    """
    stats = {name: {"rel_l2": 0.0, "per_image": [], "pixels": 0, "agree": 0.0} for name in paths}
    for i, x in enumerate(inputs):
        size = None if image_sizes is None else (tuple(x.shape[-2:]), image_sizes[i])
        ref = _image_part_of(reference(x), size)
        pixels = ref.shape[0] * ref.shape[-2] * ref.shape[-1]
        for name, path in paths.items():
            s = agreement(ref, _image_part_of(path(x), size))
            stats[name]["rel_l2"] = max(stats[name]["rel_l2"], s["rel_l2"])
            stats[name]["per_image"].append(s["argmax_agreement"])
            stats[name]["pixels"] += pixels
            stats[name]["agree"] += s["argmax_agreement"] * pixels
    for s in stats.values():
        s["argmax_agreement"] = s.pop("agree") / max(s.pop("pixels"), 1)
        s["worst_image_agreement"] = min(s["per_image"], default=1.0)
    return stats


def _image_part_of(logits: torch.Tensor, sizes: tuple | None) -> torch.Tensor:
    return logits if sizes is None else image_part(logits, *sizes)
