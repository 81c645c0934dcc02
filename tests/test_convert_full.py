"""The full 528-tensor ResNet-101 (real names and shapes from original_tf_variables.txt).

Slow (TensorFlow writes ~180 MB twice, protobuf serialises the caffemodel): run with
``pytest -m slow tests/test_convert_full.py``. Speed and memory are measured separately,
see docs/original_weights.md.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path
from fixtures_weights import (
    caffe_layers,
    random_tf_arrays,
    reference_caffe,
    reference_tf,
    reference_variables,
    rel_l2,
    tf_variables,
    write_caffemodel,
    write_tf_checkpoints,
)  # fmt: skip

from deeplab_resnet import load_model
from deeplab_resnet.models.naming import original_to_state_key
from deeplab_resnet.weights.convert import convert
from deeplab_resnet.weights.native import read_native

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_arrays():
    shared_path("reference", "original_tf_variables.txt")
    variables = reference_variables()
    assert len(variables) == 528 and variables == tf_variables()  # the reference list is the network
    arrays = random_tf_arrays(variables, seed=1)
    assert sum(a.size for a in arrays.values()) == 44_153_876
    return arrays


def _per_tensor(state, arrays):
    assert len(state) == 528
    for name, a in arrays.items():
        expected = a.transpose(3, 2, 0, 1) if a.ndim == 4 else a
        assert np.array_equal(state[original_to_state_key(name)].numpy(), expected), name


def test_full_tf_v1_and_v2(tmp_path, full_arrays):
    write_tf_checkpoints(tmp_path, [(full_arrays, tmp_path / "deeplab_resnet.ckpt", tmp_path / "model.ckpt", True)])
    x = np.random.default_rng(3).uniform(-100, 100, (1, 34, 27, 3)).astype(np.float32)
    reference = reference_tf(full_arrays, x).transpose(0, 3, 1, 2)
    for src in (tmp_path / "deeplab_resnet.ckpt", tmp_path / "model.ckpt-20000"):
        dst = tmp_path / "out.safetensors"
        report = convert(src, dst)
        assert report.tensors == 528 and report.convention == "tf"
        _per_tensor(read_native(dst)[0], full_arrays)
        with torch.no_grad():
            logits = load_model(dst)(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        error = rel_l2(logits, reference)
        print(f"{src.name}: relative L2 of the logits {error:.2e}")
        assert error <= 1e-5


def test_full_caffemodel(tmp_path, full_arrays):
    layers = caffe_layers(full_arrays, scale_factor=999.0)
    src = tmp_path / "train_iter_20000.caffemodel"
    write_caffemodel(src, layers)
    dst = tmp_path / "out.safetensors"
    assert convert(src, dst).tensors == 528
    state, meta = read_native(dst)
    assert meta.convention == "caffe"
    blobs = {n: b for n, _, b in layers}
    assert np.allclose(
        state["backbone.res4b22.bn_branch2b.running_var"].numpy(),
        blobs["bn4b22_branch2b"][1] / 999.0,
        rtol=1e-7,
        atol=0,
    )
    x = np.random.default_rng(4).uniform(-100, 100, (1, 3, 33, 41)).astype(np.float32)
    with torch.no_grad():
        logits = load_model(dst)(torch.from_numpy(x)).numpy()
    error = rel_l2(logits, reference_caffe(layers, x))
    print(f"caffemodel: relative L2 of the logits {error:.2e}")
    assert error <= 1e-5
