"""Caffemodels written through a protobuf schema with Caffe's field numbers, both formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_weights import caffe_layers, random_tf_arrays, reference_caffe, rel_l2, tf_variables, write_caffemodel

from deeplab_resnet import DeepLabError, load_model
from deeplab_resnet.cli import main
from deeplab_resnet.models.naming import original_to_state_key
from deeplab_resnet.weights.convert import convert
from deeplab_resnet.weights.native import read_native

TINY = (1, 1, 1, 1)


@pytest.fixture(scope="module")
def tiny_arrays():
    return random_tf_arrays(tf_variables(TINY, width=8), seed=3)


@pytest.mark.parametrize("fmt", ["layer", "layers"])
def test_caffemodel_converts_exactly_with_scale_factor(tmp_path, tiny_arrays, fmt):
    layers = caffe_layers(tiny_arrays, scale_factor=7.25)
    src = tmp_path / "train_iter_20000.caffemodel"
    write_caffemodel(src, layers, fmt, legacy_shapes=fmt == "layers")
    dst = tmp_path / "out.safetensors"
    report = convert(src, dst)
    assert report.convention == "caffe" and report.tensors == len(tiny_arrays) == 93
    state, meta = read_native(dst)
    assert meta.convention == "caffe" and meta.num_classes == 21
    # Per tensor: every source tensor lands on its key, OIHW, BN statistics divided by S.
    blobs = {name: b for name, _, b in layers}
    for name, _a in tiny_arrays.items():
        layer, param = name.split("/")
        got = state[original_to_state_key(name)].numpy()
        if param == "weights":
            expected = blobs[layer][0]
        elif param == "biases":
            expected = blobs[layer][1]
        elif param in ("moving_mean", "moving_variance"):
            expected = blobs[layer][0 if param == "moving_mean" else 1] / blobs[layer][2][0]
        else:
            expected = blobs["scale" + layer[2:]][0 if param == "gamma" else 1]
        np.testing.assert_allclose(got, expected, rtol=1e-7, atol=0)
    assert len(state) == len(tiny_arrays)
    # Logits against a numpy forward written from the Caffe blobs.
    x = np.random.default_rng(0).uniform(-100, 100, (1, 3, 37, 30)).astype(np.float32)
    with torch.no_grad():
        logits = load_model(dst)(torch.from_numpy(x)).numpy()
        on_the_fly = load_model(src)(torch.from_numpy(x)).numpy()
    assert rel_l2(logits, reference_caffe(layers, x, TINY)) <= 1e-5
    assert np.array_equal(logits, on_the_fly)


def test_zero_scale_factor_means_zero_statistics(tmp_path, tiny_arrays):
    layers = caffe_layers(tiny_arrays, scale_factor=0.0)
    src = tmp_path / "m.caffemodel"
    write_caffemodel(src, layers)
    state, _ = read_native(convert(src, tmp_path / "o.safetensors") and tmp_path / "o.safetensors")
    assert (
        not state["backbone.bn_conv1.running_var"].any() and not state["backbone.res5a.bn_branch2c.running_mean"].any()
    )


def _expect_error(tmp_path, src, pattern, **kwargs):
    dst = tmp_path / "never.safetensors"
    with pytest.raises(DeepLabError, match=pattern):
        convert(src, dst, **kwargs)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]  # no temp file left


def test_broken_and_foreign_caffemodels(tmp_path, tiny_arrays):
    layers = caffe_layers(tiny_arrays, 2.0)
    good = tmp_path / "good.caffemodel"
    write_caffemodel(good, layers)
    data = good.read_bytes()
    (tmp_path / "trunc.caffemodel").write_bytes(data[: len(data) // 2])
    _expect_error(tmp_path, tmp_path / "trunc.caffemodel", "truncated or corrupt")
    (tmp_path / "garbage.caffemodel").write_bytes(b"\xff" * 64 + data[64:])
    _expect_error(tmp_path, tmp_path / "garbage.caffemodel", "not a readable caffemodel")
    # Another architecture: a VGG DeepLab-v1 style net.
    vgg = [("conv1_1", "Convolution", [np.zeros((64, 3, 3, 3), np.float32), np.zeros(64, np.float32)]),
           ("fc8_voc12", "Convolution", [np.zeros((21, 1024, 1, 1), np.float32), np.zeros(21, np.float32)])]  # fmt: skip
    write_caffemodel(tmp_path / "vgg.caffemodel", vgg)
    _expect_error(tmp_path, tmp_path / "vgg.caffemodel", r"not a DeepLab-v2 ResNet .*conv1_1/weights")
    # A ResNet of another depth/naming: res4 blocks named res4a, res4b (ResNet-50 style).
    renamed = [(n.replace("res4a", "res4x") if n.startswith("res4a") else n, k, b) for n, k, b in layers]
    write_caffemodel(tmp_path / "r50.caffemodel", renamed)
    _expect_error(tmp_path, tmp_path / "r50.caffemodel", r"stage res4 has blocks \[res4x\]")
    # A wrong shape is named by layer and blob.
    bad = [(n, k, [b[:, :4] if n == "res3a_branch2b" else b for b in bl]) for n, k, bl in layers]
    write_caffemodel(tmp_path / "shape.caffemodel", bad)
    _expect_error(
        tmp_path, tmp_path / "shape.caffemodel", r"layer 'res3a_branch2b' \(Convolution\) blob 0 .* wrong shape"
    )
    # A missing Scale layer leaves gamma/beta missing.
    write_caffemodel(tmp_path / "noscale.caffemodel", [x for x in layers if x[0] != "scale3a_branch1"])
    _expect_error(tmp_path, tmp_path / "noscale.caffemodel", r"2 tensor\(s\) missing: bn3a_branch1/beta")
    # An extra layer with weights is not silently dropped.
    write_caffemodel(tmp_path / "extra.caffemodel", [*layers, ("res5a_branch3", "Convolution", [layers[0][2][0]])])
    _expect_error(tmp_path, tmp_path / "extra.caffemodel", r"unexpected tensor.*res5a_branch3")


def test_new_classifier_and_shared_multiscale_copies(tmp_path, tiny_arrays):
    layers = caffe_layers(tiny_arrays, 1.5)
    # An init model: a classifier of another class count under another name, plus MSC copies.
    init = [
        (n.replace("fc1_voc12", "fc1_coco"), k, [b[:91] if b.shape[0] == 21 else b for b in bl]) for n, k, bl in layers
    ]
    init.append(
        (
            "res2a_branch2a_res075",
            "Convolution",
            [b.copy() for b in dict((n, b) for n, _, b in layers)["res2a_branch2a"]],
        )
    )
    src = tmp_path / "init.caffemodel"
    write_caffemodel(src, init)
    _expect_error(tmp_path, src, r"has no classifier .*--not-restore-last")
    report = convert(src, tmp_path / "init.safetensors", not_restore_last=True, num_classes=5)
    assert report.classifier_skipped and report.num_classes == 5 and report.ignored == ("res2a_branch2a_res075",)
    state, meta = read_native(tmp_path / "init.safetensors")
    assert meta.num_classes == 5 and state["classifier.fc1_voc12_c0.weight"].shape == (5, 256, 3, 3)
    blobs = {n: b for n, _, b in init}
    assert np.array_equal(state["backbone.res2a.branch2a.weight"].numpy(), blobs["res2a_branch2a"][0])
    # A copy that differs from its base is an error, not a silent pick.
    init[-1][2][0][0, 0, 0, 0] += 1
    write_caffemodel(src, init)
    _expect_error(tmp_path, src, "should share 'res2a_branch2a'")
    # The train script's path: load_model on the original file with a new class count.
    write_caffemodel(src, init[:-1])
    model = load_model(src, num_classes=5, not_restore_last=True)
    assert model.num_classes == 5 and model.convention == "caffe"


def test_convert_command(tmp_path, tiny_arrays, capsys):
    src = tmp_path / "m.caffemodel"
    write_caffemodel(src, caffe_layers(tiny_arrays, 2.0))
    assert main(["convert", str(src), str(tmp_path / "m.safetensors")]) == 0
    assert "93 tensors" in capsys.readouterr().out
    assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--num-classes", "5"]) == 2
    err = capsys.readouterr().err
    assert "21 classes but 5" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()


def test_caffemodel_recognised_by_content(tmp_path, tiny_arrays):
    for fmt in ("layer", "layers"):
        src = tmp_path / f"renamed_{fmt}.bin"  # no .caffemodel suffix
        write_caffemodel(src, caffe_layers(tiny_arrays, 2.0), fmt)
        assert convert(src, tmp_path / "o.safetensors").kind == "caffe"
    (tmp_path / "notes.bin").write_bytes(b"\x0a\x05hello world")
    with pytest.raises(DeepLabError, match="not an original weight file"):
        convert(tmp_path / "notes.bin", tmp_path / "x.safetensors")
