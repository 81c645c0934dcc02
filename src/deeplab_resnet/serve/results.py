"""What the web server answers: the label PNG, the class summary and the model description.

The label PNG is made by the functions ``deeplab segment`` uses (:func:`~deeplab_resnet.images.label_image`,
the dataset's palette), so the API and the command give the same file for the same image and options.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from PIL import Image

from ..dataset_info import DatasetInfo
from ..images import label_image, overlay, png_bytes
from ..inference.segmenter import Segmentation
from ..models.spec import ModelSpec


def label_png(result: Segmentation) -> bytes:
    """The palette PNG of class indices that ``deeplab segment`` writes as NAME.png."""
    return png_bytes(label_image(result.labels, result.dataset))


def overlay_png(rgb: np.ndarray, result: Segmentation) -> bytes:
    """The image blended with its colour mask (``deeplab segment``'s overlay, as a PNG)."""
    return png_bytes(Image.fromarray(overlay(rgb, result.labels, result.dataset)))


def class_shares(labels: np.ndarray, dataset: DatasetInfo) -> list[dict[str, Any]]:
    """The classes present, largest share of the pixels first: index, name, share (0..1) and colour."""
    values, counts = np.unique(labels, return_counts=True)
    total = float(labels.size)
    classes = [
        {
            "index": int(v),
            "name": dataset.class_names[v] if v < dataset.num_classes else str(int(v)),
            "share": int(c) / total,
            "color": list(dataset.palette[v]) if v < len(dataset.palette) else [0, 0, 0],
        }
        for v, c in zip(values, counts)
    ]
    return sorted(classes, key=lambda c: (-c["share"], c["index"]))


def result_json(rgb: np.ndarray, result: Segmentation, *, include_png: bool, include_overlay: bool) -> dict[str, Any]:
    """The JSON answer for one image, without the server's fields (backend, crf, timings)."""
    height, width = result.labels.shape[:2]
    answer: dict[str, Any] = {"width": width, "height": height, "classes": class_shares(result.labels, result.dataset)}
    if include_png:
        answer["label_png_base64"] = base64.b64encode(label_png(result)).decode("ascii")
    if include_overlay:
        answer["overlay_png_base64"] = base64.b64encode(overlay_png(rgb, result)).decode("ascii")
    return answer


def model_json(spec: ModelSpec, source: str) -> dict[str, Any]:
    """``GET /v1/model``: the classes, their colours, the dataset, the convention and the weights' name."""
    dataset = spec.dataset
    return {
        "classes": list(dataset.class_names),
        "palette": [list(rgb) for rgb in dataset.palette[: dataset.num_classes]],
        "num_classes": dataset.num_classes,
        "dataset": dataset.name,
        "convention": spec.convention,
        "source": source,
    }
