"""The DeepLab-v2 network: ResNet-101 backbone, ASPP-L classifier, multi-scale wrapper."""

from .aspp import ASPP_RATES, ASPPClassifier
from .deeplab import (
    MODELS,
    DeepLabV2,
    create_model,
    deeplab_v2_resnet101,
    deeplab_v2_resnet_tiny,
    init_backbone_from_scratch,
    model_from_architecture,
)
from .layers import CONVENTIONS, BatchNorm, Convention, logit_size
from .msc import DEFAULT_SCALES, MSC
from .naming import original_to_state_key, state_key_to_original
from .resnet import ResNetBackbone
from .spec import ModelSpec

__all__ = [
    "ASPP_RATES", "ASPPClassifier", "BatchNorm", "CONVENTIONS", "Convention", "DEFAULT_SCALES",
    "DeepLabV2", "MODELS", "MSC", "ModelSpec", "ResNetBackbone", "create_model", "deeplab_v2_resnet101",
    "deeplab_v2_resnet_tiny", "init_backbone_from_scratch", "logit_size", "model_from_architecture",
    "original_to_state_key", "state_key_to_original",
]  # fmt: skip
