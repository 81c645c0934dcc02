"""Scoring a model on a labelled list: the core loop behind ``deeplab evaluate``.

Full images, one at a time (batch of one per image size, as the original), logits upsampled
to the image size with the model's convention, argmax, one confusion matrix for the dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .data.lists import Pair
from .errors import DeepLabError
from .images import read_image, read_label
from .metrics import ConfusionMeter
from .models.deeplab import DeepLabV2
from .segment import Segmenter


def evaluate_pairs(
    model: DeepLabV2,
    pairs: Iterable[Pair],
    *,
    device: str | torch.device = "cpu",
    scales: Sequence[float] = (1.0,),
    ignore_label: int | None = None,
) -> ConfusionMeter:
    """Run ``model`` on every pair and accumulate the confusion matrix.

    ``ignore_label`` defaults to the model's dataset's.
    """
    ignore = model.dataset.ignore_label if ignore_label is None else ignore_label
    meter = ConfusionMeter(model.num_classes, ignore)
    segmenter = Segmenter(model, device=device, scales=scales)
    for pair in pairs:
        if pair.label is None:
            raise DeepLabError(f"{pair.image}: no ground truth in the list (line {pair.line})")
        image, label = read_image(pair.image), read_label(pair.label)
        if image.shape[:2] != label.shape:
            raise DeepLabError(f"{pair.label}: size {label.shape[::-1]} differs from its image {image.shape[1::-1]}")
        meter.update(segmenter(image).labels, label)
    return meter


def evaluate_predictions(
    pred_labels: Iterable[np.ndarray], gt_labels: Iterable[np.ndarray], num_classes: int, ignore_label: int = 255
) -> ConfusionMeter:
    """Score label maps made by any program against ground truth with the same metric code."""
    meter = ConfusionMeter(num_classes, ignore_label)
    for pred, gt in zip(pred_labels, gt_labels):
        meter.update(pred, gt)
    return meter
