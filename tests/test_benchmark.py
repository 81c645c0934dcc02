"""The benchmark library and command: FLOP counts, interleaved timing, the training step, the CLI."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import tiny_model
from torch import nn

from deeplab_resnet.bench.flops import count_flops, training_step_flops
from deeplab_resnet.bench.realistic import calibrate_batchnorm
from deeplab_resnet.bench.suites import decode_augment_sample, speedup_notes, training_step_fn
from deeplab_resnet.bench.timing import Result, format_table, time_interleaved
from deeplab_resnet.cli import main
from deeplab_resnet.models import create_model
from deeplab_resnet.training.config import TrainConfig
from deeplab_resnet.training.recipe import param_groups


def test_count_flops_hand_computed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 6, 1, groups=2))
    # conv a: 4 x 5 x 5 outputs (9x9 input, stride 2) x 3*3*3 MACs; conv b: 6 x 5 x 5 x 2 MACs.
    macs = 4 * 5 * 5 * 27 + 6 * 5 * 5 * 2
    assert count_flops(net, 9, 9) == 2 * macs
    assert count_flops(net, 9, 9, batch=3) == 6 * macs


def test_flop_counter_gives_the_known_resnet101_figures():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model("deeplab_v2_resnet101", num_classes=21)
    assert count_flops(model, 513, 513) / 1e9 == pytest.approx(377.8, abs=0.05)
    assert count_flops(model, 321, 321) / 1e9 == pytest.approx(150.3, abs=0.05)
    assert training_step_flops(model, 321, 10) / 1e12 == pytest.approx(4.50, abs=0.01)
    assert training_step_flops(model, 321, 10, (1.0, 0.75, 0.5)) / 1e12 == pytest.approx(8.26, abs=0.01)


def test_time_interleaved_rotates_the_order():
    calls: list[str] = []
    cases = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = time_interleaved(cases, repeats=3, warmup=1)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_result_statistics_and_table():
    r = Result("forward", [0.3, 0.1, 0.2], items=2, flops=4e11)
    assert r.median_s == 0.2 and r.spread == (0.1, 0.3)
    assert r.items_per_s == pytest.approx(10.0) and r.tflops == pytest.approx(2.0)
    d = r.to_dict(peak_tflops=8.0)
    assert d["fraction_of_peak"] == pytest.approx(0.25)
    table = format_table([r, Result("crf", [], note="skipped: x")], peak_tflops=8.0)
    assert "200.0" in table and "100.0..300.0" in table and "25.0%" in table and "skipped: x" in table


def test_training_step_updates_with_the_original_groups_and_keeps_bn_frozen():
    model = tiny_model().train()
    groups = param_groups(model, TrainConfig())  # what the step's optimizer is built from
    assert [g["lr_mult"] for g in groups] == [1, 10, 20]
    assert groups[2]["weight_decay"] == 0.0
    bn = model.backbone.bn_conv1
    stats = (bn.running_mean.clone(), bn.weight.clone())
    w0 = model.backbone.conv1.weight.clone()
    x = torch.randn(2, 3, 33, 33) * 50
    labels = torch.randint(0, 21, (2, 33, 33))
    labels[:, :5] = 255
    step = training_step_fn(model, x, labels, scales=(1.0, 0.75))
    loss = step()
    # The independent loss: 3 MSC outputs (two scales and the fused max), each CE at its grid.
    model.eval()  # frozen BN: eval and train give the same forward
    from deeplab_resnet.models.msc import MSC

    with torch.no_grad():
        model.backbone.conv1.weight.copy_(w0)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.weight, stats[1])
    assert loss > 0 and torch.isfinite(torch.tensor(loss))
    net = MSC(model, (1.0, 0.75)).train()
    assert len(net(x)) == 3


def test_calibrate_batchnorm_sets_the_statistics_of_the_batch():
    model = tiny_model()
    x = torch.randn(3, 3, 33, 33) * 50
    calibrate_batchnorm(model, [x[:2], x[2:]])
    with torch.no_grad():
        y = model.backbone.conv1(x)  # what bn_conv1 sees
    bn = model.backbone.bn_conv1
    assert torch.allclose(bn.running_mean, y.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert torch.allclose(bn.running_var, y.var((0, 2, 3), unbiased=True), rtol=1e-3)
    assert bn.frozen and not model.training


def test_decode_augment_sample(voc_fixture):
    from deeplab_resnet.data.lists import read_list

    pair = read_list(voc_fixture, voc_fixture / "list_val.txt")[0]
    x, y = decode_augment_sample(pair, crop=321, mean_bgr=(104.0, 117.0, 123.0), rng=random.Random(3))
    assert x.shape == (3, 321, 321) and x.dtype == torch.float32
    assert y.shape == (321, 321) and set(y.unique().tolist()) <= set(range(21)) | {255}


def test_benchmark_cli_on_the_tiny_model(tmp_path, capsys, voc_fixture):
    out = tmp_path / "bench.json"
    argv = [
        "benchmark", "--model", "deeplab_v2_resnet_tiny", "--size", "33", "--repeats", "2",
        "--sections", "forward,data,crf", "--paths", "eager,default,onnxruntime,openvino,openvino-int8",
        "--data-samples", "2",
        "--data-dir", str(voc_fixture), "--json", str(out), "--peak-tflops", "1",
    ]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "forward 33 b1 onnxruntime" in text and "fastest accurate path" in text
    assert "target" not in text.lower() and "missed" not in text.lower()  # nothing to compare with: not given
    rows = json.loads(out.read_text())["results"]
    forward = {r["extra"]["path"]: r for r in rows if r["name"].startswith("forward")}
    assert set(forward) == {"eager-fp32", "fold+cl", "onnxruntime", "openvino", "openvino-int8"}
    assert forward["onnxruntime"]["extra"]["agreement"]["rel_l2"] < 1e-5
    assert forward["openvino"]["extra"]["agreement"]["rel_l2"] < 1e-5
    assert "argmax_agreement" in forward["openvino-int8"]["extra"]["agreement"]
    assert all(len(r["times_s"]) == 2 for r in forward.values())
    assert forward["fold+cl"]["flops"] == count_flops(tiny_model(), 33, 33)
    crf = {r["name"].split(", ")[-1]: r for r in rows if r["name"].startswith("dense CRF")}
    assert set(crf) == {"ours (C kernel)", "pydensecrf"}  # side by side, both timed twice
    assert all(len(r["times_s"]) == 2 for r in crf.values())
    note = next(line for line in text.splitlines() if "x pydensecrf" in line)
    assert float(note.split("label agreement ")[1].split("%")[0]) >= 99.5


def test_speedup_notes_compare_with_the_given_minimum_only():
    def row(path: str, times: list[float]) -> Result:
        return Result(f"forward {path}", times, extra={"path": path})

    rows = [row("eager-fp32", [1.0, 1.2, 0.9]), row("fold+cl", [0.5, 0.4, 0.6]), row("bf16", [0.2, 0.2, 0.2])]
    checks = {"fold+cl": {"within_tolerance": True}, "bf16": {"within_tolerance": False}}
    notes = speedup_notes(rows, checks, 1)
    # Medians 1.0 / 0.5 = 2x; per-repeat ratios 1.0/0.5, 1.2/0.4, 0.9/0.6 = 2, 3, 1.5.
    assert notes[0] == "b1 fold+cl: 2.00x eager fp32 (per-repeat 1.50..3.00)"
    assert notes[1] == "b1 bf16: 5.00x eager fp32 (per-repeat 4.50..6.00)"
    assert notes[2] == "b1 fastest accurate path: fold+cl at 2.00x"  # bf16 is faster but outside its tolerance
    assert speedup_notes(rows, checks, 1, min_speedup=2.5)[2].endswith("fold+cl at 2.00x (below the given 2.5x)")
    assert speedup_notes(rows, checks, 1, min_speedup=2)[2].endswith("(at or above the given 2x)")


def test_benchmark_cli_bad_arguments(capsys):
    assert main(["benchmark", "--sections", "forward,nope"]) == 2
    assert "unknown nope" in capsys.readouterr().err
    assert main(["benchmark", "--min-speedup", "0"]) == 2
    assert "--min-speedup must be positive" in capsys.readouterr().err
