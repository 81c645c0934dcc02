"""DDP through torchrun on CPU (gloo, 2 processes) follows the single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deeplab_resnet.weights import read_weights

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def train_args(data: Path, weights: Path, run_dir: Path) -> list[str]:
    return [
        "-m", "deeplab_resnet", "train", "--data-dir", str(data), "--data-list", str(data / "list_train.txt"),
        "--restore-from", str(weights), "--input-size", "41,41", "--batch-size", "4", "--num-steps", "3",
        "--learning-rate", "1e-3", "--random-scale", "--random-mirror", "--msc", "--num-workers", "0",
        "--device", "cpu", "--snapshot-dir", str(run_dir), "--no-progress", "--no-tensorboard",
    ]  # fmt: skip


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path, voc_fixture, tiny_weights):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = subprocess.run(
        [sys.executable, *train_args(voc_fixture, tiny_weights, single)], env=ENV, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *train_args(voc_fixture, tiny_weights, ddp)],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr
    assert "2 process(es)" in two.stderr
    a, _ = read_weights(single / "model.safetensors")
    b, _ = read_weights(ddp / "model.safetensors")
    initial, _ = read_weights(tiny_weights)
    moved = max(float((a[k] - initial[k]).abs().max()) for k in a)
    assert moved > 1e-4  # the weights did change
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
