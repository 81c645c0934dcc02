"""ModelSpec: what a network's logits mean, carried by DeepLabV2 and stored in exported files."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
import torch
from conftest import tiny_model

from deeplab_resnet import CAMVID, VOC, DeepLabError
from deeplab_resnet.models import MSC, ModelSpec, create_model
from deeplab_resnet.resize import resize_bilinear, scaled_size


def test_the_model_reads_everything_from_its_spec():
    model = create_model("deeplab_v2_resnet_tiny", num_classes=11, convention="tf", dataset=CAMVID)
    spec = model.spec
    assert (spec.convention, spec.dataset, spec.num_classes) == ("tf", CAMVID, 11)
    assert spec.mean_bgr == CAMVID.mean_bgr
    assert (model.convention, model.dataset, model.num_classes, model.mean_bgr) == ("tf", CAMVID, 11, CAMVID.mean_bgr)
    assert model.architecture == {"name": "deeplab_v2_resnet_tiny", "blocks": [1, 1, 1, 1], "width": 8,
                                  "aspp_rates": [6, 12, 18, 24]}  # fmt: skip
    assert model.classifier(torch.zeros(1, model.backbone.out_channels, 2, 2)).shape[1] == spec.num_classes


def test_the_spec_is_immutable_and_copies_share_it():
    model = tiny_model()
    spec = model.spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.convention = "tf"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.architecture["width"] = 99  # type: ignore[index]
    edited = model.architecture
    edited["blocks"].append(7)
    assert model.architecture["blocks"] == [1, 1, 1, 1]  # the property hands out a copy
    assert copy.deepcopy(model).spec is spec
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(ValueError, match="convention"):
        ModelSpec("torch", VOC)  # type: ignore[arg-type]


def test_renaming_the_classes_replaces_the_spec_and_checks_the_count():
    model = tiny_model(num_classes=11)
    before = model.spec
    model.dataset = CAMVID
    assert model.spec.dataset == CAMVID and before.dataset != CAMVID
    assert model.spec.convention == before.convention and model.spec.architecture == before.architecture
    with pytest.raises(ValueError, match="21 classes"):
        model.dataset = VOC


def test_metadata_round_trip_and_its_errors():
    spec = tiny_model("tf").spec
    meta = spec.to_metadata()
    assert meta["convention"] == "tf" and meta["num_classes"] == 21 and meta["mean_bgr"] == list(VOC.mean_bgr)
    back = ModelSpec.from_metadata(meta)
    assert back == spec and dict(back.architecture) == dict(spec.architecture)
    with pytest.raises(DeepLabError, match="m.onnx: no deeplab_resnet model description"):
        ModelSpec.from_metadata({"num_classes": 21}, "m.onnx")
    with pytest.raises(DeepLabError, match="m.onnx: convention"):
        ModelSpec.from_metadata({**meta, "convention": "keras"}, "m.onnx")


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_msc_over_a_plain_callable_equals_the_max_of_the_resized_scales(convention):
    model = tiny_model(convention)
    x = torch.randn(1, 3, 41, 33) * 50
    scales = (1.0, 0.5)

    def network(batch: torch.Tensor) -> torch.Tensor:  # not a module: MSC only calls it
        return model(batch)

    with torch.no_grad():
        fused = MSC(network, scales, convention=convention).eval()(x)
        # Brute force: each scale's logits, resized to the first scale's grid, element-wise max.
        small = resize_bilinear(x, scaled_size(41, 33, 0.5, convention), convention)
        full = model(x)
        expected = torch.maximum(full, resize_bilinear(model(small), full.shape[-2:], convention))
    assert torch.allclose(fused, expected, rtol=1e-5, atol=1e-5)
