"""Segmenting images with a model: the Python API behind ``deeplab segment``.

>>> from deeplab_resnet import Segmenter
>>> seg = Segmenter.from_weights("deeplab_voc12.safetensors")
>>> result = seg("photo.jpg")            # a path, a PIL image or an H x W x 3 RGB array
>>> result.labels                        # H x W class indices (uint8)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset_info import DatasetInfo
from .errors import DeepLabError
from .images import read_image, to_rgb_array
from .models.deeplab import DeepLabV2
from .models.msc import MSC
from .preprocess import to_input
from .resize import interp_matrix

ImageLike = "str | Path | Image.Image | np.ndarray"


@dataclass
class Segmentation:
    """The result for one image: ``labels`` (H x W) and, if asked, ``probs`` (H x W x C)."""

    labels: np.ndarray
    dataset: DatasetInfo
    probs: np.ndarray | None = None

    def class_pixels(self) -> dict[str, int]:
        """Pixels per class present in the label map, by class name."""
        values, counts = np.unique(self.labels, return_counts=True)
        names = self.dataset.class_names
        return {names[v] if v < len(names) else str(v): int(c) for v, c in zip(values, counts)}


def as_rgb(image) -> np.ndarray:
    """A path, PIL image or array → ``H x W x 3`` uint8 RGB."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DeepLabError(f"expected an H x W x 3 RGB array, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise DeepLabError(f"expected a uint8 RGB array (0..255), got {arr.dtype}")
    return np.ascontiguousarray(arr[:, :, :3])


def upsample_argmax(
    logits: torch.Tensor, size: tuple[int, int], convention: str, *, rows_per_chunk: int = 256
) -> torch.Tensor:
    """``argmax`` of the logits (``C x h x w``) upsampled to ``size``, in row chunks.

    Equal to ``resize_bilinear(logits, size).argmax(0)`` but never holds the full
    ``C x H x W`` upsampled tensor, so 4000 x 3000 outputs stay small in memory.
    """
    height, width = size
    wy = interp_matrix(logits.shape[-2], height, convention, device=logits.device)  # type: ignore[arg-type]
    wx = interp_matrix(logits.shape[-1], width, convention, device=logits.device)  # type: ignore[arg-type]
    cols = logits.float() @ wx.T  # C x h x W
    out = torch.empty(height, width, dtype=torch.long, device=logits.device)
    for start in range(0, height, rows_per_chunk):
        stop = min(start + rows_per_chunk, height)
        out[start:stop] = torch.einsum("yh,chw->cyw", wy[start:stop], cols).argmax(0)
    return out


class Segmenter:
    """Runs a model on images of any size and returns label maps at the image's size.

    Args:
        model: a :class:`DeepLabV2` (eval mode is set here).
        device: where to run it.
        scales: input scales; more than one gives the original's multi-scale (max) fusion.
        max_size: if the longer image side exceeds it, the network sees the image shrunk to
            this size (outputs are still at full size). ``None`` always uses full resolution.
    """

    def __init__(
        self, model: DeepLabV2, *, device: str | torch.device = "cpu",
        scales: Sequence[float] = (1.0,), max_size: int | None = None,
    ):  # fmt: skip
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.net = MSC(self.model, scales) if tuple(scales) != (1.0,) else self.model
        self.max_size = max_size

    @classmethod
    def from_weights(cls, weights: str | Path, *, num_classes: int | None = None, **kwargs) -> Segmenter:
        from .weights import load_model

        return cls(load_model(weights, num_classes=num_classes), **kwargs)

    @property
    def dataset(self) -> DatasetInfo:
        return self.model.dataset

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """The image as the network sees it: shrunk to ``max_size`` if larger."""
        h, w = rgb.shape[:2]
        if self.max_size and max(h, w) > self.max_size:
            scale = self.max_size / max(h, w)
            size = (max(round(w * scale), 1), max(round(h * scale), 1))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        return rgb

    @torch.inference_mode()
    def logits(self, image) -> torch.Tensor:
        """Stride-8 logits (``C x h x w``) of one image (after multi-scale fusion, if any)."""
        rgb = self.network_input(as_rgb(image))
        x = to_input(rgb, self.model.mean_bgr).unsqueeze(0).to(self.device)
        return self.net(x)[0]

    @torch.inference_mode()
    def __call__(self, image, *, return_probs: bool = False) -> Segmentation:
        rgb = as_rgb(image)
        size = rgb.shape[:2]
        logits = self.logits(rgb)
        labels = upsample_argmax(logits, size, self.model.convention)
        probs = None
        if return_probs:
            probs = torch.softmax(self.model.upsample(logits.float(), size), dim=0)
            probs = probs.permute(1, 2, 0).cpu().numpy()
        dtype = np.uint8 if self.model.num_classes <= 256 else np.int32
        return Segmentation(labels.cpu().numpy().astype(dtype), self.dataset, probs)


def segment_image(image, weights: str | Path, **kwargs) -> Segmentation:
    """One-shot convenience: load ``weights`` and segment ``image``."""
    return Segmenter.from_weights(weights, **kwargs)(image)
