"""ONNX / TorchScript / torch.export against PyTorch, at odd and even sizes, in both conventions."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from deeplab_resnet.cli import main
from deeplab_resnet.inference.export import ParitySame, export_model, export_onnx
from deeplab_resnet.inference.metadata import TORCHSCRIPT_FILE, read_onnx_metadata
from deeplab_resnet.inference.runtime import OnnxRuntimeBackend
from deeplab_resnet.inference.verify import verify_export
from deeplab_resnet.models import ModelSpec
from deeplab_resnet.models.layers import logit_size, same_pads

SIZES = ((32, 32), (33, 33), (40, 31), (31, 46))


@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("size", [8, 9, 12, 13])
def test_parity_same_equals_tf_same_padding(window, size):
    x = torch.randn(1, 2, size, size + 1)
    top, bottom = same_pads(size, window, 2)
    left, right = same_pads(size + 1, window, 2)
    expected = F.pad(x, (left, right, top, bottom))
    assert torch.equal(ParitySame(window)(x), expected)


def test_same_pads_hand_values():
    # SAME, stride 2: 7x7 pads (2, 3) on even sizes and (3, 3) on odd ones; 3x3 pads (0, 1) / (1, 1).
    assert same_pads(8, 7, 2) == (2, 3) and same_pads(9, 7, 2) == (3, 3)
    assert same_pads(8, 3, 2) == (0, 1) and same_pads(9, 3, 2) == (1, 1)


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_onnx_matches_pytorch_at_odd_and_even_sizes(convention, tmp_path):
    model = tiny_model(convention)
    path = export_onnx(model, tmp_path / "m.onnx")
    for row, (h, w) in zip(verify_export(model, path, "onnx", sizes=SIZES), SIZES):
        assert row["size"] == [h, w]  # (agreement() raises if the logit shapes differ)
        assert row["rel_l2"] < 1e-5, row
        assert row["argmax_agreement"] == 1.0
    out = OnnxRuntimeBackend(path).logits(torch.zeros(2, 3, 57, 42))
    assert tuple(out.shape) == (2, 21, *logit_size(57, 42, convention))
    meta = read_onnx_metadata(path)
    assert meta["convention"] == convention and meta["num_classes"] == 21
    assert meta["mean_bgr"] == list(model.mean_bgr)
    spec = ModelSpec.from_metadata(meta)
    assert spec == model.spec and dict(spec.architecture) == model.architecture


def test_torchscript_is_dynamic_in_the_tf_convention(tmp_path):
    model = tiny_model("tf")
    path = export_model(model, tmp_path / "m.pt", "torchscript")
    for row in verify_export(model, path, "torchscript", sizes=SIZES[:2]):
        assert row["rel_l2"] < 1e-6, row
    files = {TORCHSCRIPT_FILE: ""}
    torch.jit.load(str(path), _extra_files=files)
    assert ModelSpec.from_metadata(json.loads(files[TORCHSCRIPT_FILE])) == model.spec


@pytest.mark.slow
@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_torch_export_program_matches(convention, tmp_path):
    model = tiny_model(convention)
    path = export_model(model, tmp_path / "m.pt2", "torch.export")
    for row in verify_export(model, path, "torch.export", sizes=SIZES):
        assert row["rel_l2"] < 1e-6, row


def test_export_cli(tiny_weights, tmp_path, capsys):
    out = tmp_path / "tiny.onnx"
    assert main(["export", "--weights", str(tiny_weights), "-o", str(out), "--fold-bn"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "65x49: rel-L2" in text


def test_export_cli_bad_input(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
