"""The ``torch.hub`` entry points (``hubconf.py`` at the repository root re-exports them).

::

    model = torch.hub.load("OWNER/deeplab_resnet", "deeplab_v2_resnet101", weights="voc12")
    seg = torch.hub.load("OWNER/deeplab_resnet", "segmenter", weights="hf://OWNER/REPO")

``weights`` takes what ``--weights`` takes (a file, a registered name, ``hf://owner/repo[@revision]``);
the network is the one the weights describe. ``weights=None`` builds a randomly initialised ResNet-101.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import DeepLabError
from .inference.segmenter import Segmenter
from .models.deeplab import DeepLabV2, create_model
from .weights.loading import load_model


def deeplab_v2_resnet101(
    *, weights: str | Path | None = "voc12", num_classes: int | None = None, convention: str | None = None,
    device: str | torch.device = "cpu", **kwargs,
) -> DeepLabV2:  # fmt: skip
    """DeepLab-v2 ResNet-101 in eval mode, ``model.spec`` set.

    Args:
        weights: what ``--weights`` takes; ``None`` for random weights.
        num_classes: the class count expected (checked against the weights; with ``weights=None``,
            the count built, 21 by default).
        convention: ``caffe`` or ``tf``; checked against the weights (they carry theirs), or
            built (default ``caffe``) with ``weights=None``.
        device: where to put the model.
        kwargs: to :func:`deeplab_resnet.load_model` (``dataset``, ``not_restore_last``, ...), or
            with ``weights=None`` to :func:`deeplab_resnet.create_model`.
    """
    if weights is None:
        model = create_model(
            "deeplab_v2_resnet101", num_classes=num_classes, convention=convention or "caffe", **kwargs
        )
        return model.to(device).eval()
    model = load_model(weights, num_classes=num_classes, device=device, **kwargs)
    if convention is not None and convention != model.convention:
        raise DeepLabError(f"{weights}: these weights follow the {model.convention!r} convention, not {convention!r}")
    return model


def segmenter(
    *, weights: str | Path = "voc12", num_classes: int | None = None, convention: str | None = None,
    device: str | torch.device = "cpu", **options,
) -> Segmenter:  # fmt: skip
    """A ready :class:`~deeplab_resnet.Segmenter` for ``weights``; ``options`` go to it (``scales``, ``crf``, ...)."""
    model = deeplab_v2_resnet101(weights=weights, num_classes=num_classes, convention=convention, device=device)
    return Segmenter(model, device=device, **options)
