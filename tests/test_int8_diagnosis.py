"""benchmarks/int8_diagnosis.py on the tiny model: two routes to the int8 error agree, and the fragility
figures behave as they must."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO


def test_int8_diagnosis_on_the_tiny_model(tmp_path, voc_fixture, capsys):
    pytest.importorskip("onnxruntime")
    spec = importlib.util.spec_from_file_location("int8_diagnosis", REPO / "benchmarks" / "int8_diagnosis.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "diag.json"
    args = ["--model", "deeplab_v2_resnet_tiny", "--calibration-images", "2", "--score-images", "2",
            "--data-dir", str(voc_fixture), "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]  # fmt: skip
    assert script.main(args) == 0
    report = json.loads(out.read_text())
    assert [row["image"] for row in report["per_image"]] == ["2007_000129.jpg", "2007_004189.jpg"]
    # the error along the network, in network order, ends with the logits' error of the unfused QDQ graph
    # that OnnxRuntimeBackend(optimize=False) gave: onnxruntime's debugging tool and our run agree
    blocks = report["block_errors"]
    assert list(blocks) == ["res2a", "res3a", "res4a", "res5a", "logits"]
    assert blocks["logits"] == pytest.approx(report["per_image"][0]["unfused_qdq"]["rel_l2"], rel=1e-4)
    for row in report["per_image"]:
        # on this small model the int8 kernels compute what the QDQ graph says (7-bit weights where AVX2
        # would saturate); on ResNet-101 small differences grow, but to errors of the grid's own size
        assert row["kernels_vs_unfused"]["rel_l2"] < 0.1
        assert 0 < row["int8"]["argmax_agreement"] <= 1
    fragility = report["fragility"]
    noise = [
        fragility["agreement_under_logit_noise"][k] for k in sorted(fragility["agreement_under_logit_noise"], key=float)
    ]
    assert noise == sorted(noise, reverse=True) and noise[0] <= 1.0  # more noise never keeps more labels
    margins = list(fragility["margin_quantiles"].values())
    assert margins == sorted(margins) and margins[0] >= 0
    assert all(g > 0 for g in fragility["gain_of_1pct_noise"].values())
    assert "1% noise grows by the logits to: input " in capsys.readouterr().out


def test_the_cpu_benchmarks_measure_given_weights_instead_of_the_random_model(tiny_weights, voc_fixture):
    import argparse

    import torch
    from conftest import tiny_model

    from deeplab_resnet.bench.realistic import benchmark_model

    given = benchmark_model(argparse.Namespace(weights=tiny_weights, model="unused"), [])
    expected = tiny_model().state_dict()
    assert given.state_dict().keys() == expected.keys()
    assert all(torch.equal(given.state_dict()[k], v) for k, v in expected.items())
    images = sorted((voc_fixture / "JPEGImages").glob("*.jpg"))[:4]
    random_model = benchmark_model(argparse.Namespace(weights=None, model="deeplab_v2_resnet_tiny"), images)
    bn = "backbone.bn_conv1.running_var"  # calibrated on the images: not the given file's
    assert bn in expected and not torch.equal(random_model.state_dict()[bn], expected[bn])
