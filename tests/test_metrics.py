"""Metric correctness: hand-computed matrices, a brute-force reference, and the edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deeplab_resnet.evaluation.metrics import ConfusionMeter, confusion_matrix, scores


def test_hand_computed_case():
    # 3 classes; ground truth / prediction over 8 pixels, one ignored (255), one out of range (7).
    gt = np.array([0, 0, 1, 1, 2, 2, 255, 7])
    pred = np.array([0, 1, 1, 1, 2, 0, 2, 2])
    m = confusion_matrix(pred, gt, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = scores(m)
    # IoU: c0 1/(2+2-1)=1/3, c1 2/(2+3-2)=2/3, c2 1/(2+1-1)=1/2
    np.testing.assert_allclose(s.iou, [1 / 3, 2 / 3, 1 / 2])
    assert s.mean_iou == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s.pixel_accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(s.accuracy, [1 / 2, 1, 1 / 2])
    assert s.frequency_weighted_iou == pytest.approx((2 * 1 / 3 + 2 * 2 / 3 + 2 * 1 / 2) / 6)


def test_absent_class_is_excluded_from_the_mean():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 0])
    s = scores(confusion_matrix(pred, gt, 4))
    assert math.isnan(s.iou[2]) and math.isnan(s.iou[3])
    assert list(s.present) == [True, True, False, False]
    assert s.mean_iou == pytest.approx((2 / 3 + 1 / 2) / 2)
    report = s.as_dict(["a", "b", "c", "d"])
    assert report["per_class"]["c"] == {"iou": None, "accuracy": None, "present": False}


def test_class_only_predicted_counts_with_zero_iou():
    s = scores(confusion_matrix(np.array([2, 0]), np.array([0, 0]), 3))
    assert s.iou[2] == 0.0 and s.present[2]


def test_all_ignore_image_adds_nothing():
    meter = ConfusionMeter(3)
    meter.update(np.array([[1, 2]]), np.array([[255, 255]]))
    assert meter.matrix.sum() == 0
    s = meter.scores()
    assert math.isnan(s.mean_iou) and math.isnan(s.pixel_accuracy)


def brute_force_iou(preds, gts, n, ignore):
    inter = np.zeros(n)
    union = np.zeros(n)
    for p, g in zip(preds, gts):
        for pv, gv in zip(p.ravel(), g.ravel()):
            if gv == ignore or gv >= n:
                continue
            for c in range(n):
                a, b = pv == c, gv == c
                inter[c] += a and b
                union[c] += a or b
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def test_dataset_accumulation_against_brute_force():
    rng = np.random.default_rng(3)
    preds, gts = [], []
    meter = ConfusionMeter(5, ignore_label=255)
    for _ in range(6):
        shape = tuple(rng.integers(3, 9, 2))
        g = rng.integers(0, 6, shape)  # 5 is out of range: ignored
        g[rng.random(shape) < 0.2] = 255
        p = rng.integers(0, 5, shape)
        preds.append(p)
        gts.append(g)
        meter.update(p, g)
    expected = brute_force_iou(preds, gts, 5, 255)
    np.testing.assert_allclose(meter.scores().iou, expected)
    assert meter.scores().mean_iou == pytest.approx(np.nanmean(expected))


def test_prediction_out_of_range_is_an_error():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([9]), np.array([0]), 3)
