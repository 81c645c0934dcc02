"""Segmenting images with a model: the Python API behind ``deeplab segment``.

>>> from deeplab_resnet import Segmenter
>>> seg = Segmenter.from_weights("deeplab_voc12.safetensors")
>>> result = seg("photo.jpg")            # a path, a PIL image or an H x W x 3 RGB array
>>> result.labels                        # H x W class indices (uint8)

The network is any callable from a preprocessed batch to stride-8 logits, described by a
:class:`~deeplab_resnet.models.spec.ModelSpec`: a :class:`DeepLabV2` (which carries its spec), or
e.g. an onnxruntime backend, ``Segmenter(make_backend("onnxruntime", model), model.spec)``.

Options: multi-scale inputs, flip, dense-CRF refinement, tiling for very large images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..crf import CRFParams, dense_crf
from ..dataset_info import DatasetInfo
from ..errors import DeepLabError
from ..images import read_image, to_rgb_array
from ..models.deeplab import DeepLabV2
from ..models.msc import MSC
from ..models.spec import ModelSpec
from ..preprocess import to_input
from ..resize import interp_matrix
from ..weights import load_model
from . import protocol
from .memory import check_fits

# Anything mapping a preprocessed N x 3 x H x W batch to stride-8 logits N x C x h x w.
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Segmentation:
    """The result for one image: ``labels`` (H x W) and, if asked, ``probs`` and ``logits`` (H x W x C)."""

    labels: np.ndarray
    dataset: DatasetInfo
    probs: np.ndarray | None = None
    logits: np.ndarray | None = None

    def class_pixels(self) -> dict[str, int]:
        """Pixels per class present in the label map, by class name."""
        # bincount: a count per value in one pass (np.unique sorted all the pixels first, 40x slower)
        counts = np.bincount(self.labels.ravel())
        names = self.dataset.class_names
        return {names[v] if v < len(names) else str(v): int(c) for v, c in enumerate(counts) if c}


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


def _upsample_rows(cols: torch.Tensor, wy: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of the upsampled logits, from width-upsampled ``cols`` (``C x h x W``).

    A batched matmul gives the same bits as the ``einsum("yh,chw->cyw")`` it replaces (the same
    products, summed in the same order) in under half the time on CPU."""
    return torch.matmul(wy[start:stop], cols)


def labels_of(logits: torch.Tensor) -> torch.Tensor:
    """The class index of the largest value along dim 0, the first one on ties: ``argmax(0)``.
    ``max(0).indices`` follows the same documented rule and took a third of ``argmax(0)``'s time
    on CPU for this reduction over the outer dimension."""
    return logits.max(0).indices


def _rows_argmax(cols: torch.Tensor, wy: torch.Tensor, rows_per_chunk: int) -> torch.Tensor:
    height = wy.shape[0]
    out = torch.empty(height, cols.shape[-1], dtype=torch.long, device=cols.device)
    for start in range(0, height, rows_per_chunk):
        stop = min(start + rows_per_chunk, height)
        out[start:stop] = labels_of(_upsample_rows(cols, wy, start, stop))
    return out


def _rows_full(cols: torch.Tensor, wy: torch.Tensor, rows_per_chunk: int) -> torch.Tensor:
    # The same chunked products as _rows_argmax, so argmax of this equals its labels exactly.
    chunks = [
        _upsample_rows(cols, wy, start, min(start + rows_per_chunk, wy.shape[0]))
        for start in range(0, wy.shape[0], rows_per_chunk)
    ]
    return torch.cat(chunks, dim=1)


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows along one axis: ``(start, stop, own_start, own_stop)`` for each.

    Windows are ``tile`` long (or the whole axis if shorter), start on multiples of 8 (the
    network's stride, so their logit grids line up) except possibly the last, which ends at the
    axis's end. Neighbours overlap by at least ``2 * overlap``; each window owns the pixels up to
    the middle of its overlaps, so owned ranges tile the axis exactly.
    """
    if length <= tile:
        return [(0, length, 0, length)]
    step = max((tile - 2 * overlap) // 8 * 8, 8)
    starts = list(range(0, length - tile, step)) + [length - tile]
    spans = []
    for i, start in enumerate(starts):
        own_start = 0 if i == 0 else spans[-1][3]
        own_stop = length if i == len(starts) - 1 else (starts[i + 1] + start + tile) // 2
        spans.append((start, start + tile, own_start, own_stop))
    return spans


class Segmenter:
    """Runs a network on images of any size and returns label maps at the image's size.

    Args:
        network: a :class:`DeepLabV2` (eval mode is set here), or any callable mapping a
            preprocessed ``N x 3 x H x W`` batch to stride-8 logits (an onnxruntime backend, a
            compiled module, :class:`~deeplab_resnet.inference.optimize.FastInference`).
        spec: what the network's inputs and outputs mean (convention, classes, mean); taken from a
            :class:`DeepLabV2` when omitted, required for any other network.
        device: where inputs go (a module network is moved there; other callables place
            their work themselves).
        scales: input scales; more than one gives the original's multi-scale (max) fusion.
        max_size: if the longer image side exceeds it, the network sees the image shrunk to
            this size (outputs are still at full size). ``None`` always uses full resolution.
        flip: also run the mirrored image and average the two upsampled logits (not in the
            original; a common test-time augmentation).
        crf: dense-CRF parameters to refine every result with (``None``: no CRF).
        crf_backend: ``auto``, ``builtin`` (ours) or ``pydensecrf``; see :func:`deeplab_resnet.crf.resolve_backend`.
        tile: run the network on overlapping ``tile x tile`` windows of the (possibly
            ``max_size``-shrunk) image instead of the whole image at once, bounding memory for
            very large images; ``None`` runs whole images.
        tile_overlap: margin in pixels; neighbouring windows overlap by twice this and each
            contributes only its centre, away from its zero-padded borders. The full model's
            context is ~200 px, so margins below that change some labels near window seams.
        rows_per_chunk: output rows upsampled at once; bounds the memory of the ``C x H x W``
            upsampling for very large images without changing the result.
        pad_size: the test protocol (:mod:`.protocol`). ``None`` (default): the network runs at
            the image's size. A size of the form 8k+1: the authors' Caffe protocol, the image
            padded bottom/right to it (513 in their test), logits zoomed by 8 and cropped.
            ``"auto"``: what the weights' original did (513 for caffe, native for tf), as
            ``deeplab segment``/``evaluate`` do by default. Not applied to tiles.
        input_size: ``(width, height)``: every image is resized (bilinear) to exactly this size for
            the network, and its logits are upsampled to the image's own size with the convention's
            bilinear: the protocol of AdaptSegNet and ADVENT on Cityscapes (input 1024x512,
            prediction upsampled to 2048x1024). Replaces ``max_size``; not with ``tile``.

    Before the network runs, its memory is estimated (:mod:`.memory`) and an input that would not
    fit is refused with one line instead of being killed by the system.
    """

    def __init__(
        self, network: Network, spec: ModelSpec | None = None, *, device: str | torch.device = "cpu",
        scales: Sequence[float] = (1.0,), max_size: int | None = None, flip: bool = False,
        crf: CRFParams | None = None, crf_backend: str = "auto",
        tile: int | None = None, tile_overlap: int = 192, rows_per_chunk: int = 256,
        pad_size: int | str | None = None, input_size: tuple[int, int] | None = None,
    ):  # fmt: skip
        self.spec = _spec_of(network, spec)
        self.device = torch.device(device)
        if isinstance(network, nn.Module):
            network = network.to(device).eval()
        self.network = network
        # eval() on the wrapper too: in training mode MSC returns every scale's logits, not the fusion
        self.scales = tuple(float(s) for s in scales)
        multi_scale = self.scales != (1.0,)
        self.net = MSC(network, scales, convention=self.spec.convention).eval() if multi_scale else network
        self.max_size = max_size
        self.flip = flip
        self.crf = crf
        self.crf_backend = crf_backend
        if tile is not None and (tile < 64 or tile_overlap < 0 or 2 * tile_overlap >= tile):
            raise DeepLabError(f"tile size {tile} with overlap {tile_overlap}: need tile >= 64 and overlap < tile/2")
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.rows_per_chunk = rows_per_chunk
        # None = the image's own size; else the size every input is padded to (inference/protocol.py)
        self.pad_size = protocol.resolve_pad_size(pad_size, self.spec.convention)
        self.input_size = protocol.check_input_size(input_size, max_size=max_size, tile=tile)

    @classmethod
    def from_weights(cls, weights: str | Path, *, num_classes: int | None = None, **kwargs) -> Segmenter:
        """A segmenter for a weight file (any format :func:`deeplab_resnet.load_model` reads)."""
        return cls(load_model(weights, num_classes=num_classes), **kwargs)

    @property
    def dataset(self) -> DatasetInfo:
        return self.spec.dataset

    def network_input(self, rgb: np.ndarray) -> np.ndarray:
        """The image as the network sees it: resized to ``input_size``, or shrunk to ``max_size`` if larger."""
        h, w = protocol.network_image_size(rgb.shape[0], rgb.shape[1], self.max_size, self.input_size)
        if (h, w) != rgb.shape[:2]:
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
        return rgb

    @torch.inference_mode()
    def logits(self, image) -> torch.Tensor:
        """Stride-8 logits (``C x h x w``) of one image (after multi-scale fusion, if any; no flip);
        with ``pad_size``, those of the padded input."""
        rgb = self.network_input(as_rgb(image))
        x = to_input(rgb, self.spec.mean_bgr).unsqueeze(0).to(self.device)
        return self._network_logits(x, self.pad_size)[0]

    def _network_logits(self, x: torch.Tensor, pad_size: int | None = None) -> torch.Tensor:
        """The (possibly multi-scale) network's float32 logits of ``x`` padded to ``pad_size``, on
        this segmenter's device (a backend such as onnxruntime returns CPU tensors whatever the device)."""
        x = protocol.pad_input(x, pad_size)
        check_fits(x.shape[-2], x.shape[-1], self.scales, self.spec.architecture, self.device)
        return self.net(x).to(self.device).float()

    def _columns(self, x: torch.Tensor, width: int, pad_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of input ``x`` (``B x 3 x H x W``) upsampled along the width only
        (``B x C x h x width``), and the logits (``B x C x h x w``).

        Flip fusion happens here: mirroring the width-upsampled logits of the mirrored input is
        exact for both conventions (the row interpolation does not involve the width). With
        ``pad_size`` the network sees ``x`` (and its mirror) padded bottom/right, and the width
        matrix zooms and crops (:func:`protocol.upsample_matrix`).
        """
        convention = self.spec.convention
        logits = self._network_logits(x, pad_size)
        wx = protocol.upsample_matrix(logits.shape[-1], width, x.shape[-1], pad_size, convention, device=logits.device)
        cols = logits @ wx.T
        if self.flip:
            cols = (cols + (self._network_logits(x.flip(-1), pad_size) @ wx.T).flip(-1)) / 2
        return cols, logits

    def _upsample_rows(
        self, cols: torch.Tensor, height: int, full: bool, net_height: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Finish one image: its width-upsampled logits (``C x h x W``) to labels (and logits) at
        ``height``; ``net_height`` is the (unpadded) network input's."""
        wy = protocol.upsample_matrix(
            cols.shape[-2], height, net_height, self.pad_size, self.spec.convention, device=cols.device
        )
        if full:
            upsampled = _rows_full(cols, wy, self.rows_per_chunk)
            return labels_of(upsampled), upsampled
        return _rows_argmax(cols, wy, self.rows_per_chunk), None

    def _predict_whole(self, rgb: np.ndarray, full: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = rgb.shape[:2]
        x = to_input(self.network_input(rgb), self.spec.mean_bgr).unsqueeze(0).to(self.device)
        cols, _ = self._columns(x, width, self.pad_size)
        return self._upsample_rows(cols[0], height, full, x.shape[-2])

    @torch.inference_mode()
    def predict_batch(self, images: Sequence, *, full: bool = False) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """:meth:`predict` for several images of one size, run through the network as one batch.

        This is how evaluation keeps a GPU busy (the original ran one image at a time); the results
        equal :meth:`predict`'s image by image up to float rounding. Not with ``tile``.
        """
        rgbs = [as_rgb(im) for im in images]
        if not rgbs:
            return []
        height, width = rgbs[0].shape[:2]
        if any(r.shape[:2] != (height, width) for r in rgbs):
            raise DeepLabError("predict_batch needs images of one size")
        if self.tile is not None or len(rgbs) == 1:
            return [self.predict(r, full=full) for r in rgbs]
        x = torch.stack([to_input(self.network_input(r), self.spec.mean_bgr) for r in rgbs]).to(self.device)
        cols, _ = self._columns(x, width, self.pad_size)  # one size in, one padded size
        return [self._upsample_rows(c, height, full, x.shape[-2]) for c in cols]

    def _predict_tiled(self, rgb: np.ndarray, full: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stitch windows at full resolution (``max_size`` does not apply); each owns its centre.
        Windows run at their own size: the test protocol (``pad_size``) is about whole images."""
        height, width = rgb.shape[:2]
        labels = torch.empty(height, width, dtype=torch.long, device=self.device)
        upsampled = None
        for (y0, y1, ya, yb), (x0, x1, xa, xb) in itertools.product(
            tile_spans(height, self.tile, self.tile_overlap), tile_spans(width, self.tile, self.tile_overlap)
        ):
            window = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            x = to_input(window, self.spec.mean_bgr).unsqueeze(0).to(self.device)
            cols, logits = (t[0] for t in self._columns(x, x1 - x0))
            wy = interp_matrix(logits.shape[-2], y1 - y0, self.spec.convention, device=cols.device)
            part = _rows_full(cols, wy, self.rows_per_chunk)[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
            labels[ya:yb, xa:xb] = labels_of(part)
            if full:
                if upsampled is None:
                    upsampled = torch.empty(part.shape[0], height, width, device=self.device)
                upsampled[:, ya:yb, xa:xb] = part
        return labels, upsampled

    @torch.inference_mode()
    def predict(self, image, *, full: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels (``H x W``) and, with ``full``, the upsampled logits (``C x H x W``); no CRF.

        The building block of :meth:`__call__` and of evaluation.
        """
        rgb = as_rgb(image)
        if self.tile is None:
            return self._predict_whole(rgb, full)
        return self._predict_tiled(rgb, full)

    @torch.inference_mode()
    def __call__(self, image, *, return_probs: bool = False, return_logits: bool = False) -> Segmentation:
        """Segment one image (a path, a PIL image or an ``H x W x 3`` uint8 RGB array).

        ``return_probs``/``return_logits`` add ``H x W x C`` float32 arrays at the image's size
        (after the model's own upsampling; with a CRF the probabilities are the refined ones).
        """
        rgb = as_rgb(image)
        labels, upsampled = self.predict(rgb, full=return_probs or return_logits or self.crf is not None)
        return self._finish(rgb, labels, upsampled, return_probs, return_logits)

    @torch.inference_mode()
    def segment_batch(
        self, images: Sequence, *, return_probs: bool = False, return_logits: bool = False
    ) -> list[Segmentation]:
        """:meth:`__call__` for several images of one size, with one network run for all of them
        (:meth:`predict_batch`); the CRF, if any, then refines each image on its own."""
        rgbs = [as_rgb(im) for im in images]
        predictions = self.predict_batch(rgbs, full=return_probs or return_logits or self.crf is not None)
        return [
            self._finish(rgb, labels, upsampled, return_probs, return_logits)
            for rgb, (labels, upsampled) in zip(rgbs, predictions)
        ]

    def _finish(
        self, rgb: np.ndarray, labels: torch.Tensor, upsampled: torch.Tensor | None, return_probs: bool,
        return_logits: bool,
    ) -> Segmentation:  # fmt: skip
        """One image's :class:`Segmentation` from its predicted labels and upsampled logits (CRF applied here)."""
        probs = logits = None
        if upsampled is not None:
            probs_chw = torch.softmax(upsampled, dim=0).cpu().numpy()
            if self.crf is not None:
                probs_chw = dense_crf(rgb, probs_chw, self.crf, backend=self.crf_backend)
                labels = torch.from_numpy(probs_chw.argmax(0))
            if return_probs:
                probs = np.ascontiguousarray(probs_chw.transpose(1, 2, 0), dtype=np.float32)
            if return_logits:
                logits = np.ascontiguousarray(upsampled.permute(1, 2, 0).cpu().numpy(), dtype=np.float32)
        dtype = np.uint8 if self.spec.num_classes <= 256 else np.int32
        return Segmentation(labels.cpu().numpy().astype(dtype), self.dataset, probs, logits)


def _spec_of(network: Network, spec: ModelSpec | None) -> ModelSpec:
    """``spec``, or the spec a :class:`DeepLabV2` carries; other networks must come with one."""
    if spec is not None:
        return spec
    if isinstance(network, DeepLabV2):
        return network.spec
    raise DeepLabError(
        f"Segmenter: a {type(network).__name__} does not say what its logits mean; pass the model's spec, "
        "e.g. Segmenter(network, model.spec)"
    )


def segment_image(image, weights: str | Path, **kwargs) -> Segmentation:
    """One-shot convenience: load ``weights`` and segment ``image``."""
    return Segmenter.from_weights(weights, **kwargs)(image)
