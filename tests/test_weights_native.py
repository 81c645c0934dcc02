"""The native weight file: bit-exact round trip, metadata, and clear errors."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from deeplab_resnet import CAMVID, DeepLabError, load_model, save_weights
from deeplab_resnet.weights import read_native


def test_round_trip_is_bit_exact_with_metadata(tmp_path):
    model = tiny_model("tf", num_classes=11)
    model.dataset = CAMVID
    path = tmp_path / "w.safetensors"
    save_weights(model, path, source="unit test")
    state, meta = read_native(path)
    assert meta.convention == "tf" and meta.source == "unit test"
    assert meta.dataset == CAMVID and meta.num_classes == 11
    original = model.state_dict()
    assert state.keys() == original.keys()
    assert all(torch.equal(state[k], original[k]) for k in state)
    loaded = load_model(path)
    assert loaded.convention == "tf" and loaded.dataset.class_names == CAMVID.class_names
    x = torch.randn(1, 3, 35, 30)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_class_count_mismatch_is_a_clear_error(tiny_weights):
    with pytest.raises(DeepLabError, match="21 classes but 5 were asked"):
        load_model(tiny_weights, num_classes=5)


def test_not_restore_last_gives_a_new_classifier(tiny_weights):
    model = load_model(tiny_weights, num_classes=5, not_restore_last=True)
    assert model.num_classes == 5
    reference = load_model(tiny_weights)
    assert torch.equal(model.backbone.conv1.weight, reference.backbone.conv1.weight)


def test_foreign_and_damaged_files(tmp_path, tiny_weights):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(DeepLabError, match="not a deeplab_resnet weight file"):
        load_model(foreign)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(tiny_weights.read_bytes()[:5000])
    with pytest.raises(DeepLabError):
        load_model(truncated)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DeepLabError, match="unsupported weight file"):
        load_model(text)
    with pytest.raises(DeepLabError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_wrong_shapes_are_named(tmp_path):
    small = tiny_model()
    path = tmp_path / "w.safetensors"
    save_weights(small, path)
    from deeplab_resnet.models import create_model
    from deeplab_resnet.weights import load_state

    other = create_model("deeplab_v2_resnet_tiny", width=16)
    state, _ = read_native(path)
    with pytest.raises(DeepLabError, match=r"tensor backbone\.\S+ has shape \(\d+,?.*\), the model expects"):
        load_state(other, state)
