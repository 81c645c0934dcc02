"""Scoring a model on a labelled list: the core loop behind ``deeplab evaluate``.

Full images, one at a time (batch of one per image size, as the original), logits upsampled
to the image size with the model's convention, argmax, one confusion matrix for the dataset.
Options: multi-scale inputs, flip, dense CRF (in worker processes), saving predictions and
logits, and sharding across ``torchrun`` ranks with the matrices summed at the end.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..atomic import save_npy
from ..crf import CRFParams, dense_crf
from ..data.lists import Pair
from ..dataset_info import DatasetInfo
from ..errors import DeepLabError, interrupts_held, leave_interrupts_to_the_main_process
from ..images import label_image, load_pair, read_label, save_image, size_mismatch
from ..inference.segmenter import Network, Segmenter
from ..models.spec import ModelSpec
from .metrics import ConfusionMeter

# Called after each image with (images done, images in total, seconds since the start).
Progress = Callable[[int, int, float], None]


@dataclass
class EvalOutputs:
    """Where to write per-image results (``None``: not written)."""

    predictions: Path | None = None  # palette PNGs NAME.png
    logits: Path | None = None  # float32 H x W x C NAME.npy at the image's size


def crf_labels(image: np.ndarray, probs: np.ndarray, params: CRFParams, backend: str) -> np.ndarray:
    """CRF-refined label map; runs in a worker process."""
    return dense_crf(image, probs, params, backend=backend).argmax(0).astype(np.uint8)


def _worker_init() -> None:
    # One thread per worker: the workers already use every core between them.
    torch.set_num_threads(1)
    leave_interrupts_to_the_main_process()


def default_crf_workers() -> int:
    """Half the cores (the network needs the rest), at most 8; none below 4 cores, where
    spawning workers was measured to cost more than it overlaps (BENCHMARKS.md)."""
    cores = os.cpu_count() or 1
    return min(cores // 2, 8) if cores >= 4 else 0


# Over 60 lines only through its keyword arguments and their documentation: every option of the
# evaluation is described here once; the body is the ~20 lines at the end.
def evaluate_pairs(
    model: Network,
    pairs: Iterable[Pair],
    *,
    spec: ModelSpec | None = None,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    ignore_label: int | None = None,
    flip: bool = False,
    crf: CRFParams | None = None,
    crf_backend: str = "auto",
    crf_workers: int = 0,
    outputs: EvalOutputs | None = None,
    progress: Progress | None = None,
    batch_size: int = 1,
    pad_size: int | str | None = None,
    input_size: tuple[int, int] | None = None,
    tile: int | None = None,
    tile_overlap: int = 192,
) -> ConfusionMeter:
    """Run ``model`` on every pair and accumulate the confusion matrix.

    Args:
        model: the network: a :class:`~deeplab_resnet.models.DeepLabV2`, or any callable from a
            preprocessed batch to logits (an onnxruntime backend) together with ``spec``.
        pairs: list entries with ground truth.
        spec: what the network's logits mean (taken from a ``DeepLabV2``); its dataset gives the
            class count and, by default, the ignore label.
        device: where the network runs.
        scales: input scales (more than one: the original's max fusion).
        ignore_label: ground-truth value not scored; defaults to the model's dataset's.
        flip: average the logits with those of the mirrored image.
        crf: dense-CRF parameters (``None``: no CRF).
        crf_backend: ``auto``, ``builtin`` (ours) or ``pydensecrf``; see :func:`deeplab_resnet.crf.resolve_backend`.
        crf_workers: processes running the CRF while the network goes on; 0 runs it inline.
        outputs: per-image files to write.
        progress: called after every image.
        batch_size: run up to this many images of the same size through the network at once
            (images are grouped by size within a look-ahead of ``4 * batch_size`` list entries, so
            they may finish out of list order; the scores do not depend on the order).
        pad_size: the test protocol, see :class:`Segmenter` (``None``: native size; 513: the
            authors' Caffe padding; ``"auto"``: the weights' original's).
        input_size: ``(width, height)`` every image is resized to for the network, the logits
            upsampled to the label's size (AdaptSegNet/ADVENT on Cityscapes); see :class:`Segmenter`.
        tile, tile_overlap: run the network on overlapping windows (each owns its centre) to bound
            memory; see :class:`Segmenter`.
    """
    if batch_size < 1:
        raise DeepLabError(f"batch size must be >= 1, got {batch_size}")
    pairs = list(pairs)
    segmenter = Segmenter(
        model, spec, device=device, scales=scales, flip=flip, pad_size=pad_size, input_size=input_size,
        tile=tile, tile_overlap=tile_overlap,
    )  # fmt: skip
    dataset = segmenter.dataset
    meter = ConfusionMeter(dataset.num_classes, dataset.ignore_label if ignore_label is None else ignore_label)
    scoring = _Scoring(meter, dataset, outputs or EvalOutputs(), len(pairs), progress, crf, crf_backend, crf_workers)
    full = crf is not None or scoring.outputs.logits is not None
    try:
        for group in size_groups(pairs, batch_size):
            results = segmenter.predict_batch([image for _, image, _ in group], full=full)
            for (pair, image, gt), (labels, upsampled) in zip(group, results):
                scoring.add(pair, image, gt, labels, upsampled)
        scoring.drain(0)
    finally:
        scoring.close()
    return meter


class _Scoring:
    """What happens to a network output: logits saved, the CRF (inline or in worker processes),
    then the label map scored, saved and counted in the progress."""

    def __init__(
        self, meter: ConfusionMeter, dataset: DatasetInfo, outputs: EvalOutputs, total: int,
        progress: Progress | None, crf: CRFParams | None, crf_backend: str, crf_workers: int,
    ) -> None:  # fmt: skip
        self.meter, self.dataset, self.outputs, self.total, self.progress = meter, dataset, outputs, total, progress
        self.crf, self.crf_backend, self.crf_workers = crf, crf_backend, crf_workers
        self.pool = None
        if crf is not None and crf_workers > 0:
            # spawn, not fork: forking a process that has started OpenMP or CUDA is unsafe.
            self.pool = ProcessPoolExecutor(crf_workers, mp_context=get_context("spawn"), initializer=_worker_init)
        self.pending: deque[tuple[Pair, np.ndarray, Future]] = deque()
        self.start, self.done = time.perf_counter(), 0

    def add(self, pair: Pair, image: np.ndarray, gt: np.ndarray, labels: torch.Tensor, upsampled) -> None:
        if self.outputs.logits is not None and upsampled is not None:
            save_npy(self.outputs.logits / f"{pair.name}.npy", upsampled.permute(1, 2, 0).cpu().numpy())
        if self.crf is None:
            self.finish(pair, labels.cpu().numpy().astype(np.uint8), gt)
            return
        probs = torch.softmax(upsampled, dim=0).cpu().numpy()
        if self.pool is None:
            self.finish(pair, crf_labels(image, probs, self.crf, self.crf_backend), gt)
            return
        with interrupts_held():  # submit may start a worker: a Ctrl-C meanwhile is the main process's
            future = self.pool.submit(crf_labels, image, probs, self.crf, self.crf_backend)
        self.pending.append((pair, gt, future))
        self.drain(2 * self.crf_workers)  # bound the probabilities held in flight

    def drain(self, keep: int) -> None:
        """Wait for CRF results, oldest first, until at most ``keep`` are still running."""
        while len(self.pending) > keep:
            pair, gt, future = self.pending.popleft()
            self.finish(pair, future.result(), gt)

    def finish(self, pair: Pair, labels: np.ndarray, gt: np.ndarray) -> None:
        self.meter.update(labels, gt)
        if self.outputs.predictions is not None:
            save_image(label_image(labels, self.dataset), self.outputs.predictions / f"{pair.name}.png")
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, time.perf_counter() - self.start)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def size_groups(pairs: Sequence[Pair], batch_size: int) -> Iterator[list[tuple[Pair, np.ndarray, np.ndarray]]]:
    """Loaded ``(pair, image, ground truth)`` in groups of up to ``batch_size`` images of one size.

    Images are read ahead up to ``4 * batch_size`` entries; a group leaves as soon as it is full,
    and what is left is flushed at the end. ``batch_size`` 1 keeps the list order.
    """
    window = 4 * batch_size
    buckets: dict[tuple[int, int], list[tuple[Pair, np.ndarray, np.ndarray]]] = {}
    held = 0
    for pair in pairs:
        image, gt = load_pair(pair)
        bucket = buckets.setdefault(image.shape[:2], [])
        bucket.append((pair, image, gt))
        held += 1
        if len(bucket) == batch_size:
            held -= len(bucket)
            yield buckets.pop(image.shape[:2])
        elif held >= window:  # flush the fullest bucket so memory stays bounded
            size = max(buckets, key=lambda k: len(buckets[k]))
            held -= len(buckets[size])
            yield buckets.pop(size)
    yield from buckets.values()


def prediction_path(pred_dir: Path, pair: Pair) -> Path:
    """The prediction PNG of a list entry: named after its label file, else after its image."""
    for stem in ([pair.label.stem] if pair.label is not None else []) + [pair.image.stem]:
        path = pred_dir / f"{stem}.png"
        if path.is_file():
            return path
    return pred_dir / f"{(pair.label or pair.image).stem}.png"


def evaluate_prediction_dir(
    pred_dir: str | Path,
    pairs: Iterable[Pair],
    num_classes: int,
    ignore_label: int = 255,
    *,
    progress: Progress | None = None,
) -> ConfusionMeter:
    """Score a folder of prediction PNGs (class indices, made by any program) against ground truth.

    Uses exactly the metric code of :func:`evaluate_pairs`. Each entry's prediction is
    ``pred_dir/NAME.png`` with NAME the stem of its label file (or of its image).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DeepLabError(f"predictions directory not found: {pred_dir}")
    pairs = list(pairs)
    paths = [prediction_path(pred_dir, p) for p in pairs]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DeepLabError(f"{len(missing)} of {len(paths)} predictions missing in {pred_dir}, e.g. {missing[0].name}")
    meter = ConfusionMeter(num_classes, ignore_label)
    start = time.perf_counter()
    for i, (pair, path) in enumerate(zip(pairs, paths), start=1):
        if pair.label is None:
            raise DeepLabError(f"{pair.image}: no ground truth in the list (line {pair.line})")
        pred, gt = read_label(path), read_label(pair.label)
        if mismatch := size_mismatch(path, pred.shape, gt.shape, of="the ground truth"):
            raise DeepLabError(mismatch)
        if pred.max(initial=0) >= num_classes:
            raise DeepLabError(f"{path}: predicted class {int(pred.max())} but there are {num_classes} classes")
        meter.update(pred, gt)
        if progress is not None:
            progress(i, len(pairs), time.perf_counter() - start)
    return meter


def all_reduce_matrix(matrix: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Sum a confusion matrix over all ranks (int64, so the counts stay exact)."""
    if not (dist.is_available() and dist.is_initialized()):
        return matrix
    t = torch.as_tensor(matrix, dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()
