"""The device checks of ``tests/device_checks.py`` on the CPU: float32 against float64.

The same functions run on CUDA in ``tests/test_cuda.py`` (marker ``cuda``); here they run in the
default suite so that the comparisons, tolerances and reference computations are exercised on
every run, on the tiny model (the full network is for the GPU).
"""

from __future__ import annotations

import subprocess
import sys

import device_checks as dc
import numpy as np
import pytest
import torch
from conftest import REPO, tiny_model

from deeplab_resnet import save_weights
from deeplab_resnet.crf import kernel_c


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 3, 49, 57, generator=g) * 40


@pytest.mark.parametrize("convention", ["caffe", "tf"])
@pytest.mark.parametrize("spec", dc.fast_option_specs("cpu"))
def test_fast_paths_against_float64(batch, convention, spec):
    model = tiny_model(convention)
    dc.check_fast_path(model, batch, dc.float64_logits(model, batch), "cpu", spec)


def test_float32_default_against_float64(batch):
    model = tiny_model()
    stats = dc.check_forward_tf32(model, batch, dc.float64_logits(model, batch), "cpu")
    assert stats["rel_l2"] <= dc.FP32_REL_L2  # no TF32 on a CPU: plain float32 rounding


def test_fast_path_check_catches_a_wrong_path(batch):
    model = tiny_model()
    wrong = dc.float64_logits(tiny_model(seed=5), batch)
    with pytest.raises(AssertionError):
        dc.check_fast_path(model, batch, wrong, "cpu", "fold")


@pytest.mark.parametrize("kw", [{}, {"scales": (1.0, 0.75, 0.5)}, {"flip": True}, {"pad_size": 161}])
def test_segmenter_against_float64(voc_fixture, kw):
    stats = dc.check_segmenter(tiny_model(), dc.fixture_crops(voc_fixture, 2, (120, 160)), "cpu", **kw)
    assert stats["min_label_agreement"] >= dc.LABEL_AGREEMENT


def test_segment_cli_against_float64(tmp_path, voc_fixture):
    save_weights(tiny_model(), tmp_path / "w.safetensors", source="test")
    dc.check_segment_cli(tmp_path / "w.safetensors", dc.fixture_images(voc_fixture, 1), "cpu", tmp_path / "out")


def test_evaluate_cli_batched_against_one_at_a_time(tmp_path, voc_fixture):
    save_weights(tiny_model(), tmp_path / "w.safetensors", source="test")
    stats = dc.check_evaluate_cli(tmp_path / "w.safetensors", voc_fixture, "cpu", tmp_path / "ev", limit=4)
    assert stats["matrix_mass_shared"] >= dc.EVAL_MATRIX_MASS


@pytest.mark.parametrize("amp", [False, True])
def test_train_step_against_float64(amp):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 41, 41, generator=g) * 50, torch.randint(0, 21, (2, 41, 41), generator=g)
    dc.check_train_step(tiny_model(), x, y, "cpu", amp=amp)


def test_resume_bit_exact(tmp_path, voc_fixture):
    dc.check_resume_bit_exact(voc_fixture, tmp_path / "run", "cpu")


@pytest.mark.slow  # torchrun and a fresh interpreter: ~30 s on a loaded 2-core machine
def test_ddp_world_one_through_torchrun_gloo(tmp_path):
    stats = dc.check_ddp_step("cpu", tmp_path)
    assert stats["world"] == 1 and stats["backend"] == "gloo"


@pytest.mark.skipif(not kernel_c.available(), reason="no C compiler for the CRF's C kernel")
def test_crf_torch_ops_against_c_kernel(voc_fixture):
    stats = dc.check_crf(voc_fixture, "cpu", count=2, size=(96, 120))
    assert stats["reference"] == "C kernel" and stats["max_abs_dq"] < 0.5


# ---------------------------------------------------------------- the helpers themselves


def test_matrix_mass_and_mean_iou_by_hand():
    a = np.array([[5, 1], [0, 4]])
    b = np.array([[4, 2], [0, 4]])  # one pixel of class 0 moved to a wrong cell
    assert dc.matrix_mass_shared(a, a) == 1.0
    assert dc.matrix_mass_shared(a, b) == pytest.approx(9 / 10)
    # IoU class 0: 5 / (6 + 5 - 5) = 5/6; class 1: 4 / (4 + 5 - 4) = 4/5
    assert dc.mean_iou(a) == pytest.approx((5 / 6 + 4 / 5) / 2)


def test_rel_l2_cosine_and_label_agreement_by_hand():
    ref = torch.tensor([3.0, 4.0])
    assert dc.rel_l2(ref, torch.tensor([3.0, 4.5])) == pytest.approx(0.1)
    assert dc.cosine(ref, -ref) == pytest.approx(-1.0)
    assert dc.label_agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def test_tf32_context_restores_the_flags():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with dc.tf32(not before[0]):
        assert torch.backends.cudnn.allow_tf32 is (not before[0])
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_cuda_tests_collect_under_the_marker_and_not_by_default():
    """``pytest -m cuda`` selects the CUDA tests (skipped without CUDA); the default run does not."""

    def pytest_run(*args):
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-p", "no:cacheprovider", *args],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return out.returncode, out.stdout

    rc, default = pytest_run("--collect-only")
    assert "test_cuda.py::test_" not in default and "deselected" in default, default[-2000:]
    if torch.cuda.is_available():
        rc, selected = pytest_run("--collect-only", "-m", "cuda")
        assert rc == 0 and "test_cuda.py::test_" in selected and "deselected" not in selected, selected[-2000:]
    else:  # selected, collected and every one skipped
        rc, run = pytest_run("-m", "cuda", "-rs")
        skipped = int(run.split(" skipped")[0].split()[-1]) if " skipped" in run else 0
        assert rc == 0 and skipped >= 20 and "passed" not in run and "needs CUDA" in run, run[-2000:]
