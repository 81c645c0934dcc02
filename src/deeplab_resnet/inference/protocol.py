"""The test protocols: what input the network sees for an image, and how its logits become the
image's (docs/original.md §5).

* **native** (the TF code's ``evaluate.py``/``evaluate_msc.py``, the default for tf-convention
  weights): the network runs on the image at its own size; the logits are resized straight to
  the image with the convention's bilinear.
* **padded** (the authors' Caffe test, the default for caffe-convention weights): the image is
  padded bottom/right with the mean colour (0 after mean subtraction) to ``pad_size`` x
  ``pad_size`` (513, the data layer's ``crop_size``; a side longer than that to the next size
  of the form 8k+1), the network (single- or multi-scale) runs on that, its logit grid is
  upsampled by Interp ``zoom_factor: 8`` (corner-aligned, 65 → 513: exactly 1/8 per pixel) and
  the top-left image-sized part is kept.

Small functions, each holding one rule; :class:`~deeplab_resnet.inference.segmenter.Segmenter`
calls them. With ``--max-size`` the image is shrunk first, then padded, and the cropped result
is resized to the full image like any ``--max-size`` output. ``--flip`` mirrors the unpadded
image and pads the mirror the same way (bottom/right), so both runs are the authors'
computation on an image, and the mirrored result lines up with the image after the crop;
mirroring the padded input instead would put the padding on the left, which no original did.
Tiles (``--tile``) always run at their own size: the protocol is about whole images.

* **resized input** (``--input-size W,H``, the domain-adaptation papers' Cityscapes test:
  AdaptSegNet, ADVENT): every image is resized to ``W x H`` for the network and the logits are
  upsampled to the label's size. It takes the place of ``--max-size``, and combines with the
  padding above like a ``--max-size`` shrink does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DeepLabError
from ..models.msc import MIN_INPUT_SIZE, too_small_branch
from ..resize import interp_matrix

AUTHORS_PAD_SIZE = 513  # the authors' test data layer: crop_size 513
LOGIT_ZOOM = 8  # fc1_interp: Interp zoom_factor 8
AUTO = "auto"


def default_pad_size(convention: str) -> int | None:
    """What each original did: the caffe convention pads to 513, the tf one runs at the native size."""
    return AUTHORS_PAD_SIZE if convention == "caffe" else None


def check_pad_size(pad_size: int) -> int:
    """A valid pad size: positive and of the form 8k+1 (so that zoom 8 of its logits is that size)."""
    if isinstance(pad_size, bool) or not isinstance(pad_size, int) or pad_size < 1:
        raise DeepLabError(f"--pad-size must be a positive number of pixels (513 in the authors' test), got {pad_size}")
    if (pad_size - 1) % LOGIT_ZOOM:
        below = pad_size - (pad_size - 1) % LOGIT_ZOOM
        raise DeepLabError(
            f"--pad-size {pad_size}: must be of the form 8k+1 (e.g. {max(below, 1)} or {below + LOGIT_ZOOM}), "
            "so that the zoom-8 upsampling of its logits has exactly that size"
        )
    return pad_size


def resolve_pad_size(pad_size: int | str | None, convention: str) -> int | None:
    """``"auto"`` → :func:`default_pad_size`; ``None`` → native size; a number → checked."""
    if pad_size == AUTO:
        return default_pad_size(convention)
    if pad_size is None:
        return None
    return check_pad_size(pad_size)  # type: ignore[arg-type]


def padded_length(n: int, pad_size: int | None) -> int:
    """A side after padding: ``pad_size``, or the next 8k+1 if the side is longer (``n`` when native)."""
    if pad_size is None:
        return n
    if n <= pad_size:
        return pad_size
    return LOGIT_ZOOM * math.ceil((n - 1) / LOGIT_ZOOM) + 1


def pad_input(x: torch.Tensor, pad_size: int | None) -> torch.Tensor:
    """Network input ``... x 3 x H x W`` (BGR − mean) padded bottom/right with 0, the mean colour."""
    height, width = x.shape[-2], x.shape[-1]
    ph, pw = padded_length(height, pad_size), padded_length(width, pad_size)
    if (ph, pw) == (height, width):
        return x
    return F.pad(x, (0, pw - width, 0, ph - height))


def zoom_length(logit_n: int) -> int:
    """Output side of Interp ``zoom_factor: 8`` on ``logit_n`` logits: ``8 * (n - 1) + 1``."""
    return LOGIT_ZOOM * (logit_n - 1) + 1


def upsample_matrix(
    logit_n: int, out_n: int, net_n: int, pad_size: int | None, convention: str, *, device=None
) -> torch.Tensor:
    """The ``out_n x logit_n`` matrix taking one axis of the logits to the image.

    ``net_n`` is the side of the (unpadded) network input, ``out_n`` the image's. Native: the
    convention's resize straight to ``out_n``. Padded: Caffe's Interp zoom 8 of the whole padded
    grid (corner-aligned whatever the weights' convention: logit ``i`` sits on input pixel ``8i``
    in both), its first ``net_n`` rows (the crop), then, only if ``--max-size`` shrank the image,
    the convention's resize from ``net_n`` to ``out_n`` (as a native ``--max-size`` result is
    resized); composed into one matrix.
    """
    if pad_size is None:
        return interp_matrix(logit_n, out_n, convention, device=device)  # type: ignore[arg-type]
    zoom = interp_matrix(logit_n, zoom_length(logit_n), "caffe", dtype=torch.float64)
    if zoom.shape[0] < net_n:
        raise DeepLabError(f"the padded logits zoom to {zoom.shape[0]} pixels, fewer than the input's {net_n}")
    crop = zoom[:net_n]
    if out_n != net_n:
        crop = interp_matrix(net_n, out_n, convention, dtype=torch.float64) @ crop  # type: ignore[arg-type]
    return crop.to(dtype=torch.float32, device=device)


def shrunk_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """``--max-size``: the image's size for the network, the longer side shrunk to ``max_size``."""
    if max_size and max(height, width) > max_size:
        scale = max_size / max(height, width)
        return max(round(height * scale), 1), max(round(width * scale), 1)
    return height, width


def check_input_size(
    input_size: tuple[int, int] | None, *, max_size: int | None = None, tile: int | None = None
) -> tuple[int, int] | None:
    """A valid ``--input-size`` ``(width, height)``: positive, and not together with ``--max-size`` or ``--tile``."""
    if input_size is None:
        return None
    if len(input_size) != 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in input_size):
        raise DeepLabError(f"--input-size must be two positive sizes W,H (e.g. 1024,512), got {input_size}")
    if max_size:
        raise DeepLabError("--input-size fixes the network's input size; leave out --max-size")
    if tile is not None:
        raise DeepLabError("--input-size resizes whole images; it does not combine with --tile")
    return int(input_size[0]), int(input_size[1])


def network_image_size(
    height: int, width: int, max_size: int | None = None, input_size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """``(height, width)`` of the image given to the network: ``input_size`` (W,H) if set, else :func:`shrunk_size`."""
    if input_size is not None:
        return input_size[1], input_size[0]
    return shrunk_size(height, width, max_size)


def network_size(
    height: int, width: int, *, max_size: int | None = None, pad_size: int | None = None, tile: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> tuple[int, int]:  # fmt: skip
    """The (largest) input the network sees for a ``height x width`` image."""
    if tile is not None:
        return min(tile, height), min(tile, width)
    h, w = network_image_size(height, width, max_size, input_size)
    return padded_length(h, pad_size), padded_length(w, pad_size)


def check_scales(height: int, width: int, scales: Sequence[float], convention: str, *, what: str = "an input") -> None:
    """One line naming ``--scales`` if a branch of a ``height x width`` network input is too small."""
    small = too_small_branch(height, width, scales, convention)
    if small is not None:
        scale, (h, w) = small
        raise DeepLabError(
            f"--scales: scale {scale:g} makes a {h}x{w} branch of {what} of {height}x{width}; "
            f"the network needs at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}"
        )


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header, without decoding; ``None`` if it does not open."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:  # not an image: reported when it is read
        return None
    return height, width


def check_scales_for_images(
    paths: Iterable[str | Path], scales: Sequence[float], convention: str, *,
    max_size: int | None = None, pad_size: int | None = None, tile: int | None = None,
    input_size: tuple[int, int] | None = None,
) -> None:  # fmt: skip
    """:func:`check_scales` for every image before anything runs (or is written).

    Sizes come from the file headers; EXIF orientation may swap the sides, which the check
    does not depend on (every rule here treats both sides alike).
    """
    if tuple(scales) == (1.0,):
        return
    seen: set[tuple[int, int]] = set()
    for path in paths:
        size = image_size(path)
        if size is None:
            continue
        net = network_size(*size, max_size=max_size, pad_size=pad_size, tile=tile, input_size=input_size)
        if net not in seen:
            seen.add(net)
            check_scales(*net, scales, convention, what=f"the network input for {Path(path).name}")
