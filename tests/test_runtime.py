"""Inference backends: torch and onnxruntime give the same logits through one interface, and a
backend is a network the Segmenter and MSC run with the model's spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from deeplab_resnet.errors import DeepLabError
from deeplab_resnet.inference.agreement import agreement
from deeplab_resnet.inference.optimize import parse_options
from deeplab_resnet.inference.runtime import OnnxRuntimeBackend, make_backend
from deeplab_resnet.inference.segmenter import Segmenter
from deeplab_resnet.models import MSC
from deeplab_resnet.preprocess import to_input
from deeplab_resnet.resize import resize_bilinear


def test_onnxruntime_and_torch_backends_agree_and_export_is_cached(tmp_path):
    model = tiny_model("tf")
    x = torch.randn(2, 3, 35, 44) * 50
    torch_logits = make_backend("torch", model).logits(x)
    ort = make_backend("onnxruntime", model, cache_dir=tmp_path, threads=1)
    assert isinstance(ort, OnnxRuntimeBackend) and ort.spec == model.spec and ort.spec.convention == "tf"
    stats = agreement(torch_logits, ort(x))
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


def _image(height: int = 45, width: int = 38) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _confident(logits: torch.Tensor, margin: float = 1e-3) -> np.ndarray:
    """Pixels whose top two classes differ by more than ``margin``: rounding cannot swap them."""
    top2 = logits.topk(2, dim=0).values
    return (top2[0] - top2[1] > margin).numpy()


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_segmenter_on_onnxruntime_backend_gives_the_torch_labels(convention, tmp_path):
    model = tiny_model(convention)
    rgb = _image()
    backend = make_backend("onnxruntime", model, cache_dir=tmp_path, threads=1)
    from_backend = Segmenter(backend, model.spec)(rgb, return_logits=True)
    # The independent reference: the torch model on the preprocessed image, the convention's resize.
    with torch.no_grad():
        reference = resize_bilinear(model(to_input(rgb, model.mean_bgr)[None]), rgb.shape[:2], convention)[0]
    np.testing.assert_allclose(from_backend.logits.transpose(2, 0, 1), reference.numpy(), rtol=1e-4, atol=1e-4)
    from_model = Segmenter(model)(rgb).labels
    confident = _confident(reference)
    assert confident.mean() > 0.99
    assert np.array_equal(from_backend.labels[confident], from_model[confident])
    assert np.array_equal(from_model, reference.argmax(0).numpy().astype(np.uint8))
    assert from_backend.dataset == model.dataset


def test_segmenter_multi_scale_over_a_backend(tmp_path):
    model = tiny_model("caffe")
    rgb = _image()
    x = to_input(rgb, model.mean_bgr)[None]
    backend = make_backend("onnxruntime", model, cache_dir=tmp_path, threads=1)
    scales = (1.0, 0.5)
    with torch.no_grad():
        reference = MSC(model, scales).eval()(x)
    # Segmenter(network, spec) with an MSC over the backend, and the Segmenter's own MSC over it.
    msc = MSC(backend, scales, convention=model.spec.convention).eval()
    for seg in (Segmenter(msc, model.spec), Segmenter(backend, model.spec, scales=scales)):
        assert agreement(reference, seg.logits(rgb)[None])["rel_l2"] < 1e-5
        upsampled = resize_bilinear(reference, rgb.shape[:2], "caffe")[0]
        confident = _confident(upsampled)
        assert np.array_equal(seg(rgb).labels[confident], upsampled.argmax(0).numpy()[confident])


def test_a_network_without_a_spec_is_refused(tmp_path):
    model = tiny_model()
    with pytest.raises(DeepLabError, match="pass the model's spec"):
        Segmenter(make_backend("torch", model))
    with pytest.raises(ValueError, match="needs its convention"):
        MSC(make_backend("torch", model), (1.0, 0.5))


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
