"""Rebuilding a model from the architecture stored with its weights goes through the same table as create_model."""

from __future__ import annotations

import pytest
import torch

from deeplab_resnet.models import create_model, model_from_architecture
from deeplab_resnet.models.resnet import RESNET101_BLOCKS, STAGES


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["deeplab_v2_resnet_tiny", "deeplab_v2_resnet101"])
def test_architecture_round_trip_keeps_the_variant(name: str) -> None:
    with torch.device("meta"):  # shapes only
        model = create_model(name, num_classes=5)
        again = model_from_architecture(model.architecture, num_classes=5)
    assert again.architecture == model.architecture and again.architecture["name"] == name
    assert _shapes(again) == _shapes(model)


def test_architecture_without_a_name_is_resnet101_and_an_unknown_name_is_refused() -> None:
    with torch.device("meta"):
        model = model_from_architecture({"blocks": [1, 1, 1, 1], "width": 8}, num_classes=3)
        assert model.architecture["name"] == "deeplab_v2_resnet101" and model.architecture["blocks"] == [1, 1, 1, 1]
        with pytest.raises(ValueError, match="unknown model 'resnet50'"):
            model_from_architecture({"name": "resnet50"})


def test_stage_table_gives_resnet101_widths_strides_and_dilations() -> None:
    # res2..res5 of ResNet-101 in DeepLab-v2: widths 64..512, stride 2 only in res3, dilations 2 and 4 in res4/res5.
    assert STAGES == ((2, 64, 1, 1), (3, 128, 2, 1), (4, 256, 1, 2), (5, 512, 1, 4))
    with torch.device("meta"):
        backbone = create_model("deeplab_v2_resnet101").backbone
    assert len(backbone.block_names) == sum(RESNET101_BLOCKS) == 33
    assert backbone.res4b22.branch2b.dilation == (2, 2) and backbone.res5c.branch2b.dilation == (4, 4)
    assert backbone.res3a.branch2a.stride == (2, 2) and backbone.out_channels == 2048
