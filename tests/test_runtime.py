"""Inference backends: torch and onnxruntime give the same logits through one interface."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_model

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.inference.optimize import agreement, parse_options
from deeplab_resnet.inference.runtime import OnnxRuntimeBackend, backend_model, batched_logits, make_backend


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


def test_batched_logits_groups_same_sizes_and_keeps_order():
    model = tiny_model()
    backend = make_backend("torch", model)
    calls = []
    original = backend.logits
    backend.logits = lambda b: calls.append(tuple(b.shape)) or original(b)
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, *hw, generator=g) * 50 for hw in ((33, 40), (25, 25), (33, 40), (33, 40), (25, 25))]
    out = batched_logits(backend, images, max_batch=2)
    assert sorted(calls) == [(1, 3, 33, 40), (2, 3, 25, 25), (2, 3, 33, 40)]
    for x, y in zip(images, out):
        with torch.no_grad():
            assert torch.allclose(y, model(x[None])[0], rtol=1e-4, atol=1e-4)


def test_segmenter_runs_on_the_onnxruntime_backend(tmp_path):
    import numpy as np

    from deeplab_resnet.inference.segmenter import Segmenter
    from deeplab_resnet.models import MSC
    from deeplab_resnet.preprocess import to_input

    model = tiny_model("caffe")
    rgb = np.random.default_rng(0).integers(0, 256, (45, 38, 3), dtype=np.uint8)
    x = to_input(rgb, model.mean_bgr)[None]
    for scales in ((1.0,), (1.0, 0.5)):
        with torch.no_grad():
            reference = MSC(model, scales).eval()(x) if len(scales) > 1 else model(x)
        seg = Segmenter(backend_model(model, make_backend("onnxruntime", model, cache_dir=tmp_path)), scales=scales)
        assert agreement(reference, seg.logits(rgb)[None])["rel_l2"] < 1e-5
        labels = model.upsample(reference, rgb.shape[:2])[0].argmax(0).numpy()
        assert (seg(rgb).labels == labels).mean() > 0.999


def test_segment_cli_backend_onnxruntime(tiny_weights, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from deeplab_resnet.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    image = tmp_path / "im.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)).save(image)
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        assert main(["segment", str(image), "--weights", str(tiny_weights), "-o", str(out), "--backend", backend]) == 0
        outputs[backend] = np.asarray(Image.open(out / "im.png"))
    assert list((tmp_path / "cache" / "deeplab_resnet" / "onnx").glob("*.onnx"))
    assert (outputs["torch"] == outputs["onnxruntime"]).mean() > 0.999


def test_evaluate_cli_backend_onnxruntime(tiny_weights, tmp_path, monkeypatch, voc_fixture):
    import json

    from deeplab_resnet.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    reports = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        argv = [
            "evaluate", "--data-dir", str(voc_fixture), "--data-list", str(voc_fixture / "list_val.txt"),
            "--weights", str(tiny_weights), "--limit", "2", "--quiet", "-o", str(out), "--backend", backend,
        ]  # fmt: skip
        assert main(argv) == 0
        reports[backend] = json.loads((out / "report.json").read_text())
    assert list((tmp_path / "cache" / "deeplab_resnet" / "onnx").glob("*.onnx"))
    assert reports["onnxruntime"]["mean_iou"] == pytest.approx(reports["torch"]["mean_iou"], abs=1e-3)
