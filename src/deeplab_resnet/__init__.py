"""DeepLab-v2 (DeepLab-ResNet) semantic segmentation on PyTorch.

The short tour::

    import deeplab_resnet as dl
    model = dl.create_model(num_classes=21, convention="caffe")   # random weights
    model = dl.load_model("deeplab_voc12.safetensors")            # or from a weight file
    labels = dl.Segmenter(model)("photo.jpg").labels              # H x W class indices
    dl.save_weights(model, "copy.safetensors", source="my run")
    model = dl.from_pretrained("owner/repo")                       # a Hugging Face Hub repository

Names are imported lazily so that ``deeplab --help`` does not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CAMVID": "dataset_info",
    "VOC": "dataset_info",
    "DatasetInfo": "dataset_info",
    "load_dataset_info": "dataset_info",
    "DeepLabError": "errors",
    "MSC": "models",
    "DeepLabV2": "models",
    "ModelSpec": "models",
    "create_model": "models",
    "logit_size": "models",
    "to_input": "preprocess",
    "resize_bilinear": "resize",
    "Segmentation": "inference.segmenter",
    "Segmenter": "inference.segmenter",
    "segment_image": "inference.segmenter",
    "load_model": "weights",
    "save_weights": "weights",
    "from_pretrained": "weights",
    "save_pretrained": "weights",
    "push_to_hub": "weights",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'deeplab_resnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
