"""torch.hub entry points of deeplab_resnet (the code is in src/deeplab_resnet/torch_hub.py).

::

    import torch
    model = torch.hub.load("OWNER/deeplab_resnet", "deeplab_v2_resnet101", weights="voc12")
    seg = torch.hub.load("OWNER/deeplab_resnet", "segmenter", weights="voc12")
    labels = seg("photo.jpg").labels

torch.hub puts this folder on sys.path, but the package lives in src/: the checkout's own
package is imported from there (so the code matches the checkout), and sys.path is restored
afterwards. A deeplab_resnet imported earlier in the process (an installed one) is used as it
is, since Python cannot hold two copies of one package.
"""

from __future__ import annotations

dependencies = ["torch", "numpy", "PIL", "safetensors"]


def _entry_points():
    import importlib
    import os
    import sys

    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
    added = os.path.isdir(os.path.join(src, "deeplab_resnet")) and src not in sys.path
    if added:
        sys.path.insert(0, src)
    try:
        return importlib.import_module("deeplab_resnet.torch_hub")
    finally:
        if added:
            sys.path.remove(src)


def deeplab_v2_resnet101(
    *, weights: str | None = "voc12", num_classes: int | None = None, convention: str | None = None, **kwargs
):
    """DeepLab-v2 ResNet-101 in eval mode with ``model.spec``; ``weights`` as ``--weights`` takes them
    (a file, a registered name such as voc12, hf://OWNER/REPO[@REVISION]) or None for random weights."""
    return _entry_points().deeplab_v2_resnet101(
        weights=weights, num_classes=num_classes, convention=convention, **kwargs
    )


def segmenter(*, weights: str = "voc12", num_classes: int | None = None, convention: str | None = None, **options):
    """A ready deeplab_resnet.Segmenter for ``weights``; ``options`` go to it (scales, crf, device, ...)."""
    return _entry_points().segmenter(weights=weights, num_classes=num_classes, convention=convention, **options)
