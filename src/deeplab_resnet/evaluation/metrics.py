"""Segmentation metrics from one confusion matrix accumulated over a whole dataset.

This is the protocol of the original (docs/original.md §5): pixels whose ground truth is the ignore
label, or any value ``>= num_classes``, are not counted; mIoU is the mean over classes of
``TP / (TP + FP + FN)`` computed from the dataset-wide matrix (not averaged per image). A class
absent from both ground truth and prediction has no IoU (``nan``) and is left out of the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def confusion_matrix(pred, target, num_classes: int, ignore_label: int | None = 255) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts; rows are ground truth, columns predictions.

    ``pred`` and ``target`` are integer arrays or tensors of the same shape. Ground-truth pixels
    equal to ``ignore_label`` or outside ``[0, num_classes)`` are skipped; a prediction outside
    that range is an error (a model cannot predict a class it does not have).
    """
    pred_t = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).reshape(-1).long()
    target_t = torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target).reshape(-1).long()
    if pred_t.shape != target_t.shape:
        raise ValueError(f"prediction has {pred_t.numel()} pixels, ground truth {target_t.numel()}")
    valid = (target_t >= 0) & (target_t < num_classes)
    if ignore_label is not None:
        valid &= target_t != ignore_label
    pred_t, target_t = pred_t[valid], target_t[valid]
    if pred_t.numel() and (pred_t.min() < 0 or pred_t.max() >= num_classes):
        raise ValueError(f"predictions must be in [0, {num_classes}), got max {int(pred_t.max())}")
    counts = torch.bincount(target_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class Scores:
    """Everything derived from a confusion matrix. Per-class arrays hold ``nan`` where undefined."""

    iou: np.ndarray
    accuracy: np.ndarray  # per-class recall: TP / ground-truth pixels
    mean_iou: float
    pixel_accuracy: float
    mean_accuracy: float
    frequency_weighted_iou: float
    present: np.ndarray  # classes that occur in ground truth or prediction

    def as_dict(self, class_names=None) -> dict:
        names = list(class_names) if class_names is not None else [str(i) for i in range(len(self.iou))]

        def clean(v: float):
            return None if np.isnan(v) else float(v)

        return {
            "mean_iou": clean(self.mean_iou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "frequency_weighted_iou": clean(self.frequency_weighted_iou),
            "per_class": {
                name: {"iou": clean(i), "accuracy": clean(a), "present": bool(p)}
                for name, i, a, p in zip(names, self.iou, self.accuracy, self.present)
            },
        }


def scores(matrix: np.ndarray) -> Scores:
    """Metrics of a confusion matrix (rows ground truth, columns prediction)."""
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    gt = m.sum(axis=1)
    predicted = m.sum(axis=0)
    union = gt + predicted - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = m.sum()
    present = union > 0
    freq = gt / total if total > 0 else np.zeros_like(gt)
    return Scores(
        iou=iou,
        accuracy=acc,
        mean_iou=float(np.nanmean(iou)) if present.any() else float("nan"),
        pixel_accuracy=float(tp.sum() / total) if total > 0 else float("nan"),
        mean_accuracy=float(np.nanmean(acc)) if (gt > 0).any() else float("nan"),
        frequency_weighted_iou=float(np.nansum(freq * iou)) if total > 0 else float("nan"),
        present=present,
    )


class ConfusionMeter:
    """Accumulates a dataset-wide confusion matrix image by image."""

    def __init__(self, num_classes: int, ignore_label: int | None = 255):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_label)

    def scores(self) -> Scores:
        return scores(self.matrix)


def subset_mean_iou(iou: np.ndarray, classes: Sequence[int]) -> float:
    """Mean IoU over ``classes`` only, the IoUs being those of the full confusion matrix.

    This is how the SYNTHIA->Cityscapes papers report their 16- and 13-class mIoU: the matrix keeps
    every class, so a pixel of a class outside the subset predicted as one inside it (or the
    reverse) still counts against the class inside. Classes of the subset without an IoU (absent
    from ground truth and predictions) are left out of the mean, as in :func:`scores`; ``nan`` if
    none has one.
    """
    picked = np.asarray(iou, dtype=np.float64)[list(classes)]
    present = ~np.isnan(picked)
    return float(picked[present].mean()) if present.any() else float("nan")
