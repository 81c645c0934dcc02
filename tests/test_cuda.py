"""Every CUDA path against its CPU reference (marker ``cuda``; skipped without CUDA).

Not part of the default run (``addopts`` deselects ``cuda``); ``pytest -m cuda`` or
``benchmarks/gpu_check.py`` runs them. Each test calls a check of ``tests/device_checks.py``, whose
CPU side (comparisons, tolerances, references) ``tests/test_device_checks.py`` runs on every
default run. The full ResNet-101 with calibrated BN (``bench.realistic``) is used where the
tolerance matters; the tiny model where only the plumbing is checked.
"""

from __future__ import annotations

import os

# cuBLAS reads this when it first starts; it makes its matmuls deterministic (resume test).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import copy  # noqa: E402

import device_checks as dc  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import tiny_model  # noqa: E402

from deeplab_resnet import save_weights  # noqa: E402
from deeplab_resnet.bench.realistic import image_batch, realistic_model  # noqa: E402
from deeplab_resnet.inference.optimize import FastInference, default_options, parse_options  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CUDA = "cuda"
MEAN_BGR = (104.008, 116.669, 122.675)


def record(record_property, stats: dict) -> None:
    """The measured numbers into the JUnit XML (benchmarks/gpu_check.py puts them in its summary)."""
    for key, value in stats.items():
        record_property(key, f"{value:.6g}" if isinstance(value, float) else str(value))


@pytest.fixture(scope="module")
def voc():
    from conftest import shared_path

    return shared_path("data", "voc_fixture")


@pytest.fixture(scope="module")
def models(voc):
    """The calibrated ResNet-101 in both conventions, with a batch of two real photos at 321x321
    and its float64 CPU logits."""
    paths = [str(p) for p in dc.fixture_images(voc, 8)]
    calibration = [image_batch(paths, 257, 4, MEAN_BGR, offset=4)]
    out = {}
    for convention in ("caffe", "tf"):
        model = realistic_model(convention=convention, calibration=calibration)
        x = image_batch(paths, 321, 2, model.mean_bgr)
        out[convention] = (model, x, dc.float64_logits(model, x))
    return out


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_forward_fp32_tf32_off(models, convention, record_property):
    model, x, ref = models[convention]
    stats = dc.check_fast_path(model, x, ref, CUDA, "eager")
    record(record_property, stats)


@pytest.mark.parametrize("convention", ["caffe", "tf"])
def test_forward_fp32_tf32_on(models, convention, record_property):
    model, x, ref = models[convention]
    stats = dc.check_forward_tf32(model, x, ref, CUDA)
    record(record_property, stats)


@pytest.mark.parametrize("spec", dc.fast_option_specs(CUDA))
def test_fast_path(models, spec, record_property):
    model, x, ref = models["caffe"]
    stats = dc.check_fast_path(model, x, ref, CUDA, spec)
    record(record_property, stats)


def test_documented_cuda_default_is_what_default_means(models, record_property):
    assert parse_options("default", CUDA) == default_options(CUDA)
    model, x, ref = models["tf"]
    stats = dc.check_fast_path(model, x, ref, CUDA, "default")
    record(record_property, stats)


@pytest.mark.slow  # inductor compiles for a minute or more
def test_compile_path(models, record_property):
    model, x, ref = models["caffe"]
    stats = dc.check_fast_path(model, x, ref, CUDA, "fold+cl+bf16+compile")
    record(record_property, stats)


def test_cuda_graph_replay_equals_eager(models, record_property):
    model, x, _ = models["caffe"]
    stats = dc.check_graph_replay(model, [x[:1], x[1:], x[:1]], CUDA)
    record(record_property, stats)


@pytest.mark.parametrize("kw", [{}, {"scales": (1.0, 0.75, 0.5)}, {"flip": True}, {"pad_size": "auto"}])
def test_segmenter(models, voc, kw, record_property):
    stats = dc.check_segmenter(models["caffe"][0], dc.fixture_images(voc, 1, offset=9), CUDA, **kw)
    record(record_property, stats)


def test_segment_cli(models, voc, tmp_path, record_property):
    save_weights(models["caffe"][0], tmp_path / "w.safetensors", source="test")
    stats = dc.check_segment_cli(tmp_path / "w.safetensors", dc.fixture_images(voc, 2), CUDA, tmp_path / "out")
    record(record_property, stats)


def test_evaluate_cli_batch_8(models, voc, tmp_path, record_property):
    save_weights(models["caffe"][0], tmp_path / "w.safetensors", source="test")
    stats = dc.check_evaluate_cli(tmp_path / "w.safetensors", voc, CUDA, tmp_path / "ev", batch_size=8)
    record(record_property, stats)


@pytest.mark.parametrize("amp", [False, True])
def test_train_step(amp, record_property):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 65, 65, generator=g) * 50, torch.randint(0, 21, (2, 65, 65), generator=g)
    stats = dc.check_train_step(tiny_model(), x, y, CUDA, amp=amp)
    record(record_property, stats)


@pytest.mark.parametrize("amp", [False, True])
def test_resume_bit_exact(voc, tmp_path, amp, record_property):
    stats = dc.check_resume_bit_exact(voc, tmp_path / "run", CUDA, amp=amp)
    record(record_property, stats)


def test_ddp_nccl_world_one_through_torchrun(tmp_path, record_property):
    stats = dc.check_ddp_step(CUDA, tmp_path)
    record(record_property, stats)
    assert stats["world"] == 1 and stats["backend"] == "nccl"


def test_crf_torch_ops_on_cuda_against_c_kernel(voc, record_property):
    stats = dc.check_crf(voc, CUDA, count=2, size=(252, 333))
    record(record_property, stats)  # the label agreement and the largest |dQ| go to the summary


def test_memory_released_after_segmenter_and_fast_paths(models, voc, record_property):
    model = models["caffe"][0]
    image = dc.fixture_images(voc, 1)[0]

    def work():
        from deeplab_resnet.inference.segmenter import Segmenter

        Segmenter(copy.deepcopy(model), device=CUDA, flip=True)(image)
        for spec in ("fold+cl+bf16+graphs", "default"):
            FastInference(model, parse_options(spec, CUDA), CUDA).logits(models["caffe"][1])

    stats = dc.check_memory_released(CUDA, work)
    record(record_property, stats)


def test_memory_released_after_a_training_step(record_property):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 65, 65, generator=g) * 50, torch.randint(0, 21, (2, 65, 65), generator=g)
    stats = dc.check_memory_released(CUDA, lambda: dc.one_step(tiny_model().to(CUDA), x, y, amp=True))
    record(record_property, stats)


def test_memory_released_after_the_crf(voc, record_property):
    from deeplab_resnet.crf import DEFAULT_PRESET, PRESETS, torch_meanfield

    images, probs = dc.crf_inputs(voc, 2, (252, 333))
    images, probs = images.to(CUDA), probs.to(CUDA)
    stats = dc.check_memory_released(CUDA, lambda: torch_meanfield.refine_batch(images, probs, PRESETS[DEFAULT_PRESET]))
    record(record_property, stats)


def test_memory_released_after_segment_command(voc, tmp_path, record_property):
    from deeplab_resnet.cli import main

    save_weights(tiny_model(), tmp_path / "w.safetensors", source="test")
    image = dc.fixture_images(voc, 1)[0]
    runs = []

    def work():  # a fresh output folder each time: the command refuses to overwrite its outputs
        out = tmp_path / f"o{len(runs)}"
        runs.append(out)
        assert main(["segment", str(image), "--weights", str(tmp_path / "w.safetensors"), "-o", str(out),
                     "--device", CUDA]) == 0  # fmt: skip

    stats = dc.check_memory_released(CUDA, work)
    record(record_property, stats)
    assert all((out / f"{image.stem}.png").exists() for out in runs) and len(runs) == 2
