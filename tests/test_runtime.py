"""Inference backends: torch and onnxruntime give the same logits through one interface."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.fast import agreement, parse_options
from deeplab_resnet.runtime import OnnxRuntimeBackend, make_backend


def test_onnxruntime_and_torch_backends_agree_and_export_is_cached(tmp_path):
    model = tiny_model("tf")
    x = torch.randn(2, 3, 35, 44) * 50
    torch_logits = make_backend("torch", model).logits(x)
    ort = make_backend("onnxruntime", model, cache_dir=tmp_path, threads=1)
    assert isinstance(ort, OnnxRuntimeBackend) and ort.convention == "tf"
    stats = agreement(torch_logits, ort.logits(x))
    assert stats["rel_l2"] < 1e-5 and stats["argmax_agreement"] == 1.0
    files = list(tmp_path.glob("*.onnx"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    make_backend("onnxruntime", model, cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == stamp  # same weights: no second export
    fast = make_backend("torch", model, options=parse_options("fold+cl"))
    assert agreement(torch_logits, fast.logits(x))["rel_l2"] < 1e-5


def test_backend_errors(tmp_path):
    with pytest.raises(DeepLabError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(DeepLabError, match="not a loadable ONNX"):
        OnnxRuntimeBackend(bad)
    with pytest.raises(DeepLabError, match="unknown backend"):
        make_backend("tensorrt", tiny_model())
