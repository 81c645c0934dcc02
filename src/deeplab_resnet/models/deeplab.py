"""DeepLab-v2: the dilated ResNet backbone wired to the ASPP-L classifier, and its factories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from ..dataset_info import DatasetInfo, generic_dataset
from ..resize import resize_bilinear
from .aspp import ASPP_RATES, ASPPClassifier
from .layers import BatchNorm, Convention, logit_size
from .resnet import RESNET101_BLOCKS, ResNetBackbone
from .spec import ModelSpec


class DeepLabV2(nn.Module):
    """A backbone and a classifier, plus the :class:`ModelSpec` that says what its logits mean.

    ``forward`` maps a preprocessed batch (BGR − mean, ``N x 3 x H x W``) to stride-8 logits,
    ``N x C x h x w`` with ``(h, w) = logit_size(H, W)``. ``spec`` holds the convention (which
    original the numerics follow), the dataset (what the classes are) and the architecture (how to
    rebuild the network); ``convention``, ``dataset``, ``architecture``, ``num_classes`` and
    ``mean_bgr`` read it.
    """

    def __init__(self, backbone: ResNetBackbone, classifier: ASPPClassifier, spec: ModelSpec):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.spec = spec

    @property
    def convention(self) -> Convention:
        return self.spec.convention

    @property
    def dataset(self) -> DatasetInfo:
        return self.spec.dataset

    @dataset.setter
    def dataset(self, dataset: DatasetInfo) -> None:
        """Rename the classes (e.g. after loading weights of a known dataset); the count must match."""
        if dataset.num_classes != self.spec.num_classes:
            raise ValueError(
                f"dataset {dataset.name!r} has {dataset.num_classes} classes, the model {self.num_classes}"
            )
        self.spec = replace(self.spec, dataset=dataset)

    @property
    def architecture(self) -> dict:
        """A copy of ``spec.architecture`` (editing it does not change the model)."""
        return self.spec.architecture_dict()

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def mean_bgr(self) -> tuple[float, float, float]:
        return self.spec.mean_bgr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def logit_size(self, height: int, width: int) -> tuple[int, int]:
        return logit_size(height, width, self.convention)

    def upsample(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Logits resized to ``size`` (the image's H, W) with the convention's bilinear, as the original does."""
        return resize_bilinear(logits, size, self.convention)

    def set_bn_frozen(self, frozen: bool) -> None:
        """Freeze (the original's default) or train (``--is-training``) every batch norm."""
        for m in self.modules():
            if isinstance(m, BatchNorm):
                m.set_frozen(frozen)

    def classifier_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The classifier's (weights, biases): trained at 10x and 20x the base learning rate."""
        weights = [m.weight for m in self.classifier.children()]
        biases = [m.bias for m in self.classifier.children()]
        return weights, biases


def init_backbone_from_scratch(model: DeepLabV2) -> None:
    """Initialise for training without pretrained weights.

    Kaiming-normal convs (fan-out, ReLU) and identity BN (gamma 1, beta 0, mean 0, var 1). The
    last BN of each residual branch starts with gamma 0, so every block starts as the identity
    and activations do not grow with depth (with frozen BN they would grow ~1.8x per block).
    """
    for name, m in model.backbone.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            # Not reset_running_stats(): our BatchNorm has no num_batches_tracked buffer.
            nn.init.zeros_(m.running_mean)
            nn.init.ones_(m.running_var)
            if name.endswith("bn_branch2c"):
                nn.init.zeros_(m.weight)


def deeplab_v2_resnet101(
    *,
    num_classes: int | None = None,
    dataset: DatasetInfo | None = None,
    convention: Convention = "caffe",
    frozen_bn: bool = True,
    bn_momentum: float = 0.1,
    blocks: Sequence[int] = RESNET101_BLOCKS,
    width: int = 64,
    aspp_rates: Sequence[int] = ASPP_RATES,
    name: str = "deeplab_v2_resnet101",
) -> DeepLabV2:
    """DeepLab-v2 with ResNet-101 and ASPP-L, randomly initialised.

    Args:
        num_classes: output classes (21 for VOC). Taken from ``dataset`` when omitted.
        dataset: class names, palette, mean and ignore label; VOC when neither is given.
        convention: ``"caffe"`` (the authors' release) or ``"tf"`` (DeepLab-ResNet-TensorFlow):
            BN epsilon and padding, see docs/original.md §1. Weight files carry theirs.
        frozen_bn: keep BN fixed in training (the original's default).
        bn_momentum: running-statistics momentum when BN is trained.
        blocks: blocks per stage; smaller counts build a reduced-depth variant for tests.
        width: res2 bottleneck width (64 in ResNet-101).
        aspp_rates: dilation rates of the classifier branches.
        name: the architecture's name recorded in the spec (and in weight files).
    """
    if dataset is None:
        dataset = generic_dataset(num_classes if num_classes is not None else 21)
    if num_classes is not None and num_classes != dataset.num_classes:
        raise ValueError(f"num_classes={num_classes} but dataset {dataset.name!r} has {dataset.num_classes}")
    backbone = ResNetBackbone(
        blocks=blocks, width=width, convention=convention, frozen_bn=frozen_bn, bn_momentum=bn_momentum
    )
    classifier = ASPPClassifier(backbone.out_channels, dataset.num_classes, rates=aspp_rates, convention=convention)
    architecture = {"name": name, "blocks": list(blocks), "width": width, "aspp_rates": list(aspp_rates)}
    return DeepLabV2(backbone, classifier, ModelSpec(convention, dataset, architecture))


def deeplab_v2_resnet_tiny(**kwargs) -> DeepLabV2:
    """The same code at one block per stage and width 8: for tests and quick experiments."""
    kwargs.setdefault("blocks", (1, 1, 1, 1))
    kwargs.setdefault("width", 8)
    kwargs.setdefault("name", "deeplab_v2_resnet_tiny")
    return deeplab_v2_resnet101(**kwargs)


MODELS = {
    "deeplab_v2_resnet101": deeplab_v2_resnet101,
    "deeplab_v2_resnet_tiny": deeplab_v2_resnet_tiny,
}


def create_model(name: str = "deeplab_v2_resnet101", **kwargs) -> DeepLabV2:
    """Build a model by name (``deeplab_v2_resnet101`` or ``deeplab_v2_resnet_tiny``).

    Keyword arguments go to the factory, see :func:`deeplab_v2_resnet101`. To load weights use
    :func:`deeplab_resnet.load_model`.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def model_from_architecture(architecture: dict, **kwargs) -> DeepLabV2:
    """Rebuild a model from the ``architecture`` dict stored with its weights, by the factory
    :func:`create_model` uses for its ``name`` (files without one hold ResNet-101)."""
    return create_model(
        architecture.get("name", "deeplab_v2_resnet101"),
        blocks=tuple(architecture.get("blocks", RESNET101_BLOCKS)),
        width=int(architecture.get("width", 64)),
        aspp_rates=tuple(architecture.get("aspp_rates", ASPP_RATES)),
        **kwargs,
    )
